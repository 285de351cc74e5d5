#pragma once
// `difftrain prepare`: writes sharded HDF5 datasets.
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/data/hdf5_file.h"

namespace difftrain {

// The datasets of examples [begin, end), for one shard.
using ShardRows = std::function<h5::Datasets(int64_t begin, int64_t end)>;

// Splits `examples` rows into `shards` files DIR/shard-00000.h5, ... of near-equal sizes,
// asking `rows` for one shard's datasets at a time, so only one shard is in memory. Every
// file also gets `class_names` (when given; see class_names.h). The files are written
// into a scratch directory and replace those of `out_dir` only when all are whole.
// Returns the paths written.
std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, int64_t examples,
                                      const ShardRows& rows, const std::vector<std::string>& class_names = {});

// The same for tensors in memory: `x` (and optional labels `y`) as dataset `name` (and `y`).
std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, const torch::Tensor& x,
                                      const torch::Tensor& y = {}, const std::string& name = "x",
                                      const std::vector<std::string>& class_names = {});

// The reference's 100 swissroll points, in `shards` files.
std::vector<std::string> prepare_swissroll(const std::string& out_dir, int64_t shards);

// Users' own data: the examples of dataset `name` (and `y` and the class names, if every
// input has them) in `inputs`, in order, rewritten into `shards` files. Streams the input
// a block at a time.
std::vector<std::string> prepare_reshard(const std::vector<std::string>& inputs, const std::string& out_dir,
                                         int64_t shards, const std::string& name = "x");

}  // namespace difftrain
