#include "difftrain/comm/grad_buckets.h"

#include <torch/csrc/autograd/function_hook.h>

#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"

namespace difftrain {

// Runs after the parameter's gradient was accumulated into its bucket view.
struct GradBuckets::Hook : torch::autograd::FunctionPostHook {
  Hook(GradBuckets* owner, std::size_t param) : owner(owner), param(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    owner->gradient_ready(param);
    return outputs;
  }
  GradBuckets* owner;
  std::size_t param;
};

GradBuckets::GradBuckets(std::vector<torch::Tensor> params, double bucket_mb, int64_t extras)
    : params_(std::move(params)), extras_(extras) {
  if (params_.empty()) fail("gradient buckets: the model has no parameters");
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].scalar_type() != torch::kFloat32) fail("gradient buckets: parameter {} is not float32", i);
  offsets_ = flat_offsets(params_);
  // Whole cache lines of extras, so that the gradients start aligned for vector loads.
  const int64_t lead = (extras_ + 15) / 16 * 16;
  buffer_ = torch::zeros({lead + offsets_.back()}, params_.front().options().requires_grad(false));
  grads_ = buffer_.narrow(0, lead, offsets_.back());
  const int64_t capacity = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20) / 4));
  Bucket current;
  int64_t filled = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = params_[i].numel();
    if (!current.params.empty() && filled + n > capacity) {
      buckets_.push_back(std::move(current));
      current = Bucket{}, filled = 0;
    }
    current.params.push_back(i);
    filled += n;
  }
  buckets_.push_back(std::move(current));
  bucket_of_.resize(params_.size());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const auto& members = buckets_[b].params;
    // Bucket 0 also holds the lead (the extras), so that they travel in its all-reduce.
    const int64_t begin = b == kLastBucket ? 0 : lead + offsets_[members.front()];
    const int64_t end = lead + offsets_[members.back() + 1];
    buckets_[b].flat = buffer_.narrow(0, begin, end - begin);
    for (auto i : members) bucket_of_[i] = b;
  }
  bind_views();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].requires_grad()) continue;  // never gets a gradient: its bucket does not wait for it
    // The accumulator is owned here: the parameter keeps only a weak reference, and a
    // re-created accumulator would lack the hook.
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
    const auto key = accumulator->add_post_hook(std::make_unique<Hook>(this, i));
    hooks_.emplace_back(std::move(accumulator), key);
  }
}

GradBuckets::~GradBuckets() {
  for (auto& [accumulator, key] : hooks_) accumulator->del_post_hook(key);
}

void GradBuckets::bind_views() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    auto view = grads_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
    if (p.grad().defined() && !p.grad().is_same(view)) view.copy_(p.grad());
    p.mutable_grad() = view;
  }
}

bool GradBuckets::views_bound() const {
  const auto* base = static_cast<const float*>(grads_.data_ptr());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& g = params_[i].grad();
    if (!g.defined() || g.data_ptr() != base + offsets_[i]) return false;
  }
  return true;
}

void GradBuckets::zero_grad() {
  buffer_.zero_();
  // Something (an optimizer's zero_grad(set_to_none), user code) may have replaced a
  // gradient; point it back into the buffer.
  if (!views_bound()) bind_views();
}

void GradBuckets::arm(Communicator& comm) {
  for (auto& bucket : buckets_) {
    if (bucket.pending) fail("gradient buckets: armed while an all-reduce of the last step is unfinished");
    bucket.waiting = 0;
    for (auto i : bucket.params) bucket.waiting += params_[i].requires_grad() ? 1 : 0;
  }
  next_ = 0;
  started_in_backward_.clear();
  if (comm.size() == 1) return;  // nothing to send
  comm_ = &comm;
  arming_thread_ = std::this_thread::get_id();
}

void GradBuckets::gradient_ready(std::size_t param) {
  if (!comm_) return;  // not the step's last backward
  auto& bucket = buckets_[bucket_of_[param]];
  if (--bucket.waiting > 0) return;
  // MPI may only be called from the thread that armed (MPI_THREAD_FUNNELED); the rest
  // starts in allreduce_sum.
  if (std::this_thread::get_id() != arming_thread_ && !comm_->starts_from_any_thread()) return;
  while (next_ + 1 < buckets_.size() && buckets_[bucket_in_order(next_)].waiting == 0) {
    started_in_backward_.push_back(bucket_in_order(next_));
    start(bucket_in_order(next_));
  }
  // Non-blocking collectives move on only inside MPI calls: give the running ones a turn.
  for (auto& b : buckets_)
    if (b.pending) b.pending->test();
}

void GradBuckets::start(std::size_t bucket) {
  buckets_[bucket].pending = comm_->start_allreduce_sum(buckets_[bucket].flat);
  ++next_;
}

void GradBuckets::allreduce_sum(Communicator& comm, torch::Tensor& extras) {
  if (extras.numel() != extras_) fail("gradient buckets: expected {} extra values, got {}", extras_, extras.numel());
  if (comm.size() == 1) {
    comm_ = nullptr;
    return;
  }
  torch::NoGradGuard no_grad;
  if (!comm_) next_ = 0, started_in_backward_.clear();
  comm_ = &comm;
  while (next_ + 1 < buckets_.size()) start(bucket_in_order(next_));
  copy_few(extras, extras_slot());
  comm.allreduce_sum(buckets_[kLastBucket].flat);
  for (auto& bucket : buckets_)
    if (bucket.pending) bucket.pending->wait(), bucket.pending.reset();
  comm_ = nullptr;
  copy_few(extras_slot(), extras);
}

}  // namespace difftrain
