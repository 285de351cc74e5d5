#include "difftrain/train/optimizer.h"

#include <cmath>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"

namespace difftrain {

namespace {

void check_buffers(const torch::Tensor& values, const torch::Tensor& grads, const torch::Tensor& exp_avg,
                   const torch::Tensor& exp_avg_sq) {
  for (const auto* t : {&grads, &exp_avg, &exp_avg_sq})
    if (t->numel() != values.numel() || t->scalar_type() != torch::kFloat32 || !t->is_contiguous() ||
        t->device() != values.device())
      fail("optimizer: buffers of {} and {} values (or of other types or devices) do not match", values.numel(),
           t->numel());
}

}  // namespace

namespace {

// One range of the fused update; Decay: AdamW's weight decay, L2: Adam's. Each line is one
// of LibTorch's Adam/AdamW tensor operations, in float32 as ATen computes them (scalars rounded to
// float first), so the fused pass and the tensor operations agree to rounding and both match
// PyTorch. The loop has no branches, so the compiler vectorises it (this file is built with
// -O3 -fno-math-errno for that: sqrt then needs no errno path).
struct AdamScalars {
  float b1, b2, one_minus_b1, one_minus_b2, decay_factor, l2_factor, neg_step_size, correction2_sqrt, eps;
};

template <bool Decay, bool L2>
void adam_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                const AdamScalars s) {
  for (int64_t i = 0; i < n; ++i) {
    float pi = p[i], gi = g[i];
    if constexpr (Decay) pi = pi * s.decay_factor;                   // p.mul_(1 - lr * wd)
    if constexpr (L2) gi = gi + s.l2_factor * pi;                     // grad.add(p, wd)
    const float mi = m[i] * s.b1 + s.one_minus_b1 * gi;               // exp_avg.mul_(b1).add_(g, 1 - b1)
    const float vi = v[i] * s.b2 + s.one_minus_b2 * gi * gi;          // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
    const float denom = std::sqrt(vi) / s.correction2_sqrt + s.eps;  // (sqrt(v) / sqrt(c2)).add_(eps)
    p[i] = pi + s.neg_step_size * mi / denom;                         // p.addcdiv_(m, denom, -step_size)
    m[i] = mi, v[i] = vi;
  }
}

}  // namespace

void adam_update_fused_cpu(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                           torch::Tensor& exp_avg_sq, const AdamHyper& h) {
  check_buffers(values, grads, exp_avg, exp_avg_sq);
  if (!values.is_cpu() || !values.is_contiguous()) fail("optimizer: the fused update runs on contiguous CPU buffers");
  const double correction1 = 1 - std::pow(h.beta1, static_cast<double>(h.step));
  const double correction2 = 1 - std::pow(h.beta2, static_cast<double>(h.step));
  const AdamScalars s{static_cast<float>(h.beta1),
                      static_cast<float>(h.beta2),
                      static_cast<float>(1 - h.beta1),
                      static_cast<float>(1 - h.beta2),
                      static_cast<float>(1 - h.lr * h.weight_decay),
                      static_cast<float>(h.weight_decay),
                      static_cast<float>(-(h.lr / correction1)),
                      static_cast<float>(std::sqrt(correction2)),
                      static_cast<float>(h.eps)};
  const bool decay = h.weight_decay != 0 && h.decoupled, l2 = h.weight_decay != 0 && !h.decoupled;
  const auto range = decay ? adam_range<true, false> : l2 ? adam_range<false, true> : adam_range<false, false>;
  float* p = values.data_ptr<float>();
  const float* g = grads.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  at::parallel_for(0, values.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
    range(p + begin, g + begin, m + begin, v + begin, end - begin, s);
  });
}

void adam_update_tensor_ops(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                            torch::Tensor& exp_avg_sq, const AdamHyper& h, torch::Tensor& scratch) {
  check_buffers(values, grads, exp_avg, exp_avg_sq);
  check_buffers(values, grads, scratch, scratch);
  torch::NoGradGuard no_grad;
  // No temporaries the size of the model: `scratch` holds Adam's L2 gradient, then the denominator.
  auto g = grads;
  if (h.weight_decay != 0 && h.decoupled) values.mul_(1 - h.lr * h.weight_decay);
  if (h.weight_decay != 0 && !h.decoupled) g = at::add_out(scratch, grads, values, h.weight_decay);
  exp_avg.mul_(h.beta1).add_(g, 1 - h.beta1);
  exp_avg_sq.mul_(h.beta2).addcmul_(g, g, 1 - h.beta2);
  const double correction1 = 1 - std::pow(h.beta1, static_cast<double>(h.step));
  const double correction2 = 1 - std::pow(h.beta2, static_cast<double>(h.step));
  const auto& denom = at::sqrt_out(scratch, exp_avg_sq).div_(std::sqrt(correction2)).add_(h.eps);
  values.addcdiv_(exp_avg, denom, -(h.lr / correction1));
}

void adam_update_torch_fused(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                             torch::Tensor& exp_avg_sq, const AdamHyper& h) {
  check_buffers(values, grads, exp_avg, exp_avg_sq);
#if TORCH_VERSION_MAJOR >= 2
  torch::NoGradGuard no_grad;
  // The kernel reads the step count from a tensor on the buffers' device.
  const auto step = torch::full({1}, static_cast<double>(h.step), values.options());
  if (h.decoupled)
    at::_fused_adamw_({values}, {grads}, {exp_avg}, {exp_avg_sq}, {}, {step}, h.lr, h.beta1, h.beta2,
                      h.weight_decay, h.eps, /*amsgrad=*/false, /*maximize=*/false);
  else
    at::_fused_adam_({values}, {grads}, {exp_avg}, {exp_avg_sq}, {}, {step}, h.lr, h.beta1, h.beta2, h.weight_decay,
                     h.eps, /*amsgrad=*/false, /*maximize=*/false);
#else
  fail("optimizer: PyTorch's fused Adam kernel needs LibTorch 2.x (this is {})", TORCH_VERSION);
#endif
}

FlatAdam::FlatAdam(std::vector<torch::Tensor> params, const AdamHyper& hyper)
    : params_(std::move(params)), offsets_(flat_offsets(params_)), values_(flat_view(params_, "optimizer")), hyper_(hyper) {
  if (values_.scalar_type() != torch::kFloat32) fail("optimizer: parameters must be float32, not {}", c10::toString(values_.scalar_type()));
  exp_avg_ = torch::zeros_like(values_);
  exp_avg_sq_ = torch::zeros_like(values_);
}

void FlatAdam::step(const torch::Tensor& grads) {
  // A model moved (to()) after the buffer was made no longer trains through it.
  if (params_.front().data_ptr() != values_.data_ptr())
    fail("optimizer: the parameters moved out of their flat buffer (a to() after the optimizer was made?)");
  AdamHyper h = hyper_;
  h.step = ++steps_;
  if (values_.is_cpu()) {
    adam_update_fused_cpu(values_, grads, exp_avg_, exp_avg_sq_, h);
#if TORCH_VERSION_MAJOR >= 2
  } else if (values_.is_cuda()) {
    adam_update_torch_fused(values_, grads, exp_avg_, exp_avg_sq_, h);
#endif
  } else {
    if (!scratch_.defined()) scratch_ = torch::empty_like(values_);
    adam_update_tensor_ops(values_, grads, exp_avg_, exp_avg_sq_, h, scratch_);
  }
}

void FlatAdam::step() {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params_) grads.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros_like(p).reshape({-1}));
  step(torch::cat(grads));
}

void FlatAdam::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

namespace {
c10::impl::GenericDict string_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }
}  // namespace

c10::IValue FlatAdam::state_dict() const {
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  if (steps_ > 0)
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto entry = string_dict();
      const auto slice = [&](const torch::Tensor& flat) {
        return flat.narrow(0, offsets_[i], params_[i].numel()).view(params_[i].sizes()).detach().cpu().clone();
      };
      entry.insert("step", steps_);
      entry.insert("exp_avg", slice(exp_avg_));
      entry.insert("exp_avg_sq", slice(exp_avg_sq_));
      state.insert(static_cast<int64_t>(i), entry);
    }
  auto options = string_dict();
  options.insert("lr", hyper_.lr);
  options.insert("betas", c10::ivalue::Tuple::create({hyper_.beta1, hyper_.beta2}));
  options.insert("eps", hyper_.eps);
  options.insert("weight_decay", hyper_.weight_decay);
  c10::List<int64_t> indices;
  for (int64_t i = 0; i < static_cast<int64_t>(params_.size()); ++i) indices.push_back(i);
  options.insert("params", indices);
  auto out = string_dict();
  out.insert("state", state);
  c10::impl::GenericList groups(c10::AnyType::get());
  groups.push_back(options);
  out.insert("param_groups", groups);
  return out;
}

void FlatAdam::load_state_dict(const c10::IValue& value) {
  const auto state = value.toGenericDict().at("state").toGenericDict();
  // Everything is checked before anything is copied: a refused state leaves this one whole.
  for (const auto& entry : state)
    if (!entry.key().isInt() || entry.key().toInt() < 0 || entry.key().toInt() >= static_cast<int64_t>(params_.size()))
      fail("checkpoint: optimizer state for parameter {}, but the model has {} parameters",
           entry.key().isInt() ? std::to_string(entry.key().toInt()) : entry.key().tagKind(), params_.size());
  std::vector<std::pair<std::size_t, c10::impl::GenericDict>> found;
  std::optional<int64_t> steps;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find(c10::IValue(static_cast<int64_t>(i)));
    if (it == state.end()) continue;
    auto entry = it->value().toGenericDict();
    const auto exp_avg = entry.at("exp_avg").toTensor(), exp_avg_sq = entry.at("exp_avg_sq").toTensor();
    if (exp_avg.sizes() != params_[i].sizes() || exp_avg_sq.sizes() != params_[i].sizes())
      fail("checkpoint: optimizer state of parameter {} has shape {}, the model's is {}", i, exp_avg.sizes(),
           params_[i].sizes());
    const auto& step = entry.at("step");
    const int64_t s = step.isTensor()   ? step.toTensor().item<int64_t>()
                      : step.isDouble() ? static_cast<int64_t>(step.toDouble())
                                        : step.toInt();
    if (steps && *steps != s)
      fail("checkpoint: optimizer state of parameter {} is at step {}, the others at {}; difftrain steps every "
           "parameter together", i, s, *steps);
    steps = s;
    found.emplace_back(i, entry);
  }
  torch::NoGradGuard no_grad;
  exp_avg_.zero_(), exp_avg_sq_.zero_();
  for (const auto& [i, entry] : found) {
    exp_avg_.narrow(0, offsets_[i], params_[i].numel()).copy_(entry.at("exp_avg").toTensor().reshape({-1}));
    exp_avg_sq_.narrow(0, offsets_[i], params_[i].numel()).copy_(entry.at("exp_avg_sq").toTensor().reshape({-1}));
  }
  steps_ = steps.value_or(0);
}

void FlatAdam::broadcast(Communicator& comm) {
  auto steps = torch::tensor({steps_}, torch::kInt64);
  comm.broadcast(steps, 0);
  steps_ = steps.item<int64_t>();
  comm.broadcast(exp_avg_, 0);
  comm.broadcast(exp_avg_sq_, 0);
}

std::unique_ptr<FlatAdam> make_optimizer(std::vector<torch::Tensor> params, const TrainConfig& c) {
  if (!c.weight_decay) fail("make_optimizer: train.weight_decay is not resolved (resolve the config first)");
  AdamHyper h;
  h.lr = c.lr, h.beta1 = c.betas.at(0), h.beta2 = c.betas.at(1), h.eps = c.adam_eps;
  h.decoupled = c.optimizer == OptimizerType::adamw;
  h.weight_decay = *c.weight_decay;
  return std::make_unique<FlatAdam>(std::move(params), h);
}

double learning_rate(const TrainConfig& c, int64_t step) {
  if (c.warmup_steps <= 0 || step >= c.warmup_steps) return c.lr;
  return c.lr * static_cast<double>(std::max<int64_t>(step, 1)) / static_cast<double>(c.warmup_steps);
}

}  // namespace difftrain
