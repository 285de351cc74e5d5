#include "difftrain/train/ema.h"

#include <ATen/Parallel.h>

#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"

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
  shadow_values_ = flat_view(shadow_->parameters(), "ema (its copy)");
  model_values_ = flat_view(model.parameters(), "ema (the model)");
  model_params_front_ = model.parameters().front();
  shadow_buffers_ = shadow_->buffers();
  model_buffers_ = model.buffers();
}

void Ema::update() {
  if (model_values_.data_ptr() != model_params_front_.data_ptr())
    fail("ema: the model's parameters moved out of their flat buffer (a to() after the EMA was made?)");
  torch::NoGradGuard no_grad;
  const double d = std::min(decay_, (1.0 + updates_) / (10.0 + updates_));
  ++updates_;
  const auto weight = static_cast<float>(1 - d);
  if (shadow_values_.is_cpu()) {
    // One pass, as ATen's lerp computes it (in float, the form chosen by the weight).
    float* shadow = shadow_values_.data_ptr<float>();
    const float* model = model_values_.data_ptr<float>();
    at::parallel_for(0, shadow_values_.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      if (weight < 0.5f)
        for (int64_t i = begin; i < end; ++i) shadow[i] = shadow[i] + weight * (model[i] - shadow[i]);
      else
        for (int64_t i = begin; i < end; ++i) shadow[i] = model[i] - (model[i] - shadow[i]) * (1.0f - weight);
    });
  } else {
    shadow_values_.lerp_(model_values_, weight);
  }
  for (std::size_t i = 0; i < model_buffers_.size(); ++i) shadow_buffers_[i].copy_(model_buffers_[i]);
}

}  // namespace difftrain
