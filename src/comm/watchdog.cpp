#include "difftrain/comm/watchdog.h"

#include <cstdio>
#include <cstdlib>

namespace difftrain {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

CollectiveWatchdog::CollectiveWatchdog(int rank, double timeout_s)
    : rank_(rank), timeout_(static_cast<int64_t>(timeout_s * 1e9)), thread_([this] { watch(); }) {}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

CollectiveWatchdog::Scope::Scope(CollectiveWatchdog* w, const char* what) : w_(w) {
  if (!w_) return;
  w_->what_.store(what);
  w_->started_ns_.store(now_ns());
}

CollectiveWatchdog::Scope::~Scope() {
  if (w_) w_->started_ns_.store(0);
}

void CollectiveWatchdog::watch() {
  const auto tick = std::min<std::chrono::nanoseconds>(timeout_ / 4, std::chrono::seconds(1));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!cv_.wait_for(lock, tick, [this] { return stop_; })) {
    const int64_t started = started_ns_.load();
    if (started != 0 && now_ns() - started > timeout_.count()) {
      std::fprintf(stderr,
                   "difftrain: error: rank %d: %s did not complete within dist.timeout_s=%g s (a peer rank died or "
                   "hangs); ending the job\n",
                   rank_, what_.load(), std::chrono::duration<double>(timeout_).count());
      std::fflush(stderr);
      std::_Exit(1);
    }
  }
}

}  // namespace difftrain
