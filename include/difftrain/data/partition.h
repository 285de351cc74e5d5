#pragma once
// Which part of the global index space each rank owns.
#include <cstdint>

namespace difftrain {

// Rank r of `world` owns the contiguous range [begin, end) of [0, total): shares differ by
// at most one example, and together they cover every index exactly once. Contiguous ranges
// keep each rank on few shard files, so a rank reads about total / world of the bytes.
struct RankShare {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

RankShare rank_share(int64_t total, int rank, int world);

}  // namespace difftrain
