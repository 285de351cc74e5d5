#pragma once
// How every rank learns, in one collective, that some rank failed, so that all leave
// together and none is left waiting in a later collective. Only the lowest failing rank's
// message is shown, once: share_failure lets that rank report it (RankError) while the
// others stay quiet (PeerError); before a communicator exists, agree_over_mpi
// (mpi_communicator.h) sends its text to every rank and rank 0 reports it. Used at set-up
// (backend choice, `train`'s checks), around each phase of `eval` and at the end of a run.
// A training step carries its failure flag in the gradient all-reduce instead, beside the
// loss, so that it costs no collective of its own.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "difftrain/comm/communicator.h"

namespace difftrain {

// An all-reduce (max) of int64 values in place, over every rank.
using AllreduceMax = std::function<void(std::vector<int64_t>& values)>;

// The lowest rank whose `failed` is true, or -1 when none is, known to every rank after one
// all-reduce (the maximum of world - rank over the failing ranks). `riders` are
// max-reduced in the same collective (the same length on every rank).
int64_t lowest_failing_rank(int rank, int world, bool failed, std::vector<int64_t>& riders,
                            const AllreduceMax& allreduce_max);
int64_t lowest_failing_rank(Communicator& comm, bool failed, std::vector<int64_t>& riders);
int64_t lowest_failing_rank(Communicator& comm, bool failed);

// Returns when every rank passed an empty `error`. Otherwise throws on every rank: the
// lowest failing rank RankError with its message (prefixed "rank r: " on ranks other than
// 0), every other rank PeerError("rank K failed").
void share_failure(Communicator& comm, const std::string& error);

}  // namespace difftrain
