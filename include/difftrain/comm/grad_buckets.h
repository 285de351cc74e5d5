#pragma once
// Gradient averaging with few, large collectives. Each parameter's .grad() is a view into
// one of a few flat buckets of about `bucket_mb` each, so backward accumulates straight
// into the buckets; averaging is one in-place all-reduce per bucket and a scale, with no
// packing or unpacking. A few extra scalars (the step's loss) ride in the last bucket.
#include <vector>

#include <torch/torch.h>

#include "difftrain/comm/communicator.h"

namespace difftrain {

class GradBuckets {
 public:
  // Points every parameter's gradient into the buckets (replacing any it had).
  GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras = 1);

  // Sets every gradient to zero (one fill per bucket). Use it instead of the optimizer's
  // zero_grad, which may drop the gradients.
  void zero_grad();

  // Replaces every gradient (and `extras`, float32 [extras]) with its mean over all ranks.
  void allreduce_mean(Communicator& comm, torch::Tensor& extras);

  // The gradients, bucket by bucket, as flat tensors (for norms and clipping in one op a
  // bucket).
  std::vector<torch::Tensor> flat_grads() const;

  std::size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    torch::Tensor flat;               // float32, on the parameters' device
    int64_t grad_numel = 0;           // the gradients' part of `flat` (the rest: extras)
  };
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t extras_;

  void bind_views();
};

}  // namespace difftrain
