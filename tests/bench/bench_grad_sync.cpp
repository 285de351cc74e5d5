// Gradient-sync cost against the floor, interleaved in one run so that all see the same
// machine, per iteration of a real forward and backward on the model:
//   blocking: backward, then GradBuckets::allreduce_sum (all buckets after backward);
//   overlapped: arm(), backward (buckets start as they complete), then allreduce_sum;
//   fenced: backward, a barrier, then allreduce_sum: the all-reduce's own cost, with no
//     wait for a slower rank's backward in it;
//   raw: one MPI_Allreduce of the same number of bytes, after a barrier; and the same call
//     on the very bytes the gradient all-reduce sends (bucket 0's lead of extras and every
//     gradient) after a backward and a barrier, alternating with fenced ("raw_on_gradients").
// It reports the sync time left after backward ("exposed") for the first two, the fenced
// time, and the raw all-reduce's time.
//
//   mpirun -n 2 build/tests/bench_grad_sync [hidden_width] [iterations] [bucket_mb]
//
// The default model is the toy recipe's MLP (16,128,128,128,128,16); a width sets every
// hidden layer, for a bigger gradient.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/comm/grad_buckets.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/models/registry.h"

using namespace difftrain;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int main(int argc, char** argv) {
  auto comm = make_communicator(Backend::mpi);
  ModelConfig mc;
  if (argc > 1) mc.hidden_dims = std::vector<int64_t>(6, std::atoll(argv[1]));
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 500;
  const double bucket_mb = argc > 3 ? std::atof(argv[3]) : 25;
  torch::manual_seed(0);
  auto model = make_model(mc, {2});
  int64_t n = 0;
  for (auto& p : model->parameters()) n += p.numel();
  GradBuckets buckets(model->parameters(), bucket_mb);
  const TrainSample batch{torch::randn({256, 2}), torch::rand({256, 1}) * 5 + 0.01, torch::randn({256, 2})};
  auto raw = torch::randn({n + 16});  // the gradients and bucket 0's lead of extras (one cache line)
  std::vector<double> blocking, overlapped, fenced, raw_on_grads, plain, backward_blocking, backward_overlapped;
  for (int i = 0; i < iterations; ++i) {
    for (bool overlap : {false, true}) {
      buckets.zero_grad();
      const auto loss = training_loss(*model, Parameterization::eps, batch);
      auto extras = torch::zeros({1});
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = Clock::now();
      if (overlap) buckets.arm(*comm);
      loss.backward();
      (overlap ? backward_overlapped : backward_blocking).push_back(seconds_since(t0));
      t0 = Clock::now();
      buckets.allreduce_sum(*comm, extras);
      (overlap ? overlapped : blocking).push_back(seconds_since(t0));
    }
    // The gradient all-reduce alone, and one raw call on the same memory, each right after a
    // backward and a barrier; their order alternates, so neither always goes first.
    for (int k = 0; k < 2; ++k) {
      buckets.zero_grad();
      training_loss(*model, Parameterization::eps, batch).backward();
      auto extras = torch::zeros({1});
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = Clock::now();
      if ((i + k) % 2 == 0) {
        buckets.allreduce_sum(*comm, extras);
        fenced.push_back(seconds_since(t0));
      } else {
        // The very bytes the gradient all-reduce sends: bucket 0's lead of extras and every gradient.
        const auto g = buckets.flat_grads();
        float* first = buckets.extras().data_ptr<float>();
        const auto count = static_cast<int>(g.data_ptr<float>() + g.numel() - first);
        MPI_Allreduce(MPI_IN_PLACE, first, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        raw_on_grads.push_back(seconds_since(t0));
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = Clock::now();
    MPI_Allreduce(MPI_IN_PLACE, raw.data_ptr(), static_cast<int>(raw.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    plain.push_back(seconds_since(t0));
  }
  if (comm->rank() == 0) {
    const double b = median(blocking), o = median(overlapped), f = median(fenced), r = median(plain);
    fmt::print("{{\"ranks\": {}, \"floats\": {}, \"buckets\": {}, \"iterations\": {}, \"backward_us\": {:.1f}, "
               "\"backward_armed_us\": {:.1f}, \"exposed_sync_blocking_us\": {:.2f}, "
               "\"exposed_sync_overlapped_us\": {:.2f}, \"fenced_allreduce_us\": {:.2f}, \"raw_allreduce_us\": {:.2f}, "
               "\"blocking_over_raw\": {:.3f}, \"overlapped_over_raw\": {:.3f}, \"fenced_over_raw\": {:.3f}, "
               "\"raw_on_gradients_us\": {:.2f}}}\n",
               comm->size(), raw.numel(), buckets.num_buckets(), iterations, median(backward_blocking) * 1e6,
               median(backward_overlapped) * 1e6, b * 1e6, o * 1e6, f * 1e6, r * 1e6, b / r, o / r, f / r, median(raw_on_grads) * 1e6);

  }
  return 0;
}
