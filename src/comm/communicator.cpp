#include "difftrain/comm/communicator.h"

#include <optional>

#include "difftrain/comm/mpi_communicator.h"
#include "difftrain/error.h"
#ifdef DIFFTRAIN_WITH_NCCL
#include "difftrain/comm/nccl_communicator.h"
#endif

namespace difftrain {

namespace {
struct Finished : PendingCollective {
  bool test() override { return true; }
  void wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Communicator::start_allreduce_sum(torch::Tensor& t) {
  allreduce_sum(t);
  return std::make_unique<Finished>();
}

BackendFacts backend_facts() {
  BackendFacts facts;
  facts.torch_gpus = static_cast<int>(torch::cuda::device_count());
#ifdef DIFFTRAIN_WITH_NCCL
  facts.nccl_built = true;
  facts.runtime_gpus = cuda_device_count();
#endif
  return facts;
}

std::string choose_backend(const std::string& requested, const BackendFacts& facts) {
  if (requested == "mpi") return "mpi";
  if (requested == "auto") return facts.nccl_built && facts.torch_gpus > 0 ? "nccl" : "mpi";
  if (requested != "nccl") fail("config: key 'dist.backend': expected one of auto, mpi, nccl; got '{}'", requested);
  const char* instead = "; use 'mpi' (or 'auto', which picks it here)";
  if (!facts.nccl_built)
    fail("config: key 'dist.backend': 'nccl' is not in this build (CMake found no CUDA toolkit with nccl.h; see the "
         "README, Building for GPUs){}",
         instead);
  if (facts.torch_gpus == 0 && facts.runtime_gpus > 0)
    fail("config: key 'dist.backend': 'nccl' needs a CUDA LibTorch, and this build's LibTorch is CPU-only (the CUDA "
         "runtime sees {} GPU{}){}",
         facts.runtime_gpus, facts.runtime_gpus == 1 ? "" : "s", instead);
  if (facts.torch_gpus == 0)
    fail("config: key 'dist.backend': 'nccl' needs a GPU, and none is visible on this node (no GPU, or no driver){}",
         instead);
  return "nccl";
}

torch::Device choose_device(const std::string& requested, int local_rank, const BackendFacts& facts,
                            const std::string& option) {
  const int gpus = facts.torch_gpus;
  const int mine = gpus == 1 ? 0 : local_rank;
  if (requested == "cpu") return torch::kCPU;
  if (requested == "auto") return gpus > mine ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(mine)) : torch::kCPU;
  int index = mine;
  if (requested.rfind("cuda:", 0) == 0) {
    std::size_t used = 0;
    try {
      index = std::stoi(requested.substr(5), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != requested.size() - 5 || index < 0)
      fail("{}: expected auto, cpu, cuda or cuda:K, got '{}'", option, abbreviate(requested));
  } else if (requested != "cuda") {
    fail("{}: expected auto, cpu, cuda or cuda:K, got '{}'", option, abbreviate(requested));
  }
  if (gpus == 0)
    fail("{} {}: {}", option, requested,
         facts.runtime_gpus > 0 ? fmt::format("this build's LibTorch is CPU-only (the CUDA runtime sees {} GPU{})",
                                              facts.runtime_gpus, facts.runtime_gpus == 1 ? "" : "s")
                                : std::string("no GPU is visible on this node (no GPU, or no driver)"));
  if (index >= gpus)
    fail("{} {}: this node has {} GPU{} for LibTorch{}", option, requested, gpus, gpus == 1 ? "" : "s",
         requested == "cuda" ? fmt::format(", and this is local rank {}", local_rank) : "");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::unique_ptr<Communicator> make_communicator(const std::string& backend, double timeout_s) {
  ensure_mpi_initialized();
  std::string chosen, error;
  try {
    chosen = choose_backend(backend, backend_facts());
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // The bootstrap's own collectives are bounded like every later one.
  std::optional<CollectiveWatchdog> watchdog;
  if (size > 1) watchdog.emplace(rank, timeout_s);
  CollectiveWatchdog* watching = watchdog ? &*watchdog : nullptr;
  // Agreed before any collective of the chosen backend.
  agree_over_mpi(error, watching);
  int votes[2] = {chosen == "nccl", chosen == "mpi"};
  {
    CollectiveWatchdog::Scope watched(watching, "MPI_Allreduce (backend vote)");
    MPI_Allreduce(MPI_IN_PLACE, votes, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  }
  if (votes[0] && votes[1])
    fail("dist.backend '{}': some ranks chose nccl and others mpi (nodes with and without GPUs); set "
         "dist.backend: mpi, or run on nodes alike",
         backend);
#ifdef DIFFTRAIN_WITH_NCCL
  if (chosen == "nccl") return std::make_unique<NcclCommunicator>(timeout_s);
#endif
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace difftrain
