#pragma once
// A logging window's running sums over the steps since the last record, and the record
// (metrics.jsonl's line) that closes it.
#include <chrono>
#include <cstdint>

#include "difftrain/config.h"
#include "difftrain/train/loss_by_sigma.h"
#include "difftrain/train/metrics.h"
#include "difftrain/train/step_stats.h"

namespace difftrain {

class LogWindow {
 public:
  // `empty`: the loss-by-sigma bins, cleared; `after`: the step the window starts after.
  LogWindow(const LossBySigma& empty, int64_t after);
  void add(const StepStats& stats);
  // Per-step averages since the last record; starts the next window.
  LogRecord close(int64_t step, const TrainConfig& t, const StepStats& last, int64_t skipped);
  // Time spent writing the last record: it shows in the next one.
  void add_log_time(double seconds) { times_.log += seconds; }

 private:
  using Clock = std::chrono::steady_clock;
  double loss_ = 0;
  int64_t steps_ = 0, last_logged_;
  StepTimes times_;
  LossBySigma bins_;
  Clock::time_point start_ = Clock::now();
};

}  // namespace difftrain
