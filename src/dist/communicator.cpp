#include "difftrain/dist/communicator.h"

#include "difftrain/dist/mpi_communicator.h"
#include "difftrain/error.h"

namespace difftrain {

std::unique_ptr<Communicator> make_communicator(const std::string& backend, double timeout_s) {
  ensure_mpi_initialized();
  if (backend == "nccl") {
    // The NCCL backend (bootstrapped over MPI) lands with the GPU path; until then asking
    // for it is an error rather than a silent fall-back to MPI.
    fail("config: key 'dist.backend': 'nccl' is not available in this build (CPU only); use 'mpi' or 'auto'");
  }
  if (backend != "auto" && backend != "mpi")
    fail("config: key 'dist.backend': expected one of auto, mpi, nccl; got '{}'", backend);
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace difftrain
