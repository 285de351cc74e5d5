// The NCCL backend, under mpirun with one rank per GPU (ctest's nccl_tests runs it on one
// rank; launch/gpu-check.sh on every GPU of the machine). Compiled wherever the CUDA
// toolkit and nccl.h are; every test skips, saying why, where this node has no GPU for
// each rank. The tests that hold torch tensors on the GPU need a CUDA LibTorch.
#ifdef DIFFTRAIN_WITH_NCCL
#include <gtest/gtest.h>

#include <vector>

#include "difftrain/comm/grad_buckets.h"
#include "difftrain/comm/nccl_communicator.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/core/schedule.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/registry.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/trainer.h"
#include "mpi_test_env.h"

namespace difftrain {
namespace {

using test::world;

// Why this job cannot test NCCL ("" when it can), agreed by every rank: a rank that
// skipped while the others made a communicator would leave them waiting.
std::string skip_reason() {
  const int gpus = cuda_device_count();
  auto short_of_gpus = torch::tensor({static_cast<int64_t>(world().local_rank() >= gpus)});
  world().allreduce_max(short_of_gpus);
  if (gpus == 0) return "no GPU visible to the CUDA runtime (no GPU, or no driver)";
  if (short_of_gpus.item<int64_t>() != 0) return "fewer GPUs than ranks on some node: run one rank per GPU";
  return "";
}

#define SKIP_WITHOUT_GPUS()                        \
  if (const auto why = skip_reason(); !why.empty()) \
  GTEST_SKIP() << why

void check_cuda(cudaError_t rc) { ASSERT_EQ(rc, cudaSuccess) << cudaGetErrorString(rc); }

TEST(NcclBackend, BootstrapsOverMpiWithOneGpuPerRank) {
  SKIP_WITHOUT_GPUS();
  NcclCommunicator comm;
  EXPECT_EQ(comm.backend(), "nccl");
  EXPECT_EQ(comm.rank(), world().rank());
  EXPECT_EQ(comm.size(), world().size());
  int nccl_rank = -1, nccl_size = -1, current = -1;
  ASSERT_EQ(ncclCommUserRank(comm.comm(), &nccl_rank), ncclSuccess);
  ASSERT_EQ(ncclCommCount(comm.comm(), &nccl_size), ncclSuccess);
  EXPECT_EQ(nccl_rank, world().rank());
  EXPECT_EQ(nccl_size, world().size());
  check_cuda(cudaGetDevice(&current));
  EXPECT_EQ(current, world().local_rank());
  EXPECT_EQ(comm.device().index(), world().local_rank());
}

// Buckets of several sizes (one value, a few thousand, one just over 4 MiB), each filled
// per rank with small integers, so float32 sums are exact.
TEST(NcclBackend, AllReduceOfBucketsEqualsTheSums) {
  SKIP_WITHOUT_GPUS();
  NcclCommunicator comm;
  const int64_t size = comm.size(), rank = comm.rank();
  cudaStream_t stream;
  check_cuda(cudaStreamCreate(&stream));
  const std::vector<size_t> counts{1, 3000, (size_t{1} << 20) + 3};
  std::vector<float*> buckets;
  for (size_t n : counts) {
    std::vector<float> host(n);
    for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(rank + 1 + i % 7);
    float* d = nullptr;
    check_cuda(cudaMalloc(&d, n * sizeof(float)));
    check_cuda(cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    buckets.push_back(d);
  }
  for (size_t b = 0; b < counts.size(); ++b) comm.allreduce(buckets[b], counts[b], ncclFloat32, ncclSum, stream);
  check_cuda(cudaStreamSynchronize(stream));
  int64_t checked = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    std::vector<float> host(counts[b]);
    check_cuda(cudaMemcpy(host.data(), buckets[b], counts[b] * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < counts[b]; ++i) {
      const float expected = static_cast<float>(size * (size + 1) / 2 + size * static_cast<int64_t>(i % 7));
      if (host[i] != expected) {
        ADD_FAILURE() << "bucket " << b << " element " << i << ": " << host[i] << " != " << expected;
        break;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int64_t>(counts[0] + counts[1] + counts[2]));

  // Max and broadcast on the last bucket's first values.
  std::vector<float> host(8);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(rank * 10 + i);
  check_cuda(cudaMemcpy(buckets[1], host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  comm.allreduce(buckets[1], host.size(), ncclFloat32, ncclMax, stream);
  check_cuda(cudaMemcpy(buckets[0], host.data(), sizeof(float), cudaMemcpyHostToDevice));
  comm.broadcast(buckets[0], 1, ncclFloat32, static_cast<int>(size - 1), stream);
  comm.synchronize();
  std::vector<float> maxima(host.size());
  float root_value = -1;
  check_cuda(cudaMemcpy(maxima.data(), buckets[1], maxima.size() * sizeof(float), cudaMemcpyDeviceToHost));
  check_cuda(cudaMemcpy(&root_value, buckets[0], sizeof(float), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < maxima.size(); ++i) EXPECT_EQ(maxima[i], static_cast<float>((size - 1) * 10 + i));
  EXPECT_EQ(root_value, static_cast<float>((size - 1) * 10));
  for (float* d : buckets) cudaFree(d);
  cudaStreamDestroy(stream);
}

#ifdef DIFFTRAIN_TORCH_CUDA
// Host tensors (flags, headers) go through the GPU; GPU tensors are reduced in place.
TEST(NcclBackend, TorchTensorsOnTheGpuAndOnTheHost) {
  SKIP_WITHOUT_GPUS();
  NcclCommunicator comm;
  auto on_gpu = torch::full({5}, static_cast<float>(comm.rank() + 1), torch::Device(comm.device()));
  comm.allreduce_sum(on_gpu);
  auto on_host = torch::tensor({static_cast<int64_t>(comm.rank()), int64_t{7}});
  comm.allreduce_max(on_host);
  const double expected = comm.size() * (comm.size() + 1) / 2.0;
  EXPECT_TRUE(torch::equal(on_gpu.cpu(), torch::full({5}, static_cast<float>(expected))));
  EXPECT_TRUE(on_host.device().is_cpu());
  EXPECT_EQ(on_host[0].item<int64_t>(), comm.size() - 1);
  EXPECT_EQ(on_host[1].item<int64_t>(), 7);
}

// Six training steps of the swissroll recipe on the GPU (NCCL) against the same steps done
// by hand on the CPU from the same weights, batches and draws (the GPU's own sigma and eps,
// copied over; a CPU run draws other numbers), averaged over the ranks by MPI: the
// parameters agree to 1e-5 relative (fp32 with TF32 off, which train.tf32 turns on by
// default and which rounds matmul inputs to 10 bits; the kernels differ). Eager, and with
// train.cuda_graph (captured at step 4: steps 4 to 6 are CUDA-graph replays).
void gpu_steps_equal_cpu_steps(bool cuda_graph) {
  test::SharedDir dir;
  if (world().rank() == 0) prepare_swissroll(dir / "data", 1);
  world().barrier();
  const Config config =
      parse_config("", "test",
                   {"data.path=" + (dir / "data"), "run_dir=" + (dir / "gpu"), "train.steps=10",
                    "train.batch_size=" + std::to_string(16 * world().size()), "train.warmup_steps=2",
                    "train.tf32=false", fmt::format("train.cuda_graph={}", cuda_graph)});
  NcclCommunicator nccl;
  Trainer gpu(config, nccl);
  gpu.synchronize();
  ASSERT_TRUE(gpu.model().parameters().front().is_cuda());

  auto reference = make_model(config.model, {2});
  load_state_dict(*reference, state_dict(gpu.model()), "the GPU run's initial weights");
  flatten_storage(reference->parameters());
  auto optimizer = make_optimizer(reference->parameters(), config.train);
  GradBuckets buckets(reference->parameters(), config.dist.bucket_mb);
  const Parameterization parameterization = config.model.parameterization;
  const auto points = swissroll_points(16 * 6 * world().size());
  const int rank = world().rank();
  for (int64_t s = 1; s <= 6; ++s) {
    const auto x0 = points.narrow(0, ((s - 1) * world().size() + rank) * 16, 16);
    const auto counter = static_cast<uint64_t>(s - 1);
    auto sigma_draws = random_stream(config.seed, rank, Stream::sigma, counter, nccl.device());
    auto eps_draws = random_stream(config.seed, rank, Stream::eps, counter, nccl.device());
    const auto drawn = generate_train_sample(x0.to(nccl.device()), gpu.schedule(), sigma_draws, eps_draws);
    ASSERT_TRUE(drawn.eps.is_cuda());
    buckets.zero_grad();
    const auto loss =
        training_loss(*reference, parameterization, {x0, drawn.sigma.cpu(), drawn.eps.cpu()}) / world().size();
    loss.backward();
    auto mean_loss = loss.detach().reshape({1});
    buckets.allreduce_sum(world(), mean_loss);
    optimizer->set_lr(learning_rate(config.train, s));
    optimizer->step(buckets.flat_grads());

    const auto on_gpu = gpu.step({Batch(x0)}, s);
    ASSERT_FALSE(on_gpu.skipped);
    EXPECT_NEAR(on_gpu.loss, mean_loss.item<double>(), 1e-5 * std::abs(mean_loss.item<double>())) << "step " << s;
  }
  const auto gpu_params = gpu.model().parameters(), cpu_params = reference->parameters();
  ASSERT_EQ(gpu_params.size(), cpu_params.size());
  ASSERT_FALSE(cpu_params.empty());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const auto a = gpu_params[i].detach().cpu(), b = cpu_params[i].detach();
    const double scale = b.abs().max().item<double>() + 1e-12;
    EXPECT_LE((a - b).abs().max().item<double>() / scale, 1e-5) << "parameter " << i;
  }
}

TEST(NcclBackend, TrainingStepsOnTheGpuEqualTheCpuStepsOnTheSameInputs) {
  SKIP_WITHOUT_GPUS();
  gpu_steps_equal_cpu_steps(false);
}

TEST(NcclBackend, CapturedTrainingStepsOnTheGpuEqualTheCpuSteps) {
  SKIP_WITHOUT_GPUS();
  gpu_steps_equal_cpu_steps(true);
}
#endif  // DIFFTRAIN_TORCH_CUDA

}  // namespace
}  // namespace difftrain
#endif  // DIFFTRAIN_WITH_NCCL
