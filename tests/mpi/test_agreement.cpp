// The one agreement protocol (comm/agreement.h) under mpirun -n 2 and -n 4: every rank
// learns the lowest failing rank, with riders max-reduced in the same collective, and only
// that rank raises its message.
#include <gtest/gtest.h>

#include <set>

#include "difftrain/comm/agreement.h"
#include "difftrain/comm/mpi_communicator.h"
#include "difftrain/error.h"
#include "mpi_test_env.h"

namespace difftrain {
namespace {

using test::world;

struct Case {
  const char* name;
  std::set<int> failing;
};

std::vector<Case> cases() {
  const int last = world().size() - 1;
  // Two at once: the middle and the last rank where there are 3 or more, else both.
  const int other = world().size() > 2 ? world().size() / 2 : 0;
  return {{"none", {}}, {"rank 0", {0}}, {"the last rank", {last}}, {"two ranks at once", {other, last}}};
}

TEST(Agreement, EveryRankLearnsTheLowestFailingRank) {
  ASSERT_GE(world().size(), 2) << "run under mpirun -n 2 or more";
  const int rank = world().rank();
  for (const auto& c : cases()) {
    const bool failed = c.failing.count(rank) > 0;
    // Riders: this rank's number and its complement, so the maxima give the highest and the lowest rank.
    std::vector<int64_t> riders{rank, ~int64_t{rank}};
    const int64_t lowest = lowest_failing_rank(world(), failed, riders);
    EXPECT_EQ(lowest, c.failing.empty() ? -1 : *c.failing.begin()) << c.name;
    EXPECT_EQ(riders[0], world().size() - 1) << c.name;
    EXPECT_EQ(~riders[1], 0) << c.name;
  }
}

TEST(Agreement, OnlyTheLowestFailingRankRaisesItsMessage) {
  const int rank = world().rank();
  for (const auto& c : cases()) {
    const std::string error = c.failing.count(rank) ? fmt::format("disk full on rank {}", rank) : "";
    if (c.failing.empty()) {
      EXPECT_NO_THROW(share_failure(world(), error)) << c.name;
      continue;
    }
    const int lowest = *c.failing.begin();
    try {
      share_failure(world(), error);
      ADD_FAILURE() << c.name << ": returned although rank " << lowest << " failed";
    } catch (const RankError& e) {
      EXPECT_EQ(rank, lowest) << c.name;
      const std::string expected = rank == 0 ? error : fmt::format("rank {}: {}", rank, error);
      EXPECT_EQ(std::string(e.what()), expected) << c.name;
    } catch (const PeerError& e) {
      EXPECT_NE(rank, lowest) << c.name;
      EXPECT_EQ(std::string(e.what()), fmt::format("rank {} failed", lowest)) << c.name;
    }
  }
}

// The bootstrap's variant, on MPI_COMM_WORLD before any communicator exists: every rank
// raises the lowest failing rank's message, sent from that rank, as an AgreedError (which
// rank 0 alone reports).
TEST(Agreement, BeforeTheCommunicatorEveryRankRaisesTheLowestFailingRanksMessage) {
  const int rank = world().rank();
  for (const auto& c : cases()) {
    const std::string error = c.failing.count(rank) ? fmt::format("no GPU on rank {}", rank) : "";
    if (c.failing.empty()) {
      EXPECT_NO_THROW(agree_over_mpi(error)) << c.name;
      continue;
    }
    const int lowest = *c.failing.begin();
    try {
      agree_over_mpi(error);
      ADD_FAILURE() << c.name << ": returned although rank " << lowest << " failed";
    } catch (const AgreedError& e) {
      EXPECT_EQ(std::string(e.what()), fmt::format("rank {}: no GPU on rank {}", lowest, lowest)) << c.name;
    }
  }
}

}  // namespace
}  // namespace difftrain
