#pragma once
// Batches of one rank's share of the data, read ahead on a background thread. A share of
// up to 1 GiB as stored is read whole when the loader starts, and batches are gathered from
// memory; a larger one is read batch by batch.
//
// Epoch e visits every index of the share once, in an order shuffled by a stream derived
// from (seed, rank, e); a batch that reaches the end of an epoch continues into the next.
// The position is a single count of examples consumed, so a run resumes exactly by
// starting the loader at the count a checkpoint recorded. Random flips are drawn from a
// stream keyed by the batch's position, so they too resume exactly.
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include <torch/torch.h>

#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"

namespace difftrain {

struct Batch {
  Batch(torch::Tensor x = {}, torch::Tensor y = {}) : x(std::move(x)), y(std::move(y)) {}
  torch::Tensor x;  // float32 [batch, ...]
  torch::Tensor y;  // int64 [batch] labels, when the loader reads them; else undefined
};

struct LoaderExtras {
  std::optional<ShardedDataset> labels;  // read beside the examples, same rows
  bool hflip = false;                    // flip each image [C, H, W] left-right with probability 1/2
  // A share up to this size as stored (uint8 images stay uint8) is read once and its
  // batches gathered in memory: reading a batch's scattered rows from HDF5 costs a call per
  // row, which on small examples is most of the loader's time. A larger share is read
  // batch by batch. Both hand out the same batches.
  int64_t keep_in_memory_bytes = int64_t{1} << 30;
};

class BatchLoader {
 public:
  BatchLoader(ShardedDataset dataset, RankShare share, int64_t batch_size, uint64_t seed, int rank,
              int64_t start_position = 0, LoaderExtras extras = {}, int prefetch = 2);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch of batch_size examples. Waits if the reader is behind; rethrows the
  // reader's error.
  Batch next();

  // Examples consumed through next() so far (including start_position).
  int64_t position() const { return position_; }
  int64_t bytes_read() const;  // by the reader thread, so far

  // The global indices of the batch that starts at `position` (pure: no I/O).
  std::vector<int64_t> batch_indices(int64_t position) const;

 private:
  ShardedDataset dataset_;
  LoaderExtras extras_;
  RankShare share_;
  int64_t batch_size_;
  uint64_t seed_;
  int rank_;
  int64_t position_;
  std::size_t prefetch_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  int64_t bytes_read_ = 0;
  std::thread reader_;

  struct EpochCache {
    int64_t epoch = -1;
    std::vector<int64_t> order;
  };
  void read_ahead(int64_t position);
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  std::vector<int64_t> indices_at(int64_t position, EpochCache& cache) const;
};

}  // namespace difftrain
