#include "difftrain/train/log_window.h"

#include <cmath>

#include "difftrain/train/optimizer.h"

namespace difftrain {

LogWindow::LogWindow(const LossBySigma& empty, int64_t after) : last_logged_(after), bins_(empty) {}

void LogWindow::add(const StepStats& stats) {
  times_ += stats.times;
  if (!stats.skipped) loss_ += stats.loss, ++steps_, bins_.add(stats.loss_by_sigma);
}

LogRecord LogWindow::close(int64_t step, const TrainConfig& t, const StepStats& last, int64_t skipped) {
  const auto in_window = static_cast<double>(step - last_logged_);
  LogRecord record;
  record.step = step, record.total_steps = t.steps;
  record.loss = steps_ ? loss_ / steps_ : NAN;
  record.grad_norm = last.grad_norm;
  record.lr = learning_rate(t, step);
  record.steps_per_s = in_window / std::chrono::duration<double>(Clock::now() - start_).count();
  record.skipped = skipped;
  record.times = times_ / in_window;
  record.log_sigma_edges = bins_.log_sigma_edges();
  record.loss_sums = bins_.sums();
  record.loss_counts = bins_.counts();
  last_logged_ = step;
  loss_ = 0, steps_ = 0, times_ = StepTimes{}, start_ = Clock::now();
  bins_.clear();
  return record;
}

}  // namespace difftrain
