#pragma once
// What rank 0 tells the user: a progress line (live on a terminal, periodic lines in a
// log) and RUN/metrics.jsonl, one JSON object per logged step.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace difftrain {

// Seconds per step spent in each phase, averaged over a logging window: waiting for the
// batch, forward and backward, the gradient all-reduce left after backward, the optimizer
// (with the gradient norm), the EMA, and logging (a record's cost shows in the next one).
struct StepTimes {
  double data = 0, compute = 0, sync = 0, optim = 0, ema = 0, log = 0;
  StepTimes& operator+=(const StepTimes& o);
  StepTimes operator/(double n) const;
};

struct LogRecord {
  int64_t step = 0, total_steps = 0;
  double loss = 0;       // mean over the window and over ranks
  double grad_norm = 0;  // at the last step of the window
  double lr = 0;
  double steps_per_s = 0;
  int64_t skipped = 0;  // non-finite steps skipped so far
  StepTimes times;      // per step, averaged over the window
  // The window's loss by noise level: bin edges in log sigma (bins + 1 values) and per bin
  // the summed loss and the count of examples, over every rank. Empty: not recorded.
  std::vector<double> log_sigma_edges, loss_sums, loss_counts;
};

class MetricsLog {
 public:
  // Appends to RUN/metrics.jsonl (a resumed run continues the file).
  explicit MetricsLog(const std::string& run_dir);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  // Appends one line. A failed append (a full disk) is cut back off, so the file never ends
  // in half a line, and throws an Error naming the file.
  void write(const LogRecord& record);
  void write(const nlohmann::ordered_json& record);  // any record; it should carry a "step"

 private:
  std::string path_;
  int fd_ = -1;
};

class Progress {
 public:
  explicit Progress(std::FILE* out = stderr);
  void update(const LogRecord& record);
  void finish();

 private:
  std::FILE* out_;
  bool live_;
  bool dirty_ = false;
};

// One line of JSON, keys in the order above, laid out as Python's json.dumps does
// ({"step": 100, "loss": 0.25, ...}); a non-finite value is null (JSON has no NaN).
std::string json_record(const LogRecord& record);

// Resuming at `step` (from a checkpoint that may be older than the log): keeps the records
// of the metrics file at `path` whose "step" is <= `step`, whatever their other keys, and
// drops a torn last line (a crash mid-append); the file is rewritten atomically. Any other
// line that is not a JSON object with an integer "step" is an error naming file and line.
void keep_metrics_through(const std::string& path, int64_t step);

}  // namespace difftrain
