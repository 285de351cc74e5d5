#pragma once
// `difftrain bench`: every rank's time per training step, split by phase, gathered into
// one report (a table, and one JSON line that scripts read).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "difftrain/comm/communicator.h"
#include "difftrain/train/metrics.h"

namespace difftrain {

struct RankBench {
  double step_ms = 0;  // wall time per timed step
  StepTimes split;     // seconds per step by phase
  double peak_rss_mb = 0;
  double peak_gpu_mb = -1;  // LibTorch's peak allocation on this rank's GPU; -1: no GPU
};

struct BenchReport {
  int64_t steps = 0, warmup = 0, global_batch = 0, model_params = 0;
  int threads = 0;
  std::string backend;
  std::vector<RankBench> ranks;  // indexed by rank
  std::size_t slowest() const;   // the rank with the longest step
  double samples_per_s() const;  // all ranks together, at the slowest rank's pace
};

// Collective: every rank passes its own figures; every rank gets all of them.
std::vector<RankBench> gather_rank_bench(Communicator& comm, const RankBench& mine);

// This process's peak resident memory so far, in MiB.
double peak_rss_mb();
// LibTorch's peak allocation on `device` so far, in MiB; -1 for the CPU. A GPU needs a CUDA
// LibTorch (train/torch_cuda_memory.cpp); other builds have no GPU tensors.
double peak_gpu_mb(const torch::Device& device);

std::string bench_table(const BenchReport& report);
// {"ranks", "steps", "warmup", "global_batch", "threads", "backend", "model_params",
//  "samples_per_s", "step_ms", "split_ms": {data, compute, sync, optim, ema, log},
//  "peak_rss_mb", ["peak_gpu_mb",] "slowest_rank", "per_rank": [...]}: the slowest rank's
// step and split, the largest memory.
nlohmann::ordered_json bench_json(const BenchReport& report);

}  // namespace difftrain
