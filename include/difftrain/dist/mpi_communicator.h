#pragma once
#include <mpi.h>

#include <memory>

#include "difftrain/dist/communicator.h"
#include "difftrain/dist/watchdog.h"

namespace difftrain {

// Collectives over MPI_COMM_WORLD on CPU tensors.
class MpiCommunicator : public Communicator {
 public:
  // Requires MPI to be initialised. Every collective is bounded by `timeout_s`.
  explicit MpiCommunicator(double timeout_s = 600);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }
  torch::Device device() const override { return torch::kCPU; }
  void allreduce_sum(torch::Tensor& t) override;
  void allreduce_max(torch::Tensor& t) override;
  void broadcast(torch::Tensor& t, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int code) override;

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
  void allreduce(torch::Tensor& t, MPI_Op op);
};

// MPI_Init_thread once (MPI_THREAD_FUNNELED) and MPI_Finalize at exit; idempotent.
void ensure_mpi_initialized();

}  // namespace difftrain
