#pragma once
// dist.backend: how ranks exchange gradients. auto picks NCCL where this build has it and
// LibTorch sees a GPU, else MPI (comm/communicator.cpp holds each backend's row: when it can
// run, and how it is made).
#include <array>

#include "difftrain/names.h"

namespace difftrain {

enum class Backend { automatic, mpi, nccl };
constexpr std::array<Named<Backend>, 3> names_of(Backend) {
  return {{{Backend::automatic, "auto"}, {Backend::mpi, "mpi"}, {Backend::nccl, "nccl"}}};
}

}  // namespace difftrain
