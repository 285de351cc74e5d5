#pragma once
// How many intra-op threads LibTorch runs in each rank. Left alone, every rank takes every
// core of the node, and ranks and their threads fight over the cores.
#include <optional>
#include <string>

namespace difftrain {

struct ThreadPlan {
  int threads = 1;
  std::string reason;  // for the line printed at start
};

// The first that applies: `configured` (train.threads, 0 = choose); `from_env`
// (OMP_NUM_THREADS, when set); the cores this process may run on when a launcher's binding
// narrowed them below the node's; else the node's cores shared among its ranks.
ThreadPlan plan_threads(int configured, std::optional<int> from_env, int allowed_cores, int node_cores,
                        int local_ranks);

// Reads OMP_NUM_THREADS and this process's CPU affinity, sets LibTorch's intra-op thread
// count, and returns the plan.
ThreadPlan apply_threads(int configured, int local_ranks);

}  // namespace difftrain
