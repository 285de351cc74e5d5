#pragma once
// What the multi-rank tests share: the communicator (MPI is initialised once per
// process), a directory every rank sees, and a gather.
#include <memory>
#include <string>

#include <torch/torch.h>

#include "difftrain/comm/communicator.h"
#include "test_util.h"

namespace difftrain::test {

Communicator& world();

// A directory every rank sees: rank 0 creates it and broadcasts its name, and removes it
// only once every rank is done with it.
class SharedDir {
 public:
  SharedDir();
  ~SharedDir();
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::unique_ptr<TempDir> owner_;
  std::string path_;
};

// Every rank's copy of `t` (same shape on all ranks), stacked: [world, ...].
torch::Tensor all_gather(const torch::Tensor& t);

}  // namespace difftrain::test
