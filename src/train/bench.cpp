#include "difftrain/train/bench.h"

#include <algorithm>
#include <cmath>

#include <sys/resource.h>

#include <fmt/format.h>

namespace difftrain {

namespace {

constexpr int kFields = 9;  // step_ms, six phases, peak RSS, peak GPU

nlohmann::ordered_json split_ms(const StepTimes& t) {
  nlohmann::ordered_json j;
  for (const auto& [name, seconds] : {std::pair{"data", t.data}, {"compute", t.compute}, {"sync", t.sync},
                                      {"optim", t.optim}, {"ema", t.ema}, {"log", t.log}})
    j[name] = std::round(seconds * 1e6) / 1e3;  // ms, to the microsecond (the division keeps it exact in print)
  return j;
}

// To `digits` decimals, as the nearest double to that decimal (which prints as it).
double round_to(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

}  // namespace

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

#ifndef DIFFTRAIN_TORCH_CUDA
double peak_gpu_mb(const torch::Device&) { return -1; }
#endif

std::vector<RankBench> gather_rank_bench(Communicator& comm, const RankBench& mine) {
  // Each rank fills its own row of zeros; the sum over ranks is every row.
  auto rows = torch::zeros({comm.size(), kFields}, torch::kFloat64);
  const auto& s = mine.split;
  const double values[kFields] = {mine.step_ms, s.data, s.compute, s.sync, s.optim, s.ema, s.log, mine.peak_rss_mb,
                                  mine.peak_gpu_mb};
  for (int f = 0; f < kFields; ++f) rows[comm.rank()][f] = values[f];
  auto on_device = rows.to(comm.device());
  comm.allreduce_sum(on_device);
  rows = on_device.cpu();
  std::vector<RankBench> out(comm.size());
  const auto* r = rows.data_ptr<double>();
  for (int k = 0; k < comm.size(); ++k, r += kFields) {
    out[k].step_ms = r[0];
    out[k].split = {r[1], r[2], r[3], r[4], r[5], r[6]};
    out[k].peak_rss_mb = r[7];
    out[k].peak_gpu_mb = r[8];
  }
  return out;
}

std::size_t BenchReport::slowest() const {
  return std::max_element(ranks.begin(), ranks.end(),
                          [](const RankBench& a, const RankBench& b) { return a.step_ms < b.step_ms; }) -
         ranks.begin();
}

double BenchReport::samples_per_s() const { return global_batch / (ranks.at(slowest()).step_ms / 1e3); }

std::string bench_table(const BenchReport& report) {
  std::string out = fmt::format(
      "{} rank{} ({}), {} intra-op thread{} each, {} parameters, global batch {}, {} timed steps after {} warm-up\n",
      report.ranks.size(), report.ranks.size() == 1 ? "" : "s", report.backend, report.threads,
      report.threads == 1 ? "" : "s", report.model_params, report.global_batch, report.steps, report.warmup);
  out += fmt::format("{:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n", "rank", "step ms", "data", "compute",
                     "sync", "optim", "ema", "log", "peak MiB");
  for (std::size_t k = 0; k < report.ranks.size(); ++k) {
    const auto& r = report.ranks[k];
    const auto& s = r.split;
    out += fmt::format("{:>5} {:>9.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>9.1f}{}\n", k, r.step_ms,
                       s.data * 1e3, s.compute * 1e3, s.sync * 1e3, s.optim * 1e3, s.ema * 1e3, s.log * 1e3,
                       r.peak_rss_mb, k == report.slowest() && report.ranks.size() > 1 ? "  slowest" : "");
  }
  out += fmt::format("{:.1f} samples/s over all ranks\n", report.samples_per_s());
  return out;
}

nlohmann::ordered_json bench_json(const BenchReport& report) {
  const auto& slow = report.ranks.at(report.slowest());
  nlohmann::ordered_json j;
  j["ranks"] = report.ranks.size();
  j["steps"] = report.steps;
  j["warmup"] = report.warmup;
  j["global_batch"] = report.global_batch;
  j["threads"] = report.threads;
  j["backend"] = report.backend;
  j["model_params"] = report.model_params;
  j["samples_per_s"] = round_to(report.samples_per_s(), 2);
  j["step_ms"] = round_to(slow.step_ms, 3);
  j["split_ms"] = split_ms(slow.split);
  double rss = 0, gpu = -1;
  for (const auto& r : report.ranks) rss = std::max(rss, r.peak_rss_mb), gpu = std::max(gpu, r.peak_gpu_mb);
  j["peak_rss_mb"] = round_to(rss, 1);
  if (gpu >= 0) j["peak_gpu_mb"] = round_to(gpu, 1);
  j["slowest_rank"] = report.slowest();
  auto per_rank = nlohmann::ordered_json::array();
  for (const auto& r : report.ranks) {
    nlohmann::ordered_json row;
    row["step_ms"] = round_to(r.step_ms, 3);
    row["split_ms"] = split_ms(r.split);
    row["peak_rss_mb"] = round_to(r.peak_rss_mb, 1);
    per_rank.push_back(row);
  }
  j["per_rank"] = per_rank;
  return j;
}

}  // namespace difftrain
