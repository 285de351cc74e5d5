#pragma once
// Bounds every blocking collective: a thread checks that none has been waiting longer than
// the timeout, and otherwise prints one line naming the rank and the collective and ends
// the process (status 1). MPI has no portable time-out of its own; without this a rank
// whose peer died could wait forever.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace difftrain {

class CollectiveWatchdog {
 public:
  CollectiveWatchdog(int rank, double timeout_s);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // RAII mark around one collective call; `what` must be a string literal. A null
  // watchdog (a world of one: nothing to wait for) marks nothing.
  class Scope {
   public:
    Scope(CollectiveWatchdog* w, const char* what);
    ~Scope();

   private:
    CollectiveWatchdog* w_;
  };

 private:
  int rank_;
  std::chrono::nanoseconds timeout_;
  std::atomic<int64_t> started_ns_{0};  // 0: no collective in progress
  std::atomic<const char*> what_{nullptr};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  void watch();
};

}  // namespace difftrain
