#pragma once
// A dataset split over one or more HDF5 files ("shards"), seen as one index space
// [0, size()): shard 0's rows first, then shard 1's, and so on. Only metadata is read at
// open; rows are read on demand, a batch at a time.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/data/hdf5_file.h"

namespace difftrain {

enum class Contents { examples, labels };

struct Shard {
  std::string path;
  int64_t rows = 0;
  int64_t first = 0;  // global index of its row 0
};

class ShardedDataset {
 public:
  // `spec`: a directory (its *.h5 / *.hdf5 files, sorted by name), a glob, a single file,
  // or several of these separated by commas. Every shard must hold `dataset` with the same
  // per-example shape and dtype: float32, or uint8 (images, read scaled to [-1, 1]).
  static ShardedDataset open(const std::string& spec, const std::string& dataset = "x");

  // The labels stored beside these examples: dataset `name` in the same files, or nothing
  // when any file lacks it. Each file's label rows must number its example rows, or the
  // labels would pair with the wrong examples; an error names the file and both counts.
  // Labels have shape [n] and any integer type, or a float type holding only whole
  // numbers; they read as int64. Every reader of labels opens them through here.
  std::optional<ShardedDataset> labels(const std::string& name = "y") const;

  int64_t size() const { return size_; }
  const std::vector<int64_t>& sample_shape() const { return sample_shape_; }
  const std::vector<Shard>& shards() const { return shards_; }
  torch::ScalarType stored_dtype() const { return dtype_; }  // as read_stored returns rows
  int64_t bytes_per_sample() const;  // as stored

  // Rows `indices` (global, any order, repeats allowed) as float32 [n, ...]; uint8 data is
  // scaled to [-1, 1]; labels are int64. Non-finite values are an error naming the file
  // and row.
  torch::Tensor read(const std::vector<int64_t>& indices);

  // Rows [first, first + count) exactly as stored (no scaling).
  torch::Tensor read_stored(int64_t first, int64_t count);
  // Stored rows as read() returns them: uint8 scaled to [-1, 1] in float32, labels int64.
  torch::Tensor as_read(torch::Tensor stored) const;

  // Bytes read from the files so far (payload, as stored).
  int64_t bytes_read() const { return bytes_read_; }

 private:
  std::string dataset_;
  std::vector<Shard> shards_;
  std::vector<h5::Handle> files_;  // opened lazily: a rank touches only the shards it reads
  std::vector<int64_t> sample_shape_;
  torch::ScalarType dtype_ = torch::kFloat32;
  std::string stored_type_;  // the files' own type, for messages
  int64_t size_ = 0;
  int64_t bytes_read_ = 0;

  static ShardedDataset open_files(const std::vector<std::string>& paths, const std::string& dataset,
                                   const std::string& spec, Contents contents);
  hid_t file(std::size_t shard);
  torch::Tensor gather(const std::vector<int64_t>& indices);
};

// The files a spec names, in order; an error if it names none.
std::vector<std::string> expand_shard_spec(const std::string& spec);

}  // namespace difftrain
