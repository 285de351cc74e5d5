#pragma once
// Batches of one rank's share of the data, read ahead on a background thread.
//
// Epoch e visits every index of the share once, in an order shuffled by a stream derived
// from (seed, rank, e); a batch that reaches the end of an epoch continues into the next.
// The position is a single count of examples consumed, so a run resumes exactly by
// starting the loader at the count a checkpoint recorded.
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include <torch/torch.h>

#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"

namespace difftrain {

class BatchLoader {
 public:
  BatchLoader(ShardedDataset dataset, RankShare share, int64_t batch_size, uint64_t seed, int rank,
              int64_t start_position = 0, int prefetch = 2);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next [batch_size, ...] float32 batch. Waits if the reader is behind; rethrows the
  // reader's error.
  torch::Tensor next();

  // Examples consumed through next() so far (including start_position).
  int64_t position() const { return position_; }
  int64_t bytes_read() const;  // by the reader thread, so far

  // The global indices of the batch that starts at `position` (pure: no I/O).
  std::vector<int64_t> batch_indices(int64_t position) const;

 private:
  ShardedDataset dataset_;
  RankShare share_;
  int64_t batch_size_;
  uint64_t seed_;
  int rank_;
  int64_t position_;
  std::size_t prefetch_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<torch::Tensor> ready_;
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
