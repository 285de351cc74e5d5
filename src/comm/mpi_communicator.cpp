#include "difftrain/comm/mpi_communicator.h"

#include <cstdio>
#include <cstdlib>

#include "difftrain/comm/agreement.h"
#include "difftrain/error.h"

namespace difftrain {

namespace {
// Whether a launcher started this process (mpirun, srun, or another PMI/PMIx server).
bool launched() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_FD"})
    if (std::getenv(variable)) return true;
  return false;
}
}  // namespace

void ensure_mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  // Started alone, Open MPI would fork a daemon for this one process: 0.2 s of every start
  // without mpirun (the quickstart's whole 3000-step run takes 4.4 s). A process that never
  // spawns others needs none. A value set by the user wins; other MPIs ignore the variable.
  if (!launched()) setenv("OMPI_MCA_ess_singleton_isolated", "1", /*overwrite=*/0);
  int provided = 0;
  // Only the main thread calls MPI; the data loader's thread never does.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  // Errors come back as codes we turn into messages, instead of MPI aborting silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit([] {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  });
}

void agree_over_mpi(const std::string& error, CollectiveWatchdog* watchdog) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int64_t> none;
  const auto failing = static_cast<int>(lowest_failing_rank(rank, size, !error.empty(), none, [&](std::vector<int64_t>& v) {
    CollectiveWatchdog::Scope watched(watchdog, "MPI_Allreduce (agreeing on errors)");
    MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  }));
  if (failing < 0) return;
  char text[512] = {};
  if (rank == failing) std::snprintf(text, sizeof text, "%s", error.c_str());
  {
    CollectiveWatchdog::Scope watched(watchdog, "MPI_Bcast (the error)");
    MPI_Bcast(text, sizeof text, MPI_CHAR, failing, MPI_COMM_WORLD);
  }
  throw AgreedError(fmt::format("rank {}: {}", failing, text));
}

namespace {

MPI_Datatype mpi_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kUInt8: return MPI_UINT8_T;
    default: fail("mpi: unsupported dtype {}", std::string(t.dtype().name()));
  }
}

void check(int rc, const char* what, int rank) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("rank {}: {} failed: {}", rank, what, std::string(text, len));
}

void check_tensor(const torch::Tensor& t, int rank) {
  if (!t.is_contiguous() || !t.device().is_cpu())
    fail("rank {}: mpi collectives need contiguous CPU tensors", rank);
}

}  // namespace

MpiCommunicator::MpiCommunicator(double timeout_s) {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  if (size_ > 1) watchdog_ = std::make_unique<CollectiveWatchdog>(rank_, timeout_s);
  // Ranks sharing a node (shared memory) form one group; works the same under srun.
  MPI_Comm node;
  {
    CollectiveWatchdog::Scope watched(watchdog_.get(), "MPI_Comm_split_type");
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  }
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

void MpiCommunicator::allreduce(torch::Tensor& t, MPI_Op op) {
  check_tensor(t, rank_);
  CollectiveWatchdog::Scope watched(watchdog_.get(), "MPI_Allreduce");
  check(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t), op, MPI_COMM_WORLD),
        "MPI_Allreduce", rank_);
}

void MpiCommunicator::allreduce_sum(torch::Tensor& t) { allreduce(t, MPI_SUM); }

namespace {
class MpiPending : public PendingCollective {
 public:
  MpiPending(MPI_Request request, CollectiveWatchdog* watchdog, int rank)
      : request_(request), watchdog_(watchdog), rank_(rank) {}
  // An unfinished request must not be dropped: MPI would still write into the tensor.
  ~MpiPending() override {
    if (request_ != MPI_REQUEST_NULL) {
      CollectiveWatchdog::Scope watched(watchdog_, "MPI_Iallreduce");
      MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    check(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), "MPI_Test (MPI_Iallreduce)", rank_);
    return done != 0;
  }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    CollectiveWatchdog::Scope watched(watchdog_, "MPI_Iallreduce");
    check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait (MPI_Iallreduce)", rank_);
  }

 private:
  MPI_Request request_;
  CollectiveWatchdog* watchdog_;
  int rank_;
};
}  // namespace

std::unique_ptr<PendingCollective> MpiCommunicator::start_allreduce_sum(torch::Tensor& t) {
  check_tensor(t, rank_);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t), MPI_SUM, MPI_COMM_WORLD,
                       &request),
        "MPI_Iallreduce", rank_);
  return std::make_unique<MpiPending>(request, watchdog_.get(), rank_);
}
void MpiCommunicator::allreduce_max(torch::Tensor& t) { allreduce(t, MPI_MAX); }

void MpiCommunicator::broadcast(torch::Tensor& t, int root) {
  check_tensor(t, rank_);
  CollectiveWatchdog::Scope watched(watchdog_.get(), "MPI_Bcast");
  check(MPI_Bcast(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t), root, MPI_COMM_WORLD), "MPI_Bcast",
        rank_);
}

void MpiCommunicator::barrier() {
  CollectiveWatchdog::Scope watched(watchdog_.get(), "MPI_Barrier");
  check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier", rank_);
}

void MpiCommunicator::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace difftrain
