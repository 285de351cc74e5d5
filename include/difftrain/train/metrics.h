#pragma once
// What rank 0 tells the user: a progress line (live on a terminal, periodic lines in a
// log) and RUN/metrics.jsonl, one JSON object per logged step.
#include <chrono>
#include <cstdio>
#include <string>

namespace difftrain {

// Seconds per step spent in each phase, averaged over a logging window.
struct StepTimes {
  double data = 0, compute = 0, sync = 0, optim = 0;
  StepTimes& operator+=(const StepTimes& o);
};

struct LogRecord {
  int64_t step = 0, total_steps = 0;
  double loss = 0;       // mean over the window and over ranks
  double grad_norm = 0;  // at the last step of the window
  double lr = 0;
  double steps_per_s = 0;
  int64_t skipped = 0;  // non-finite steps skipped so far
  StepTimes times;      // per step, averaged over the window
};

class MetricsLog {
 public:
  // Appends to RUN/metrics.jsonl (a resumed run continues the file).
  explicit MetricsLog(const std::string& run_dir);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const LogRecord& record);

 private:
  std::FILE* file_ = nullptr;
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

std::string json_record(const LogRecord& record);

}  // namespace difftrain
