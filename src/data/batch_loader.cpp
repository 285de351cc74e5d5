#include "difftrain/data/batch_loader.h"

#include <numeric>

#include "difftrain/core/random_streams.h"
#include "difftrain/error.h"

namespace difftrain {

BatchLoader::BatchLoader(ShardedDataset dataset, RankShare share, int64_t batch_size, uint64_t seed, int rank,
                         int64_t start_position, LoaderExtras extras, int prefetch)
    : dataset_(std::move(dataset)),
      extras_(std::move(extras)),
      share_(share),
      batch_size_(batch_size),
      seed_(seed),
      rank_(rank),
      position_(start_position),
      prefetch_(static_cast<std::size_t>(std::max(1, prefetch))) {
  if (batch_size < 1) fail("batch loader: batch size must be >= 1, got {}", batch_size);
  if (share.size() < 1) fail("batch loader: rank {} has an empty share of the data", rank);
  if (extras_.hflip && dataset_.sample_shape().size() != 3)
    fail("config: key 'data.hflip': flips images [C, H, W], but examples have shape {}",
         c10::IntArrayRef(dataset_.sample_shape()));
  reader_ = std::thread([this, start_position] { read_ahead(start_position); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  reader_.join();
}

std::vector<int64_t> BatchLoader::epoch_order(int64_t epoch) const {
  const auto shuffled = random_stream(seed_, rank_, Stream::shuffle, static_cast<uint64_t>(epoch)).permutation(share_.size());
  const int64_t* p = shuffled.data_ptr<int64_t>();
  std::vector<int64_t> order(p, p + shuffled.numel());
  for (auto& i : order) i += share_.begin;
  return order;
}

std::vector<int64_t> BatchLoader::indices_at(int64_t position, EpochCache& cache) const {
  std::vector<int64_t> indices;
  indices.reserve(batch_size_);
  const int64_t n = share_.size();
  for (int64_t p = position; p < position + batch_size_; ++p) {
    if (p / n != cache.epoch) cache.epoch = p / n, cache.order = epoch_order(cache.epoch);
    indices.push_back(cache.order[p % n]);
  }
  return indices;
}

std::vector<int64_t> BatchLoader::batch_indices(int64_t position) const {
  EpochCache cache;
  return indices_at(position, cache);
}

void BatchLoader::read_ahead(int64_t position) {
  EpochCache cache;
  try {
    torch::Tensor kept_x, kept_y;  // the share as stored, when it is kept in memory
    if (share_.size() * dataset_.bytes_per_sample() <= extras_.keep_in_memory_bytes) {
      kept_x = dataset_.read_stored(share_.begin, share_.size());
      if (extras_.labels) kept_y = extras_.labels->read_stored(share_.begin, share_.size());
      std::lock_guard<std::mutex> lock(mutex_);
      bytes_read_ = dataset_.bytes_read();
    }
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || ready_.size() < prefetch_; });
        if (stop_) return;
      }
      const auto indices = indices_at(position, cache);
      Batch batch;
      if (kept_x.defined()) {
        // The same values read() gives: the same rows as stored, converted the same way.
        const auto rows = torch::tensor(indices, torch::kInt64) - share_.begin;
        batch.x = dataset_.as_read(kept_x.index_select(0, rows));
        if (kept_y.defined()) batch.y = extras_.labels->as_read(kept_y.index_select(0, rows));
      } else {
        batch.x = dataset_.read(indices);
        if (extras_.labels) batch.y = extras_.labels->read(indices);
      }
      if (extras_.hflip) {
        const auto flip = random_stream(seed_, rank_, Stream::hflip, static_cast<uint64_t>(position)).uniform({batch_size_}) < 0.5;
        batch.x = torch::where(flip.view({-1, 1, 1, 1}), batch.x.flip({3}), batch.x);
      }
      position += batch_size_;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.push_back(std::move(batch));
        bytes_read_ = dataset_.bytes_read();
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

Batch BatchLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty()) std::rethrow_exception(error_);
  auto batch = std::move(ready_.front());
  ready_.pop_front();
  position_ += batch_size_;
  lock.unlock();
  cv_.notify_all();
  return batch;
}

int64_t BatchLoader::bytes_read() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_read_;
}

}  // namespace difftrain
