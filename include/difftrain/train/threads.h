#pragma once
// How many intra-op threads LibTorch runs in each rank. Left alone, every rank takes every
// core of the node, and ranks and their threads fight over the cores.
#include <optional>
#include <string>

namespace difftrain {

struct ThreadPlan {
  int threads = 1;
  std::string reason;  // for the line printed at start
  bool blas_single = false;  // OpenBLAS's own pool was set to one thread (apply_threads)
};

// The first that applies: `configured` (train.threads, 0 = choose); `from_env`
// (OMP_NUM_THREADS, when set); the cores this process may run on when a launcher's binding
// narrowed them below the node's; else the node's cores shared among its ranks.
ThreadPlan plan_threads(int configured, std::optional<int> from_env, int allowed_cores, int node_cores,
                        int local_ranks);

// Reads OMP_NUM_THREADS and this process's CPU affinity, sets LibTorch's intra-op thread
// count, and returns the plan. Unless OPENBLAS_NUM_THREADS is set, OpenBLAS (where LibTorch
// calls it for matrix products) then runs on the calling thread: its own pool, one thread
// per core of the node by default, does not coordinate with LibTorch's, and the two fight
// over the rank's cores. On the toy model's small layers, where oneDNN's GELU (on
// LibTorch's threads) and OpenBLAS's products alternate, the step took 4.4 ms with both
// pools on 2 cores and 1.0 ms with one; on the image smoke models the second pool gained
// 5-15% (see the README's threads paragraph).
ThreadPlan apply_threads(int configured, int local_ranks);

}  // namespace difftrain
