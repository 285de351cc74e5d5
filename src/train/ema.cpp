#include "difftrain/train/ema.h"

#include "difftrain/error.h"

namespace difftrain {

void copy_weights(Denoiser& from, Denoiser& to) {
  torch::NoGradGuard no_grad;
  auto src = from.named_parameters(), dst = to.named_parameters();
  if (src.size() != dst.size()) fail("copy_weights: the models differ in parameter count");
  for (std::size_t i = 0; i < src.size(); ++i) dst[i].value().copy_(src[i].value());
  auto src_b = from.buffers(), dst_b = to.buffers();
  for (std::size_t i = 0; i < src_b.size(); ++i) dst_b[i].copy_(src_b[i]);
}

Ema::Ema(std::shared_ptr<Denoiser> shadow, Denoiser& model, double decay)
    : shadow_(std::move(shadow)), decay_(decay) {
  copy_weights(model, *shadow_);
  for (auto& p : shadow_->parameters()) p.set_requires_grad(false);
  shadow_params_ = shadow_->parameters();
  shadow_buffers_ = shadow_->buffers();
}

void Ema::update(Denoiser& model) {
  torch::NoGradGuard no_grad;
  const double d = std::min(decay_, (1.0 + updates_) / (10.0 + updates_));
  ++updates_;
  const auto params = model.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) shadow_params_[i].lerp_(params[i], 1 - d);
  const auto buffers = model.buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) shadow_buffers_[i].copy_(buffers[i]);
}

}  // namespace difftrain
