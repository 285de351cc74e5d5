#pragma once
// Gradient averaging with few, large collectives: the parameters' gradients are packed
// into flat buckets of about `bucket_mb` each, every bucket is all-reduced once, divided
// by the world size, and unpacked. A few extra scalars (the step's loss) ride along in the
// last bucket for free.
#include <vector>

#include <torch/torch.h>

#include "difftrain/dist/communicator.h"

namespace difftrain {

class GradBuckets {
 public:
  GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras = 1);

  // Replaces each parameter's .grad() (and `extras`, float32 [extras]) with its mean over
  // all ranks. Parameters without a gradient count as zero.
  void allreduce_mean(Communicator& comm, torch::Tensor& extras);

  std::size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    torch::Tensor flat;               // float32, on the parameters' device
  };
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t extras_;
};

}  // namespace difftrain
