#pragma once
// The trainer's only view of the other ranks: collectives every rank calls in the same
// order, blocking or started (below); backends (MPI on CPUs, NCCL on GPUs) implement it.
#include <memory>
#include <string>

#include <torch/torch.h>

#include "difftrain/comm/backend.h"

namespace difftrain {

// A collective that was started and may still be running.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // Lets it progress (MPI advances a non-blocking collective only inside MPI calls) and
  // says whether it finished. Never blocks.
  virtual bool test() = 0;
  // Returns once the result may be used: on the host, when it is there; on a GPU, once the
  // caller's stream is ordered after it (no host wait).
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank within this node: picks the GPU
  virtual int local_size() const = 0;  // ranks on this node
  virtual std::string backend() const = 0;
  // The device this rank's tensors live on (CPU for MPI, cuda:local_rank for NCCL).
  virtual torch::Device device() const = 0;

  // In place, over all ranks. `t` is contiguous and on device().
  virtual void allreduce_sum(torch::Tensor& t) = 0;
  virtual void allreduce_max(torch::Tensor& t) = 0;
  // allreduce_sum without waiting for it: `t` must stay alive and untouched until the
  // handle's wait(). Every rank starts the same collectives in the same order. The default
  // finishes the collective before it returns.
  virtual std::unique_ptr<PendingCollective> start_allreduce_sum(torch::Tensor& t);
  // Whether start_allreduce_sum may be called from a thread other than the one that made
  // the communicator (the autograd engine's, for GPU tensors).
  virtual bool starts_from_any_thread() const { return false; }
  virtual void broadcast(torch::Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Collectives this rank queued on its device without running them through the
  // communicator (a replayed CUDA graph's) are watched from here on like its own: not done
  // within the timeout, the process ends. Nothing to do where collectives block the host.
  virtual void watch_device_work(const char* /*what*/) {}
  // Ends every rank of the job with `code`, from any one rank, without waiting for others.
  [[noreturn]] virtual void abort(int code) = 0;
};

// What decides the backend on this node.
struct BackendFacts {
  bool nccl_built = false;  // this build has the NCCL communicator
  int torch_gpus = 0;       // GPUs LibTorch can use (0 with a CPU-only LibTorch)
  int runtime_gpus = 0;     // GPUs the CUDA runtime sees
};
BackendFacts backend_facts();

// auto: nccl when this build has NCCL and LibTorch sees a GPU, else mpi. nccl where that is
// impossible is an error saying why; mpi is always possible.
Backend choose_backend(Backend requested, const BackendFacts& facts);

// Where `sample` and `eval` run (`--device`): "auto" is this rank's GPU (cuda:local_rank,
// or cuda:0 when the rank sees a single GPU) when LibTorch can use one, else the CPU; "cpu";
// "cuda" (the same GPU as auto, or an error saying why there is none); "cuda:K". `option`
// names the option in errors.
torch::Device choose_device(const std::string& requested, int local_rank, const BackendFacts& facts,
                            const std::string& option = "--device");

// MPI is initialised once per process, here, and finalised at exit. Works with or without
// mpirun/srun (a run without a launcher is a world of one). Every rank must arrive at the
// same backend (a job whose nodes differ is an error on every rank).
// A collective still blocked after `timeout_s` ends this process with status 1 (its peers
// are then ended by the launcher), so a dead or hung rank never holds an allocation.
std::unique_ptr<Communicator> make_communicator(Backend backend, double timeout_s = 600);

}  // namespace difftrain
