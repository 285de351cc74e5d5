#include "difftrain/data/partition.h"

#include "difftrain/error.h"

namespace difftrain {

RankShare rank_share(int64_t total, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) fail("rank_share: bad rank {} of world {}", rank, world);
  if (total < world)
    fail("the dataset has {} examples, fewer than the {} ranks: every rank needs at least one", total, world);
  const auto begin = [&](int64_t r) { return total * r / world; };
  return {begin(rank), begin(rank + 1)};
}

}  // namespace difftrain
