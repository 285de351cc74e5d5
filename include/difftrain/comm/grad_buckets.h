#pragma once
// Gradient sums over ranks with few, large collectives, started while backward still runs.
// Every parameter's .grad() is a view into one flat gradient buffer (in the parameters'
// order, after a few leading extra values), cut into buckets of about `bucket_mb` each, so
// backward accumulates straight into the buckets and the optimizer reads one buffer. A hook after each parameter's
// gradient accumulation counts the bucket down; once a bucket is complete during an armed
// backward, its all-reduce starts (in a fixed order, the same on every rank: the last
// bucket first, as backward produces the last parameters' gradients first), and the
// optimizer only waits for what is still running when backward returns. Bucket 0, whose
// gradients come last, is all-reduced after backward with a blocking call (starting it at
// the end of backward would overlap nothing, and MPI's blocking collectives are its
// fastest); it carries a few extra values (the step's loss and flags).
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "difftrain/comm/communicator.h"

namespace difftrain {

class GradBuckets {
 public:
  // Points every parameter's gradient into the buckets (replacing any it had) and hooks
  // its gradient accumulator.
  GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras = 1);
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Sets every gradient to zero (one fill per bucket). Use it instead of the optimizer's
  // zero_grad, which may drop the gradients.
  void zero_grad();

  // Call before the backward pass that completes the step's gradients (the last
  // micro-batch's): during it, each bucket's all-reduce but bucket 0's starts as soon as
  // the bucket is complete.
  void arm(Communicator& comm);

  // Replaces every gradient and `extras` (float32 [extras]) with their sum over all ranks:
  // starts what the armed backward did not (all of it when nothing was armed), all-reduces
  // bucket 0 with the extras, and waits for everything. Every rank calls it once per step,
  // failed or not. The sum is the mean when each rank scaled its loss by 1 / ranks, which
  // costs nothing, where dividing the sum would be one more pass over the gradients.
  void allreduce_sum(Communicator& comm, torch::Tensor& extras);

  // Every gradient, in the parameters' order and layout (their flat buffer's).
  const torch::Tensor& flat_grads() const { return grads_; }
  // Where the extras ride in bucket 0 (float32 [extras], zeroed by zero_grad): values
  // written here and passed to allreduce_sum are summed in place, with no copy.
  torch::Tensor extras() { return extras_slot(); }

  std::size_t num_buckets() const { return buckets_.size(); }
  // Buckets whose all-reduce started inside the last armed backward, in start order.
  const std::vector<std::size_t>& started_during_backward() const { return started_in_backward_; }

 private:
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    torch::Tensor flat;               // its slice of buffer_ (bucket 0's starts with the extras)
    int64_t waiting = 0;              // gradients not yet accumulated in the armed backward
    std::unique_ptr<PendingCollective> pending;
  };
  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offsets_;        // of params_[i]'s gradient in grads_
  std::vector<std::size_t> bucket_of_;  // params_[i] lives in buckets_[bucket_of_[i]]
  std::vector<Bucket> buckets_;
  int64_t extras_;
  torch::Tensor buffer_;  // float32 [lead | gradients], lead = extras_ rounded up to 64 bytes
  torch::Tensor grads_;   // the gradients' part of buffer_
  static constexpr std::size_t kLastBucket = 0;  // reduced after backward, with the extras
  struct Hook;
  // LibTorch 1.x holds autograd nodes in shared_ptr, recent 2.x in intrusive_ptr.
  using AccumulatorPtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()));
  std::vector<std::pair<AccumulatorPtr, uintptr_t>> hooks_;

  // The armed step.
  Communicator* comm_ = nullptr;
  std::thread::id arming_thread_;
  std::size_t next_ = 0;  // buckets start in order: buckets_.size() - 1 down to 1; next_ counts them
  std::vector<std::size_t> started_in_backward_;

  void bind_views();
  bool views_bound() const;
  torch::Tensor extras_slot() { return buffer_.narrow(0, 0, extras_); }
  void gradient_ready(std::size_t param);
  void start(std::size_t bucket);
  std::size_t bucket_in_order(std::size_t k) const { return buckets_.size() - 1 - k; }
};

}  // namespace difftrain
