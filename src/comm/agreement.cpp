#include "difftrain/comm/agreement.h"

#include <algorithm>

#include "difftrain/error.h"

namespace difftrain {

int64_t lowest_failing_rank(int rank, int world, bool failed, std::vector<int64_t>& riders,
                            const AllreduceMax& allreduce_max) {
  std::vector<int64_t> values;
  values.reserve(1 + riders.size());
  values.push_back(failed ? world - rank : 0);  // 0: this rank did not fail
  values.insert(values.end(), riders.begin(), riders.end());
  allreduce_max(values);
  std::copy(values.begin() + 1, values.end(), riders.begin());
  return values[0] == 0 ? -1 : world - values[0];
}

int64_t lowest_failing_rank(Communicator& comm, bool failed, std::vector<int64_t>& riders) {
  return lowest_failing_rank(comm.rank(), comm.size(), failed, riders, [&comm](std::vector<int64_t>& values) {
    auto t = torch::tensor(values, torch::kInt64).to(comm.device());
    comm.allreduce_max(t);
    t = t.cpu();
    std::copy(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel(), values.begin());
  });
}

int64_t lowest_failing_rank(Communicator& comm, bool failed) {
  std::vector<int64_t> none;
  return lowest_failing_rank(comm, failed, none);
}

void share_failure(Communicator& comm, const std::string& error) {
  const int64_t lowest = lowest_failing_rank(comm, !error.empty());
  if (lowest < 0) return;
  if (lowest == comm.rank()) throw RankError(comm.rank() == 0 ? error : fmt::format("rank {}: {}", comm.rank(), error));
  throw PeerError(fmt::format("rank {} failed", lowest));
}

}  // namespace difftrain
