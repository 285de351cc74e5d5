// dist.backend: which communicator a node gets, and why "nccl" is refused where it cannot
// work (decided from the facts alone, so every case runs on a CPU machine).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

BackendFacts facts(bool nccl_built, int torch_gpus, int runtime_gpus) {
  BackendFacts f;
  f.nccl_built = nccl_built, f.torch_gpus = torch_gpus, f.runtime_gpus = runtime_gpus;
  return f;
}

// The processes this one started, by name (every thread's /proc children list).
std::string child_names() {
  std::string names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream children(task.path() / "children");
    for (int pid; children >> pid;) {
      std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
      std::string name;
      std::getline(comm, name);
      names += name + " ";
    }
  }
  return names;
}

// ctest starts this test without a launcher: MPI comes up as an isolated singleton, with no
// Open MPI daemon forked for it (which cost 0.2 s of every such start).
TEST(Backend, AProcessStartedAloneStartsNoMpiDaemon) {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_FD"})
    if (std::getenv(variable)) GTEST_SKIP() << "started by a launcher (" << variable << ")";
  if (!std::ifstream("/proc/self/task/" + std::to_string(getpid()) + "/children")) GTEST_SKIP() << "no /proc children lists";
  const auto comm = make_communicator(Backend::mpi);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_THAT(child_names(), ::testing::Not(HasSubstr("orted")));
}

TEST(Backend, AutoPicksNcclOnlyWithNcclAndAGpuThatLibTorchCanUse) {
  EXPECT_EQ(choose_backend(Backend::automatic, facts(true, 8, 8)), Backend::nccl);
  EXPECT_EQ(choose_backend(Backend::automatic, facts(true, 1, 1)), Backend::nccl);
  EXPECT_EQ(choose_backend(Backend::automatic, facts(true, 0, 0)), Backend::mpi);   // this CI machine: NCCL built, no driver
  EXPECT_EQ(choose_backend(Backend::automatic, facts(true, 0, 4)), Backend::mpi);   // GPUs, but a CPU-only LibTorch
  EXPECT_EQ(choose_backend(Backend::automatic, facts(false, 4, 4)), Backend::mpi);  // GPUs, but no NCCL in the build
  EXPECT_EQ(choose_backend(Backend::mpi, facts(true, 8, 8)), Backend::mpi);
  EXPECT_EQ(choose_backend(Backend::nccl, facts(true, 2, 2)), Backend::nccl);
}

TEST(Backend, NcclWhereItCannotWorkSaysWhy) {
  const auto message = [](const BackendFacts& f) { return test::error_of([&] { choose_backend(Backend::nccl, f); }); };
  EXPECT_THAT(message(facts(false, 4, 0)), HasSubstr("'nccl' is not in this build"));
  EXPECT_THAT(message(facts(true, 0, 2)), HasSubstr("LibTorch is CPU-only (the CUDA runtime sees 2 GPUs)"));
  EXPECT_THAT(message(facts(true, 0, 0)), HasSubstr("none is visible on this node"));
  for (const auto& f : {facts(false, 4, 0), facts(true, 0, 2), facts(true, 0, 0)}) {
    EXPECT_THAT(message(f), HasSubstr("config: key 'dist.backend'"));
    EXPECT_THAT(message(f), HasSubstr("use 'mpi'"));
  }
  EXPECT_THAT(test::error_of([] { parse_config("", "test", {"dist.backend=gloo"}); }),
              HasSubstr("key 'dist.backend': expected one of auto, mpi, nccl; got 'gloo'"));
}

TEST(Backend, ThisMachinesFactsAgreeWithTheBuild) {
  const auto f = backend_facts();
#ifdef DIFFTRAIN_WITH_NCCL
  EXPECT_TRUE(f.nccl_built);
  EXPECT_GE(f.runtime_gpus, f.torch_gpus);
#else
  EXPECT_FALSE(f.nccl_built);
  EXPECT_EQ(f.runtime_gpus, 0);
#endif
#ifndef DIFFTRAIN_TORCH_CUDA
  EXPECT_EQ(f.torch_gpus, 0);  // a CPU-only LibTorch never offers a GPU
#endif
}

TEST(Backend, DeviceForSamplingIsTheRanksGpuWhenThereIsOneAndTheCpuOtherwise) {
  EXPECT_EQ(choose_device("auto", 0, facts(true, 0, 0)), torch::Device(torch::kCPU));
  EXPECT_EQ(choose_device("auto", 3, facts(true, 8, 8)), torch::Device(torch::kCUDA, 3));
  EXPECT_EQ(choose_device("auto", 3, facts(true, 1, 1)), torch::Device(torch::kCUDA, 0));  // one visible GPU per task
  EXPECT_EQ(choose_device("auto", 5, facts(true, 4, 4)), torch::Device(torch::kCPU));     // more ranks than GPUs
  EXPECT_EQ(choose_device("cpu", 0, facts(true, 8, 8)), torch::Device(torch::kCPU));
  EXPECT_EQ(choose_device("cuda", 2, facts(false, 4, 4)), torch::Device(torch::kCUDA, 2));
  EXPECT_EQ(choose_device("cuda:1", 0, facts(false, 4, 4)), torch::Device(torch::kCUDA, 1));
  const auto no_gpu = test::error_of([] { choose_device("cuda", 0, facts(true, 0, 0)); });
  EXPECT_MENTIONS(no_gpu, "--device cuda: no GPU is visible");
  const auto cpu_torch = test::error_of([] { choose_device("cuda", 0, facts(true, 0, 2)); });
  EXPECT_MENTIONS(cpu_torch, "LibTorch is CPU-only (the CUDA runtime sees 2 GPUs)");
  EXPECT_MENTIONS(test::error_of([] { choose_device("cuda:4", 0, facts(true, 4, 4)); }), "cuda:4: this node has 4 GPUs");
  EXPECT_MENTIONS(test::error_of([] { choose_device("cuda", 5, facts(true, 4, 4)); }), "and this is local rank 5");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", ""})
    EXPECT_MENTIONS(test::error_of([&] { choose_device(bad, 0, facts(true, 1, 1)); }), "--device: expected auto, cpu");
}

}  // namespace
}  // namespace difftrain
