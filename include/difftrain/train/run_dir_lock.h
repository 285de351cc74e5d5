#pragma once
// One training at a time per run directory. Two runs in one run_dir would resume each
// other's checkpoints and remove each other's temporaries, so rank 0 holds an advisory
// lock on RUN/.lock for as long as it trains; a second run is refused at once with the
// holder's host and pid. The kernel drops the lock when the holder dies (kill -9, node
// preemption), so a stale lock never blocks a resume; the file itself stays.
#include <string>

namespace difftrain {

class RunDirLock {
 public:
  // Creates the run directory if needed and takes the lock; throws Error naming the run
  // directory and the holder when another process has it.
  explicit RunDirLock(const std::string& run_dir);
  ~RunDirLock();
  // For a set-up that failed before writing anything: releases the lock and, if this lock
  // created the run directory and it holds nothing else, removes it again, so a mistyped
  // command leaves no directory behind.
  void release_and_remove_if_new();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
  std::string run_dir_;
  bool created_dir_ = false;
};

}  // namespace difftrain
