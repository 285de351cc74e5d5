#include "difftrain/plot/plot_run.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/plot/line_chart.h"

namespace difftrain {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Rgb = std::array<uint8_t, 3>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A loss value as the trainer writes it: a number, or null for a non-finite one.
double loss_value(const json& v, const std::string& where, const std::string& key) {
  if (v.is_null()) return kNaN;
  if (!v.is_number()) fail("{}: \"{}\" is {}, expected a number or null", where, key, abbreviate(v.dump()));
  return v.get<double>();  // the parser refuses numbers beyond double's range
}

LossBySigmaBins read_loss_by_sigma(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: \"loss_by_sigma\" is {}, expected an object", where, abbreviate(j.dump()));
  const auto array = [&](const char* key) -> const json& {
    if (!j.contains(key) || !j[key].is_array()) fail("{}: \"loss_by_sigma.{}\" is missing or not an array", where, key);
    return j[key];
  };
  LossBySigmaBins b;
  for (const auto& e : array("log_sigma_edges")) {
    if (!e.is_number() || !std::isfinite(e.get<double>()) || (!b.log_sigma_edges.empty() && e.get<double>() <= b.log_sigma_edges.back()))
      fail("{}: \"loss_by_sigma.log_sigma_edges\" must be finite increasing numbers, got {}", where,
           abbreviate(j["log_sigma_edges"].dump()));
    b.log_sigma_edges.push_back(e.get<double>());
  }
  for (const auto& v : array("loss")) b.loss.push_back(loss_value(v, where, "loss_by_sigma.loss[]"));
  if (b.log_sigma_edges.size() != b.loss.size() + 1 || b.loss.empty())
    fail("{}: \"loss_by_sigma\" has {} edges for {} bins, expected one edge more than bins", where,
         b.log_sigma_edges.size(), b.loss.size());
  return b;
}

std::string run_name(const std::string& run_dir) {
  fs::path p = fs::absolute(run_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// A centred moving average (of log loss on a log axis) over about 1/20 of the run, so the
// trend shows through the window-to-window noise; gaps stay gaps.
std::vector<double> smoothed(const std::vector<double>& y, bool log_axis) {
  const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(y.size()), half = std::max<std::ptrdiff_t>(1, n / 40);
  // Running sums of the usable values and of their number make each window's mean O(1).
  std::vector<double> sum(y.size() + 1, 0.0), count(y.size() + 1, 0.0);
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const bool usable = std::isfinite(y[i]) && (!log_axis || y[i] > 0);
    sum[i + 1] = sum[i] + (usable ? (log_axis ? std::log(y[i]) : y[i]) : 0.0);
    count[i + 1] = count[i] + usable;
  }
  std::vector<double> out(y.size(), kNaN);
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    // Narrower towards the ends, so the window stays centred: a one-sided one would bend
    // the steep start of a run towards its later values.
    const std::ptrdiff_t h = std::min({half, i, n - 1 - i}), a = i - h, b = i + h + 1;
    if (!std::isfinite(y[i]) || count[b] == count[a]) continue;
    const double mean = (sum[b] - sum[a]) / (count[b] - count[a]);
    out[i] = log_axis ? std::exp(mean) : mean;
  }
  return out;
}

bool all_positive(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(), [](double v) { return !std::isfinite(v) || v > 0; });
}

LineChart loss_chart(const std::vector<LossRecord>& records, const std::string& name) {
  LineChart chart;
  chart.title = fmt::format("Training loss: {}", name);
  ChartSeries raw;
  for (const auto& r : records) raw.x.push_back(static_cast<double>(r.step)), raw.y.push_back(r.loss);
  const bool log_y = all_positive(raw.y);
  chart.x = {"step", AxisScale::linear};
  chart.y = {log_y ? "loss (log scale)" : "loss", log_y ? AxisScale::log : AxisScale::linear};
  raw.label = "mean loss per logging window";
  // Few windows are drawn as they are; many get a smoothed line over them.
  if (records.size() < 20) {
    raw.color = {25, 85, 170}, raw.line_width = 2, raw.marker_radius = 3;
    chart.series.push_back(std::move(raw));
    return chart;
  }
  ChartSeries trend{"smoothed", raw.x, smoothed(raw.y, log_y), {25, 85, 170}, 2.5};
  raw.color = {150, 185, 230}, raw.line_width = 1.5;
  chart.series.push_back(std::move(raw));
  chart.series.push_back(std::move(trend));
  return chart;
}

// Along viridis from yellow-green (early) to dark purple (late), leaving out its pale
// yellow end, which is hard to see on white.
Rgb early_to_late(double t) {
  static const Rgb stops[] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double at = (1 - t) * 0.8 * 4;
  const int i = std::min(3, static_cast<int>(at));
  Rgb c;
  for (int k = 0; k < 3; ++k) c[k] = static_cast<uint8_t>(std::lround(stops[i][k] + (stops[i + 1][k] - stops[i][k]) * (at - i)));
  return c;
}

// Up to five windows, evenly spread from the first with bins to the last.
LineChart loss_by_sigma_chart(const std::vector<const LossRecord*>& binned, const std::string& name) {
  LineChart chart;
  chart.title = fmt::format("Training loss by noise level: {}", name);
  const std::size_t curves = std::min<std::size_t>(5, binned.size());
  std::vector<std::size_t> picked;
  for (std::size_t j = 0; j < curves; ++j) {
    const std::size_t i = curves == 1 ? binned.size() - 1 : (j * (binned.size() - 1) + (curves - 1) / 2) / (curves - 1);
    if (picked.empty() || picked.back() != i) picked.push_back(i);
  }
  bool log_y = true;
  for (std::size_t j = 0; j < picked.size(); ++j) {
    const std::size_t i = picked[j];
    const LossBySigmaBins& b = *binned[i]->by_sigma;
    ChartSeries s;
    s.label = fmt::format("step {}", binned[i]->step);
    s.color = early_to_late(picked.size() == 1 ? 1.0 : static_cast<double>(j) / (picked.size() - 1));
    s.marker_radius = 3;
    for (std::size_t k = 0; k < b.loss.size(); ++k)
      s.x.push_back(std::exp((b.log_sigma_edges[k] + b.log_sigma_edges[k + 1]) / 2)), s.y.push_back(b.loss[k]);
    log_y = log_y && all_positive(s.y);
    chart.series.push_back(std::move(s));
  }
  chart.x = {"noise level σ (log scale; bin centres)", AxisScale::log};
  chart.y = {log_y ? "loss (log scale)" : "loss", log_y ? AxisScale::log : AxisScale::linear};
  return chart;
}

}  // namespace

std::vector<LossRecord> read_loss_records(const std::string& path, std::vector<std::string>& notes) {
  if (std::error_code ec; fs::is_directory(path, ec)) fail("{}: is a directory, not a metrics file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read: {}", path, std::strerror(errno));
  std::string text;
  try {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception&) {
    fail("{}: cannot read: {}", path, std::strerror(errno));
  }
  if (in.bad()) fail("{}: cannot read: {}", path, std::strerror(errno));
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) fail("{}: empty: the run has not logged a step yet", path);
  std::vector<LossRecord> records;
  int64_t line_number = 0;
  for (std::size_t start = 0; start < text.size();) {
    const auto end = text.find('\n', start);
    const std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{} line {}", path, line_number);
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      // The trainer appends each line, newline last, in one write: only the final line,
      // and only without its newline, can have been cut off by a crash.
      if (end == std::string::npos) {
        notes.push_back(fmt::format("{}: skipped, cut off before its end (a crash mid-write?)", where));
        break;
      }
      fail("{}: not a JSON object: {}", where, abbreviate(line));
    }
    if (j.contains("event") || !j.contains("loss")) continue;
    if (!j.contains("step") || !j["step"].is_number_integer())
      fail("{}: a loss record needs an integer \"step\": {}", where, abbreviate(line));
    LossRecord r;
    r.step = j["step"].get<int64_t>();
    if (!records.empty() && r.step <= records.back().step) {
      // Steps logged again: a run resumed from an earlier checkpoint than its last logged
      // step, or a file written twice. The later records replace those from that step on,
      // so the curve is the run's last history and never runs backwards.
      notes.push_back(fmt::format("{}: step {} follows step {}: the steps from {} on were logged again (a run resumed "
                                  "from an earlier checkpoint, or the file written twice); the later records are drawn",
                                  where, r.step, records.back().step, r.step));
      records.erase(std::find_if(records.begin(), records.end(), [&](const LossRecord& kept) { return kept.step >= r.step; }),
                    records.end());
    }
    r.loss = loss_value(j["loss"], where, "loss");
    if (j.contains("loss_by_sigma")) r.by_sigma = read_loss_by_sigma(j["loss_by_sigma"], where);
    records.push_back(std::move(r));
  }
  return records;
}

std::vector<std::string> plot_run(const std::string& run_dir, const std::string& out_dir, std::vector<std::string>& notes) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) fail("{}: no such run directory", run_dir);
  const std::string metrics = (fs::path(run_dir) / "metrics.jsonl").string();
  const auto records = read_loss_records(metrics, notes);
  if (records.empty()) fail("{}: no loss records (only events): the run has not logged a step yet", metrics);
  const auto finite = std::count_if(records.begin(), records.end(), [](const LossRecord& r) { return std::isfinite(r.loss); });
  if (finite == 0) fail("{}: no finite loss to plot: all {} loss records are null", metrics, records.size());
  if (finite < static_cast<std::ptrdiff_t>(records.size()))
    notes.push_back(fmt::format("{}: {} of {} loss records are null (not finite); left out, as gaps in the curve", metrics,
                                records.size() - finite, records.size()));

  const std::string name = run_name(run_dir);
  std::vector<std::string> written{(fs::path(out_dir) / "loss.png").string()};
  StagedFiles files;
  files.stage(written[0], line_chart_png(loss_chart(records, name)));

  std::vector<const LossRecord*> binned;
  for (const auto& r : records)
    if (r.by_sigma && std::any_of(r.by_sigma->loss.begin(), r.by_sigma->loss.end(), [](double v) { return std::isfinite(v); }))
      binned.push_back(&r);
  if (binned.empty()) {
    notes.push_back(fmt::format("{}: no record carries a loss_by_sigma with a filled bin (a run from an older difftrain?); "
                                "loss_by_sigma.png not written",
                                metrics));
  } else {
    written.push_back((fs::path(out_dir) / "loss_by_sigma.png").string());
    files.stage(written[1], line_chart_png(loss_by_sigma_chart(binned, name)));
  }
  files.publish();
  return written;
}

}  // namespace difftrain
