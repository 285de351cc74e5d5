#include "difftrain/train/metrics.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

#include "difftrain/error.h"

namespace difftrain {

StepTimes& StepTimes::operator+=(const StepTimes& o) {
  data += o.data, compute += o.compute, sync += o.sync, optim += o.optim;
  return *this;
}

namespace {
// JSON has no NaN or Infinity; a non-finite value is written as null.
std::string num(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : "null"; }
}  // namespace

std::string json_record(const LogRecord& r) {
  return fmt::format(
      "{{\"step\": {}, \"loss\": {}, \"grad_norm\": {}, \"lr\": {}, \"steps_per_s\": {}, \"skipped_steps\": {}, "
      "\"time_s\": {{\"data\": {}, \"compute\": {}, \"sync\": {}, \"optim\": {}}}}}",
      r.step, num(r.loss), num(r.grad_norm), num(r.lr), num(r.steps_per_s), r.skipped, num(r.times.data),
      num(r.times.compute), num(r.times.sync), num(r.times.optim));
}

MetricsLog::MetricsLog(const std::string& run_dir) {
  const std::string path = run_dir + "/metrics.jsonl";
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) fail("{}: cannot open for writing", path);
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const LogRecord& record) {
  fmt::print(file_, "{}\n", json_record(record));
  std::fflush(file_);
}

Progress::Progress(std::FILE* out) : out_(out), live_(::isatty(::fileno(out)) == 1) {}

void Progress::update(const LogRecord& r) {
  const double remaining = r.steps_per_s > 0 ? (r.total_steps - r.step) / r.steps_per_s : 0;
  const auto eta = static_cast<int64_t>(remaining);
  const std::string line =
      fmt::format("step {}/{}  loss {:.4f}  {:.1f} steps/s  ETA {}:{:02d}:{:02d}{}", r.step, r.total_steps, r.loss,
                  r.steps_per_s, eta / 3600, eta / 60 % 60, eta % 60,
                  r.skipped ? fmt::format("  skipped {}", r.skipped) : "");
  // On a terminal one line is redrawn in place; in a log file each update is its own line.
  if (live_) fmt::print(out_, "\r\033[K{}", line), dirty_ = true;
  else fmt::print(out_, "{}\n", line);
  std::fflush(out_);
}

void Progress::finish() {
  if (dirty_) fmt::print(out_, "\n"), dirty_ = false;
}

}  // namespace difftrain
