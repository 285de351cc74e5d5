#include "difftrain/train/threads.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <ATen/Parallel.h>
#include <fmt/format.h>

namespace difftrain {

ThreadPlan plan_threads(int configured, std::optional<int> from_env, int allowed_cores, int node_cores,
                        int local_ranks) {
  if (configured > 0) return {configured, "train.threads"};
  if (from_env && *from_env > 0) return {*from_env, "OMP_NUM_THREADS"};
  if (allowed_cores > 0 && allowed_cores < node_cores)
    return {allowed_cores, fmt::format("the {} core{} this rank is bound to", allowed_cores, allowed_cores == 1 ? "" : "s")};
  const int ranks = std::max(1, local_ranks);
  return {std::max(1, node_cores / ranks),
          fmt::format("{} core{} / {} rank{} on this node", node_cores, node_cores == 1 ? "" : "s", ranks,
                      ranks == 1 ? "" : "s")};
}

namespace {

std::optional<int> env_threads() {
  const char* text = std::getenv("OMP_NUM_THREADS");
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  if (*end != '\0' || n < 1 || n > 4096) return std::nullopt;  // LibTorch ignores such values too
  return static_cast<int>(n);
}

int allowed_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

// OpenBLAS's own pool to one thread, unless OPENBLAS_NUM_THREADS chose. Nothing where
// LibTorch's BLAS is not OpenBLAS (MKL follows at::set_num_threads) or where OpenBLAS was
// built on OpenMP (openblas_get_parallel() 2): it then shares LibTorch's OpenMP threads, and
// setting it would set them too.
bool keep_blas_on_calling_thread() {
  if (std::getenv("OPENBLAS_NUM_THREADS")) return false;
  using SetThreads = void (*)(int);
  using GetParallel = int (*)();
  auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto* parallel = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (!set || (parallel && parallel() == 2)) return false;
  set(1);
  return true;
}

}  // namespace

ThreadPlan apply_threads(int configured, int local_ranks) {
  const int node_cores = std::max(1, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  auto plan = plan_threads(configured, env_threads(), allowed_cores(), node_cores, local_ranks);
  plan.blas_single = keep_blas_on_calling_thread();  // first: it must not undo the next line
  at::set_num_threads(plan.threads);
  return plan;
}

}  // namespace difftrain
