#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "difftrain/comm/communicator.h"
#include "difftrain/comm/watchdog.h"

namespace difftrain {

// Collectives over MPI_COMM_WORLD on CPU tensors.
class MpiCommunicator : public Communicator {
 public:
  // Requires MPI to be initialised. Every collective is bounded by `timeout_s`.
  explicit MpiCommunicator(double timeout_s = 600);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend() const override { return "mpi"; }
  torch::Device device() const override { return torch::kCPU; }
  void allreduce_sum(torch::Tensor& t) override;
  void allreduce_max(torch::Tensor& t) override;
  // MPI_Iallreduce; test() calls MPI_Test, wait() MPI_Wait under the watchdog.
  std::unique_ptr<PendingCollective> start_allreduce_sum(torch::Tensor& t) override;
  void broadcast(torch::Tensor& t, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int code) override;

  CollectiveWatchdog* watchdog() const { return watchdog_.get(); }  // null in a world of one

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
  void allreduce(torch::Tensor& t, MPI_Op op);
};

// Before the first collective of a backend, over MPI_COMM_WORLD: every rank calls it with
// its own error ("" when it has none); when some rank has one, every rank throws the
// lowest failing rank's message, prefixed "rank R: ", as an AgreedError (rank 0 reports it,
// once). Bounded by `watchdog` when given.
void agree_over_mpi(const std::string& error, CollectiveWatchdog* watchdog = nullptr);

// MPI_Init_thread once (MPI_THREAD_FUNNELED) and MPI_Finalize at exit; idempotent.
void ensure_mpi_initialized();

}  // namespace difftrain
