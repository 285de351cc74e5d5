#include "difftrain/comm/communicator.h"

#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

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

namespace {

const char* const kUseMpiInstead = "; use 'mpi' (or 'auto', which picks it here)";

// Why NCCL cannot run here, or nothing.
std::optional<std::string> nccl_unavailable(const BackendFacts& facts) {
  if (!facts.nccl_built)
    return fmt::format("'nccl' is not in this build (CMake found no CUDA toolkit with nccl.h; see the README, "
                       "Building for GPUs){}",
                       kUseMpiInstead);
  if (facts.torch_gpus == 0 && facts.runtime_gpus > 0)
    return fmt::format("'nccl' needs a CUDA LibTorch, and this build's LibTorch is CPU-only (the CUDA runtime sees {} "
                       "GPU{}){}",
                       facts.runtime_gpus, facts.runtime_gpus == 1 ? "" : "s", kUseMpiInstead);
  if (facts.torch_gpus == 0)
    return fmt::format("'nccl' needs a GPU, and none is visible on this node (no GPU, or no driver){}", kUseMpiInstead);
  return std::nullopt;
}

std::unique_ptr<Communicator> make_nccl([[maybe_unused]] double timeout_s) {
#ifdef DIFFTRAIN_WITH_NCCL
  return std::make_unique<NcclCommunicator>(timeout_s);
#else
  fail("make_communicator: this build has no NCCL");
#endif
}

// Every backend, in the order `auto` prefers them: when it can run, and how it is made. A
// new backend is a row here and its name in comm/backend.h.
struct BackendRow {
  Backend backend;
  std::optional<std::string> (*unavailable)(const BackendFacts&);
  std::unique_ptr<Communicator> (*make)(double timeout_s);
};
const BackendRow kBackends[] = {
    {Backend::nccl, nccl_unavailable, make_nccl},
    {Backend::mpi, [](const BackendFacts&) -> std::optional<std::string> { return std::nullopt; },
     [](double timeout_s) -> std::unique_ptr<Communicator> { return std::make_unique<MpiCommunicator>(timeout_s); }},
};

const BackendRow& row_of(Backend backend) {
  for (const auto& row : kBackends)
    if (row.backend == backend) return row;
  fail("dist.backend '{}' has no row in the backend table", name_of(backend));
}

}  // namespace

Backend choose_backend(Backend requested, const BackendFacts& facts) {
  if (requested == Backend::automatic) {
    for (const auto& row : kBackends)
      if (!row.unavailable(facts)) return row.backend;
    fail("config: key 'dist.backend': no backend can run here");
  }
  if (const auto why = row_of(requested).unavailable(facts)) fail("config: key 'dist.backend': {}", *why);
  return requested;
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

std::unique_ptr<Communicator> make_communicator(Backend backend, double timeout_s) {
  ensure_mpi_initialized();
  Backend chosen = Backend::automatic;
  std::string error;
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
  // One vote per row of the table: every rank must have chosen the same one.
  constexpr int rows = static_cast<int>(std::size(kBackends));
  int votes[rows] = {};
  for (int i = 0; i < rows; ++i) votes[i] = kBackends[i].backend == chosen;
  {
    CollectiveWatchdog::Scope watched(watching, "MPI_Allreduce (backend vote)");
    MPI_Allreduce(MPI_IN_PLACE, votes, rows, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  }
  std::vector<std::string> split;
  for (int i = 0; i < rows; ++i)
    if (votes[i] > 0) split.push_back(fmt::format("{} chose {}", votes[i], name_of(kBackends[i].backend)));
  if (split.size() > 1)
    fail("dist.backend '{}': the ranks disagree ({}: nodes with and without GPUs); set dist.backend: mpi, or run on "
         "nodes alike",
         name_of(backend), fmt::join(split, ", "));
  return row_of(chosen).make(timeout_s);
}

}  // namespace difftrain
