#include "difftrain/comm/communicator.h"

#include "difftrain/comm/mpi_communicator.h"
#include "difftrain/error.h"
#ifdef DIFFTRAIN_WITH_NCCL
#include "difftrain/comm/nccl_communicator.h"
#endif

namespace difftrain {

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

std::unique_ptr<Communicator> make_communicator(const std::string& backend, double timeout_s) {
  ensure_mpi_initialized();
  std::string chosen, error;
  try {
    chosen = choose_backend(backend, backend_facts());
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  // Agreed before any collective of the chosen backend.
  agree_over_mpi(error);
  int votes[2] = {chosen == "nccl", chosen == "mpi"};
  MPI_Allreduce(MPI_IN_PLACE, votes, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
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
