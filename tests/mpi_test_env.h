#pragma once
// The communicator that the multi-rank tests share (MPI is initialised once per process).
#include "difftrain/dist/communicator.h"

namespace difftrain::test {
Communicator& world();
}
