// Gradient-sync cost against the floor: GradBuckets::allreduce_mean on a model's gradients
// (pack, all-reduce per bucket, scale, unpack) side by side with one raw MPI_Allreduce of
// the same number of bytes, interleaved in one run so both see the same machine.
//
//   mpirun -n 2 build/tests/bench_grad_sync [hidden_width] [iterations]
//
// The default model is the toy recipe's MLP (16,128,128,128,128,16); a width sets every
// hidden layer, for a bigger gradient.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "difftrain/config.h"
#include "difftrain/comm/communicator.h"
#include "difftrain/comm/grad_buckets.h"
#include "difftrain/models/registry.h"

using namespace difftrain;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  auto comm = make_communicator("mpi");
  ModelConfig mc;
  if (argc > 1) mc.hidden_dims = std::vector<int64_t>(6, std::atoll(argv[1]));
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 2000;
  torch::manual_seed(0);
  auto model = make_model(mc, {2});
  int64_t n = 0;
  for (auto& p : model->parameters()) {
    p.mutable_grad() = torch::randn_like(p);
    n += p.numel();
  }
  GradBuckets buckets(model->parameters(), 25);
  auto extras = torch::zeros({1});
  auto raw = torch::randn({n + 1});
  std::vector<double> bucketed, plain;
  for (int i = 0; i < iterations; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    auto t0 = Clock::now();
    buckets.allreduce_mean(*comm, extras);
    bucketed.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = Clock::now();
    MPI_Allreduce(MPI_IN_PLACE, raw.data_ptr(), static_cast<int>(raw.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    plain.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  if (comm->rank() == 0) {
    const double b = median(bucketed), r = median(plain);
    fmt::print("{{\"ranks\": {}, \"floats\": {}, \"buckets\": {}, \"iterations\": {}, \"grad_sync_us\": {:.2f}, "
               "\"raw_allreduce_us\": {:.2f}, \"ratio\": {:.3f}}}\n",
               comm->size(), n + 1, buckets.num_buckets(), iterations, b * 1e6, r * 1e6, b / r);
  }
  return 0;
}
