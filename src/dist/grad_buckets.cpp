#include "difftrain/dist/grad_buckets.h"

#include "difftrain/error.h"

namespace difftrain {

GradBuckets::GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras)
    : params_(std::move(params)), extras_(extras) {
  if (params_.empty()) fail("gradient buckets: the model has no parameters");
  const int64_t capacity = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20) / 4));
  Bucket current;
  int64_t filled = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].scalar_type() != torch::kFloat32) fail("gradient buckets: parameter {} is not float32", i);
    const int64_t n = params_[i].numel();
    if (!current.params.empty() && filled + n > capacity) {
      buckets_.push_back(std::move(current));
      current = Bucket{};
      filled = 0;
    }
    current.params.push_back(i);
    filled += n;
  }
  buckets_.push_back(std::move(current));
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    int64_t n = b + 1 == buckets_.size() ? extras_ : 0;
    for (auto i : buckets_[b].params) n += params_[i].numel();
    buckets_[b].flat = torch::zeros({n}, params_.front().options().requires_grad(false));
  }
}

void GradBuckets::allreduce_mean(Communicator& comm, torch::Tensor& extras) {
  if (extras.numel() != extras_) fail("gradient buckets: expected {} extra values, got {}", extras_, extras.numel());
  if (comm.size() == 1) return;
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / comm.size();
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    int64_t offset = 0;
    for (auto i : bucket.params) {
      const auto& p = params_[i];
      auto slot = bucket.flat.narrow(0, offset, p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
      offset += p.numel();
    }
    const bool last = b + 1 == buckets_.size();
    if (last) bucket.flat.narrow(0, offset, extras_).copy_(extras.reshape({-1}));
    comm.allreduce_sum(bucket.flat);
    bucket.flat.mul_(scale);
    offset = 0;
    for (auto i : bucket.params) {
      auto& p = params_[i];
      auto slot = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slot);
      else p.mutable_grad() = slot.clone();
      offset += p.numel();
    }
    if (last) extras.copy_(bucket.flat.narrow(0, offset, extras_).view(extras.sizes()));
  }
}

}  // namespace difftrain
