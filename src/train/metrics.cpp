#include "difftrain/train/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"

namespace difftrain {

using nlohmann::ordered_json;

StepTimes& StepTimes::operator+=(const StepTimes& o) {
  data += o.data, compute += o.compute, sync += o.sync, optim += o.optim, ema += o.ema, log += o.log;
  return *this;
}

StepTimes StepTimes::operator/(double n) const { return {data / n, compute / n, sync / n, optim / n, ema / n, log / n}; }

namespace {

// The library's compact dump has no spaces; the log keeps the ", " and ": " of Python's
// json.dumps, which people grep for. Scalars (numbers, null for NaN, escaped strings) are
// the library's own.
std::string dump_spaced(const ordered_json& j) {
  std::string out;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      out += (out.empty() ? "" : ", ") + ordered_json(it.key()).dump() + ": " + dump_spaced(it.value());
    return "{" + out + "}";
  }
  if (j.is_array()) {
    for (const auto& item : j) out += (out.empty() ? "" : ", ") + dump_spaced(item);
    return "[" + out + "]";
  }
  return j.dump();
}

ordered_json to_json(const LogRecord& r) {
  ordered_json j{{"step", r.step},
          {"loss", r.loss},
          {"grad_norm", r.grad_norm},
          {"lr", r.lr},
          {"steps_per_s", r.steps_per_s},
          {"skipped_steps", r.skipped},
          {"time_s", {{"data", r.times.data}, {"compute", r.times.compute}, {"sync", r.times.sync}, {"optim", r.times.optim},
                      {"ema", r.times.ema}, {"log", r.times.log}}}};
  if (!r.log_sigma_edges.empty()) {
    ordered_json mean = ordered_json::array(), count = ordered_json::array();
    for (std::size_t i = 0; i < r.loss_sums.size(); ++i) {
      const double n = r.loss_counts.at(i);
      mean.push_back(n > 0 ? ordered_json(r.loss_sums[i] / n) : ordered_json(nullptr));
      count.push_back(static_cast<int64_t>(std::llround(n)));
    }
    j["loss_by_sigma"] = {{"log_sigma_edges", r.log_sigma_edges}, {"loss", mean}, {"count", count}};
  }
  return j;
}

}  // namespace

std::string json_record(const LogRecord& record) { return dump_spaced(to_json(record)); }

MetricsLog::MetricsLog(const std::string& run_dir) : path_(run_dir + "/metrics.jsonl") {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open for writing: {}", path_, std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(const LogRecord& record) { write(to_json(record)); }

void MetricsLog::write(const ordered_json& record) {
  const std::string line = dump_spaced(record) + "\n";
  const std::string what = record.contains("step") ? fmt::format("the record of step {}", record["step"].dump()) : "a record";
  const off_t before = ::lseek(fd_, 0, SEEK_END);
  if (before < 0) fail("{}: cannot append {}: {}", path_, what, std::strerror(errno));
  // One write() per line, so the line is whole or, when the disk fills mid-line, cut off.
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int reason = n < 0 ? errno : ENOSPC;
      const bool cut = ::ftruncate(fd_, before) == 0;
      fail("{}: cannot append {}: {}{}", path_, what, std::strerror(reason),
           cut ? "" : " (and a partial line could not be removed)");
    }
    done += static_cast<std::size_t>(n);
  }
}

void keep_metrics_through(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read: {}", path, std::strerror(errno));
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::string kept;
  int64_t line_number = 0;
  for (std::size_t start = 0; start < text.size();) {
    const auto end = text.find('\n', start);
    const bool last = end == std::string::npos || end + 1 == text.size();
    const std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    ++line_number;
    if (line.empty()) continue;
    const auto record = ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number_integer()) {
      if (last) break;  // the end of an append cut short by a crash
      fail("{}: line {} is not a JSON record with an integer \"step\": {:.60}", path, line_number, line);
    }
    if (record["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  write_file_atomically(path, kept);
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
