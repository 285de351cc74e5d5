#pragma once
// Where each rank runs and what it reads, for the operator to see at start-up: its node
// (hostname), its rank within the node (which picks its GPU), its device, and the examples
// and shard files of its share of the data.
#include <string>
#include <vector>

#include "difftrain/comm/communicator.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"

namespace difftrain {

// A collective: every rank calls it. Rank 0 gets the report, one line per rank (one per node
// beyond kPlacementRankLines ranks); the other ranks get "".
constexpr int kPlacementRankLines = 64;
std::string describe_placement(Communicator& comm, const std::vector<Shard>& shards, RankShare share);

}  // namespace difftrain
