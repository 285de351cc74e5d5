#include "difftrain/comm/grad_buckets.h"

#include "difftrain/error.h"

namespace difftrain {

GradBuckets::GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras)
    : params_(std::move(params)), extras_(extras) {
  if (params_.empty()) fail("gradient buckets: the model has no parameters");
  const int64_t capacity = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20) / 4));
  Bucket current;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].scalar_type() != torch::kFloat32) fail("gradient buckets: parameter {} is not float32", i);
    const int64_t n = params_[i].numel();
    if (!current.params.empty() && current.grad_numel + n > capacity) {
      buckets_.push_back(std::move(current));
      current = Bucket{};
    }
    current.params.push_back(i);
    current.grad_numel += n;
  }
  buckets_.push_back(std::move(current));
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t n = buckets_[b].grad_numel + (b + 1 == buckets_.size() ? extras_ : 0);
    buckets_[b].flat = torch::zeros({n}, params_.front().options().requires_grad(false));
  }
  bind_views();
}

void GradBuckets::bind_views() {
  torch::NoGradGuard no_grad;
  for (auto& bucket : buckets_) {
    int64_t offset = 0;
    for (auto i : bucket.params) {
      auto& p = params_[i];
      auto view = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined() && !p.grad().is_same(view)) view.copy_(p.grad());
      p.mutable_grad() = view;
      offset += p.numel();
    }
  }
}

void GradBuckets::zero_grad() {
  for (auto& bucket : buckets_) bucket.flat.zero_();
  // Something (an optimizer's zero_grad(set_to_none), user code) may have replaced a
  // gradient; point it back into its bucket.
  for (const auto& bucket : buckets_) {
    int64_t offset = 0;
    for (auto i : bucket.params) {
      const auto& g = params_[i].grad();
      if (!g.defined() || g.data_ptr() != static_cast<float*>(bucket.flat.data_ptr()) + offset) return bind_views();
      offset += params_[i].numel();
    }
  }
}

void GradBuckets::allreduce_mean(Communicator& comm, torch::Tensor& extras) {
  if (extras.numel() != extras_) fail("gradient buckets: expected {} extra values, got {}", extras_, extras.numel());
  if (comm.size() == 1) return;
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / comm.size();
  auto tail = buckets_.back().flat.narrow(0, buckets_.back().grad_numel, extras_);
  tail.copy_(extras.reshape({-1}));
  for (auto& bucket : buckets_) {
    comm.allreduce_sum(bucket.flat);
    bucket.flat.mul_(scale);
  }
  extras.copy_(tail.view(extras.sizes()));
}

std::vector<torch::Tensor> GradBuckets::flat_grads() const {
  std::vector<torch::Tensor> out;
  for (const auto& bucket : buckets_) out.push_back(bucket.flat.narrow(0, 0, bucket.grad_numel));
  return out;
}

}  // namespace difftrain
