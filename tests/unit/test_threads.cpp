// Each rank's intra-op thread count: its share of the node's cores unless told otherwise.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "difftrain/config.h"
#include "difftrain/train/threads.h"
#include "test_util.h"

namespace difftrain {
namespace {

TEST(Threads, EachRankTakesItsShareOfTheNodeUnlessToldOtherwise) {
  // No binding (every rank may run on all 2 cores): the cores are shared among the ranks.
  EXPECT_EQ(plan_threads(0, std::nullopt, 2, 2, 2).threads, 1);
  EXPECT_EQ(plan_threads(0, std::nullopt, 2, 2, 2).reason, "2 cores / 2 ranks on this node");
  EXPECT_EQ(plan_threads(0, std::nullopt, 2, 2, 1).threads, 2);
  EXPECT_EQ(plan_threads(0, std::nullopt, 64, 64, 8).threads, 8);
  EXPECT_EQ(plan_threads(0, std::nullopt, 2, 2, 4).threads, 1);  // more ranks than cores: one each
  // A launcher's binding (srun --cpus-per-task=8, mpirun --bind-to socket) already gave each rank its cores.
  EXPECT_EQ(plan_threads(0, std::nullopt, 8, 64, 8).threads, 8);
  EXPECT_EQ(plan_threads(0, std::nullopt, 8, 64, 8).reason, "the 8 cores this rank is bound to");
  EXPECT_EQ(plan_threads(0, std::nullopt, 1, 64, 8).threads, 1);
  // OMP_NUM_THREADS overrides the choice, and train.threads overrides both.
  EXPECT_EQ(plan_threads(0, 3, 8, 64, 8).threads, 3);
  EXPECT_EQ(plan_threads(0, 3, 8, 64, 8).reason, "OMP_NUM_THREADS");
  EXPECT_EQ(plan_threads(5, 3, 8, 64, 8).threads, 5);
  EXPECT_EQ(plan_threads(5, 3, 8, 64, 8).reason, "train.threads");
  // An unreadable affinity (0) falls back to the node's share.
  EXPECT_EQ(plan_threads(0, std::nullopt, 0, 16, 4).threads, 4);
}

TEST(Threads, ApplyingThePlanSetsLibTorchsThreads) {
  const int before = at::get_num_threads();
  EXPECT_EQ(apply_threads(1, 1).threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(apply_threads(2, 1).threads, 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  at::set_num_threads(before);
}

// With Debian's LibTorch, matrix products run in OpenBLAS, whose own pool would fight
// LibTorch's threads: applying the plan leaves it one thread unless OPENBLAS_NUM_THREADS is set.
TEST(Threads, OpenBlasRunsOnTheCallingThreadUnlessItsVariableIsSet) {
  using GetThreads = int (*)();
  using SetThreads = void (*)(int);
  auto* get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!get || !set) GTEST_SKIP() << "LibTorch's BLAS here is not OpenBLAS";
  const char* variable = std::getenv("OPENBLAS_NUM_THREADS");
  const bool was_set = variable != nullptr;
  const std::string saved = was_set ? variable : "";
  const int before = at::get_num_threads(), blas_before = get();
  unsetenv("OPENBLAS_NUM_THREADS");
  set(2);
  EXPECT_TRUE(apply_threads(2, 1).blas_single);
  EXPECT_EQ(get(), 1);
  EXPECT_EQ(at::get_num_threads(), 2) << "setting OpenBLAS's threads changed LibTorch's";
  setenv("OPENBLAS_NUM_THREADS", "2", 1);
  set(2);
  EXPECT_FALSE(apply_threads(2, 1).blas_single);
  EXPECT_EQ(get(), 2) << "OPENBLAS_NUM_THREADS was overridden";
  if (was_set)
    setenv("OPENBLAS_NUM_THREADS", saved.c_str(), 1);
  else
    unsetenv("OPENBLAS_NUM_THREADS");
  set(blas_before);
  at::set_num_threads(before);
}

TEST(Threads, TrainThreadsOutsideItsRangeIsAnErrorNamingTheKey) {
  EXPECT_MENTIONS(test::error_of([] { parse_config("", "test", {"train.threads=-1"}); }), "train.threads");
  EXPECT_MENTIONS(test::error_of([] { parse_config("", "test", {"train.threads=5000"}); }), "[0, 4096]");
  EXPECT_EQ(parse_config("", "test", {"train.threads=3"}).train.threads, 3);
  EXPECT_EQ(parse_config("", "test", {}).train.threads, 0);
}

}  // namespace
}  // namespace difftrain
