#pragma once
// Collectives over NCCL on this rank's GPU, bootstrapped by MPI. Built wherever the CUDA
// toolkit and nccl.h are found (DIFFTRAIN_WITH_NCCL); it needs only the CUDA runtime, so it
// compiles against a CPU-only LibTorch too. Torch tensors on the GPU need a CUDA LibTorch.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "difftrain/comm/communicator.h"
#include "difftrain/comm/mpi_communicator.h"

namespace difftrain {

// GPUs the CUDA runtime sees (0 without a driver: cudaGetDeviceCount's error 35).
int cuda_device_count();

class NcclCommunicator : public Communicator {
 public:
  // Collective over MPI_COMM_WORLD (MPI initialised). Binds this rank to GPU local_rank
  // (cudaSetDevice, before anything else touches CUDA); then rank 0 makes the
  // ncclUniqueId, MPI broadcasts it and every rank joins. A node with fewer GPUs than
  // local ranks is an error on every rank, agreed over MPI before any NCCL call, so no
  // rank waits in ncclCommInitRank for one that never comes.
  explicit NcclCommunicator(double timeout_s = 600);
  // ncclCommDestroy when every collective finished cleanly; ncclCommAbort otherwise (a
  // failed or timed-out collective, an exception on the way out), which never waits.
  ~NcclCommunicator() override;

  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  int local_rank() const override { return mpi_.local_rank(); }
  int local_size() const override { return mpi_.local_size(); }
  std::string backend() const override { return "nccl"; }
  torch::Device device() const override { return {torch::kCUDA, static_cast<c10::DeviceIndex>(device_)}; }

  // GPU tensors are reduced in place on the communication stream, between what LibTorch's
  // current stream queued before and after the call (events); the host does not wait. CPU
  // tensors go through the GPU and are back in place when the call returns.
  void allreduce_sum(torch::Tensor& t) override;
  void allreduce_max(torch::Tensor& t) override;
  // On a communication stream of its own, after what LibTorch's current stream has queued so
  // far (an event); wait() makes the then-current stream wait for it, the host never does.
  // The autograd engine's GPU thread may start it (gradient buckets during backward).
  std::unique_ptr<PendingCollective> start_allreduce_sum(torch::Tensor& t) override;
  bool starts_from_any_thread() const override { return true; }
  void broadcast(torch::Tensor& t, int root) override;
  void barrier() override;
  void watch_device_work(const char* what) override;
  [[noreturn]] void abort(int code) override;

  // The same on raw device memory and a stream of the caller's: what runs without a CUDA
  // LibTorch (the tests on this build).
  void allreduce(void* data, size_t count, ncclDataType_t type, ncclRedOp_t op, cudaStream_t stream);
  void broadcast(void* data, size_t count, ncclDataType_t type, int root, cudaStream_t stream);
  // Blocks until every collective enqueued so far finished (or the watchdog ends the job).
  void synchronize();

  ncclComm_t comm() const { return comm_; }

 private:
  MpiCommunicator mpi_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  double timeout_s_;
  // The watchdog: the last collective's completion event and when it was enqueued. A
  // thread polls the event and ncclCommGetAsyncError; a collective unfinished after
  // timeout_s, or an asynchronous NCCL error, aborts the communicator and ends the process.
  std::mutex mutex_;
  std::condition_variable cv_;
  cudaEvent_t done_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // every collective's (see on_comm_stream)
  cudaEvent_t forked_ = nullptr, joined_ = nullptr;
  int64_t enqueued_ns_ = 0;  // 0: nothing in flight
  const char* what_ = "";
  bool stop_ = false;
  std::atomic<bool> healthy_{true};
  std::thread watcher_;

  void enqueued(const char* what, cudaStream_t stream);
  void watch();
  void stop_watcher();
  void on_comm_stream(const std::function<void(cudaStream_t)>& enqueue);
  void tensor_collective(torch::Tensor& t, const char* what, const std::function<void(void*, cudaStream_t)>& run);
};

// LibTorch's current CUDA stream on the current device: a CUDA LibTorch answers it
// (comm/torch_cuda_stream.cpp); any other build has no GPU tensors, and answers the
// default stream.
cudaStream_t torch_current_stream();

}  // namespace difftrain
