#include "difftrain/comm/nccl_communicator.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <exception>

#include <fmt/format.h>

#include "difftrain/error.h"

namespace difftrain {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void check_cuda(cudaError_t rc, int rank, const char* what) {
  if (rc != cudaSuccess) fail("rank {}: {} failed: {}", rank, what, cudaGetErrorString(rc));
}

ncclDataType_t nccl_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kHalf: return ncclFloat16;
    case torch::kInt64: return ncclInt64;
    case torch::kInt32: return ncclInt32;
    case torch::kUInt8: return ncclUint8;
    default: fail("nccl: unsupported dtype {}", std::string(t.dtype().name()));
  }
}

// Whether `stream` is being recorded into a CUDA graph: its work then does not run (and its
// events may not be queried) until a replay.
bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it: no driver means no GPU here, not a sticky error
    return 0;
  }
  return n;
}

#ifndef DIFFTRAIN_TORCH_CUDA
cudaStream_t torch_current_stream() { return nullptr; }
#endif

NcclCommunicator::NcclCommunicator(double timeout_s) : mpi_(timeout_s), timeout_s_(timeout_s) {
  const int rank = mpi_.rank(), size = mpi_.size();
  ncclUniqueId id{};
  std::string error;
  char bus[64] = {};  // the PCI bus id of this rank's GPU
  try {
    const int gpus = cuda_device_count(), local = mpi_.local_rank(), on_node = mpi_.local_size();
    if (gpus == 0) fail("dist.backend nccl: no GPU is visible on this node (no GPU, or no driver)");
    // One GPU per local rank; a rank that sees a single GPU (srun --gpus-per-task=1 shows
    // each task only its own) takes it, and the check below catches ranks that share one.
    if (gpus < on_node && gpus > 1)
      fail("dist.backend nccl: this node has {} GPUs for {} ranks; start at most {} ranks per node, one per GPU", gpus,
           on_node, gpus);
    device_ = gpus >= on_node ? local : 0;
    const cudaError_t rc = cudaDeviceGetPCIBusId(bus, sizeof bus - 1, device_);
    if (rc != cudaSuccess) fail("GPU {}: {}", device_, cudaGetErrorString(rc));
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  // Every rank of the node learns every rank's GPU: two ranks on one GPU is an error.
  MPI_Comm node;
  std::vector<char> buses(sizeof bus * static_cast<size_t>(mpi_.local_size()));
  {
    CollectiveWatchdog::Scope watched(mpi_.watchdog(), "MPI_Allgather (GPU bus ids)");
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Allgather(bus, sizeof bus, MPI_CHAR, buses.data(), sizeof bus, MPI_CHAR, node);
  }
  MPI_Comm_free(&node);
  for (int a = 0; error.empty() && a < mpi_.local_size(); ++a)
    for (int b = a + 1; error.empty() && b < mpi_.local_size(); ++b) {
      const char *x = &buses[sizeof bus * a], *y = &buses[sizeof bus * b];
      if (*x && std::strcmp(x, y) == 0)
        error = fmt::format(
            "dist.backend nccl: this node has {} GPU{} for {} ranks: its ranks {} and {} would share GPU {}; start at "
            "most one rank per GPU",
            cuda_device_count(), cuda_device_count() == 1 ? "" : "s", mpi_.local_size(), a, b, x);
    }
  try {
    if (error.empty()) {
      cudaError_t rc = cudaSetDevice(device_);
      if (rc == cudaSuccess) rc = cudaEventCreateWithFlags(&done_, cudaEventDisableTiming);
      if (rc == cudaSuccess) rc = cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming);
      if (rc == cudaSuccess) rc = cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming);
      if (rc == cudaSuccess) rc = cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking);
      if (rc != cudaSuccess) fail("GPU {}: {}", device_, cudaGetErrorString(rc));
      if (rank == 0) {
        const ncclResult_t nrc = ncclGetUniqueId(&id);
        if (nrc != ncclSuccess) fail("ncclGetUniqueId failed: {}", ncclGetErrorString(nrc));
      }
    }
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  agree_over_mpi(error, mpi_.watchdog());  // before any NCCL call: no rank waits in ncclCommInitRank alone
  {
    CollectiveWatchdog::Scope watched(mpi_.watchdog(), "MPI_Bcast (ncclUniqueId)");
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  }

  // The watchdog bounds the communicator's creation too: a peer that never joins ends this
  // rank after timeout_s instead of holding it forever.
  watcher_ = std::thread(&NcclCommunicator::watch, this);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    enqueued_ns_ = now_ns(), what_ = "ncclCommInitRank";
  }
  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&comm, size, id, rank);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    enqueued_ns_ = 0;
    if (rc == ncclSuccess) comm_ = comm;
  }
  if (rc != ncclSuccess) {
    healthy_ = false;
    stop_watcher();  // a constructor that throws runs no destructor
    fail("rank {}: ncclCommInitRank failed: {}", rank, ncclGetErrorString(rc));
  }
}

void NcclCommunicator::stop_watcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

NcclCommunicator::~NcclCommunicator() {
  stop_watcher();
  if (comm_) {
    ncclResult_t async = ncclSuccess;
    const bool clean = healthy_ && std::uncaught_exceptions() == 0 &&
                       ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async == ncclSuccess &&
                       cudaEventQuery(done_) == cudaSuccess;
    if (clean)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  if (done_) cudaEventDestroy(done_);
  if (forked_) cudaEventDestroy(forked_);
  if (joined_) cudaEventDestroy(joined_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
}

void NcclCommunicator::watch() {
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (stop_) break;
    std::string problem;
    ncclResult_t async = ncclSuccess;
    if (comm_ && ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
      problem = fmt::format("{}: NCCL reported an asynchronous error: {}", what_, ncclGetErrorString(async));
    if (problem.empty() && enqueued_ns_ != 0) {
      const cudaError_t state = comm_ ? cudaEventQuery(done_) : cudaErrorNotReady;
      if (state == cudaSuccess) {
        enqueued_ns_ = 0;
      } else if (state != cudaErrorNotReady) {
        problem = fmt::format("{}: the GPU reported {}", what_, cudaGetErrorString(state));
      } else if (now_ns() - enqueued_ns_ > static_cast<int64_t>(timeout_s_ * 1e9)) {
        problem = fmt::format("{} did not finish within dist.timeout_s = {} s (a peer died or hangs)", what_, timeout_s_);
      }
    }
    if (problem.empty()) continue;
    // Ends this process; the launcher then ends its peers. Abort first, so that no NCCL
    // kernel keeps the GPU busy after we are gone.
    healthy_ = false;
    std::fprintf(stderr, "difftrain: error: rank %d: %s; aborting\n", mpi_.rank(), problem.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    std::_Exit(1);
  }
}

void NcclCommunicator::enqueued(const char* what, cudaStream_t stream) {
  if (capturing(stream)) return;  // watched at each replay instead (watch_device_work)
  std::lock_guard<std::mutex> lock(mutex_);
  check_cuda(cudaEventRecord(done_, stream), rank(), "cudaEventRecord");
  enqueued_ns_ = now_ns(), what_ = what;
}

void NcclCommunicator::allreduce(void* data, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                 cudaStream_t stream) {
  const ncclResult_t rc = ncclAllReduce(data, data, count, type, op, comm_, stream);
  if (rc != ncclSuccess) {
    healthy_ = false;
    fail("rank {}: ncclAllReduce failed: {}", rank(), ncclGetErrorString(rc));
  }
  enqueued("ncclAllReduce", stream);
}

void NcclCommunicator::broadcast(void* data, size_t count, ncclDataType_t type, int root, cudaStream_t stream) {
  const ncclResult_t rc = ncclBroadcast(data, data, count, type, root, comm_, stream);
  if (rc != ncclSuccess) {
    healthy_ = false;
    fail("rank {}: ncclBroadcast failed: {}", rank(), ncclGetErrorString(rc));
  }
  enqueued("ncclBroadcast", stream);
}

void NcclCommunicator::synchronize() { check_cuda(cudaDeviceSynchronize(), rank(), "cudaDeviceSynchronize"); }

// Every collective of this communicator runs on its one stream, in the order it was called,
// which is the same on every rank: on two streams the GPU (or a replayed CUDA graph) could
// run two of them in either order, and ranks that disagree on the order deadlock.
void NcclCommunicator::on_comm_stream(const std::function<void(cudaStream_t)>& enqueue) {
  const cudaStream_t caller = torch_current_stream();
  check_cuda(cudaEventRecord(forked_, caller), rank(), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(comm_stream_, forked_, 0), rank(), "cudaStreamWaitEvent");
  enqueue(comm_stream_);
  check_cuda(cudaEventRecord(joined_, comm_stream_), rank(), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(caller, joined_, 0), rank(), "cudaStreamWaitEvent");
}

void NcclCommunicator::tensor_collective(torch::Tensor& t, const char* what,
                                         const std::function<void(void*, cudaStream_t)>& run) {
  if (t.is_cuda()) {
    if (!t.is_contiguous() || t.device().index() != device_)
      fail("rank {}: {} needs a contiguous tensor on cuda:{}, got {}", rank(), what, device_, t.device().str());
    on_comm_stream([&](cudaStream_t s) { run(t.data_ptr(), s); });
    return;
  }
  // Small host values (flags, headers, statistics) go through the GPU and come back.
  auto staged = t.contiguous().to(device());
  on_comm_stream([&](cudaStream_t s) { run(staged.data_ptr(), s); });
  t.copy_(staged.cpu());
}

void NcclCommunicator::allreduce_sum(torch::Tensor& t) {
  tensor_collective(t, "ncclAllReduce",
                    [&](void* p, cudaStream_t s) { allreduce(p, t.numel(), nccl_type(t), ncclSum, s); });
}

namespace {
// An event on the communication stream after the collective; wait() orders the caller's
// current stream after it.
class NcclPending : public PendingCollective {
 public:
  NcclPending(cudaEvent_t finished, bool captured, int rank) : finished_(finished), captured_(captured), rank_(rank) {}
  ~NcclPending() override { cudaEventDestroy(finished_); }  // released by CUDA once it fired
  // An event recorded inside a capture may not be queried; nothing ran yet anyway.
  bool test() override { return !captured_ && cudaEventQuery(finished_) == cudaSuccess; }
  void wait() override { check_cuda(cudaStreamWaitEvent(torch_current_stream(), finished_, 0), rank_, "cudaStreamWaitEvent"); }

 private:
  cudaEvent_t finished_;
  bool captured_;
  int rank_;
};
}  // namespace

std::unique_ptr<PendingCollective> NcclCommunicator::start_allreduce_sum(torch::Tensor& t) {
  if (!t.is_cuda()) return Communicator::start_allreduce_sum(t);
  if (!t.is_contiguous() || t.device().index() != device_)
    fail("rank {}: ncclAllReduce needs a contiguous tensor on cuda:{}, got {}", rank(), device_, t.device().str());
  cudaEvent_t ready = nullptr, finished = nullptr;
  check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), rank(), "cudaEventCreate");
  check_cuda(cudaEventRecord(ready, torch_current_stream()), rank(), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(comm_stream_, ready, 0), rank(), "cudaStreamWaitEvent");
  cudaEventDestroy(ready);
  allreduce(t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t), ncclSum, comm_stream_);
  check_cuda(cudaEventCreateWithFlags(&finished, cudaEventDisableTiming), rank(), "cudaEventCreate");
  check_cuda(cudaEventRecord(finished, comm_stream_), rank(), "cudaEventRecord");
  return std::make_unique<NcclPending>(finished, capturing(comm_stream_), rank());
}

void NcclCommunicator::allreduce_max(torch::Tensor& t) {
  tensor_collective(t, "ncclAllReduce",
                    [&](void* p, cudaStream_t s) { allreduce(p, t.numel(), nccl_type(t), ncclMax, s); });
}

void NcclCommunicator::broadcast(torch::Tensor& t, int root) {
  tensor_collective(t, "ncclBroadcast",
                    [&](void* p, cudaStream_t s) { broadcast(p, t.numel(), nccl_type(t), root, s); });
}

void NcclCommunicator::watch_device_work(const char* what) { enqueued(what, torch_current_stream()); }

void NcclCommunicator::barrier() {
  synchronize();
  mpi_.barrier();
}

void NcclCommunicator::abort(int code) {
  healthy_ = false;
  if (comm_) ncclCommAbort(comm_), comm_ = nullptr;
  mpi_.abort(code);
}

}  // namespace difftrain
