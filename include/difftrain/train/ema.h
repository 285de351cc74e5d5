#pragma once
// An exponential moving average of the model's weights, kept as a second model of the
// same architecture so it can be sampled from directly. Both models' parameters are views
// of one flat buffer each (flat_buffer.h), so an update is one lerp over the whole buffer.
#include <memory>

#include "difftrain/models/denoiser.h"

namespace difftrain {

class Ema {
 public:
  // `shadow` is a fresh model of the same type; it starts as a copy of `model`, which it
  // follows from then on (`model` must outlive the Ema). Both models' parameters must
  // already be views of one buffer each (flatten_storage).
  Ema(std::shared_ptr<Denoiser> shadow, Denoiser& model, double decay);

  // shadow <- d * shadow + (1 - d) * model, buffers copied, where after `updates` updates
  // d = min(decay, (1 + updates) / (10 + updates)): early on the average forgets the random
  // initial weights quickly instead of carrying decay^steps of them for thousands of steps.
  void update();
  int64_t updates() const { return updates_; }
  void set_updates(int64_t updates) { updates_ = updates; }
  Denoiser& model() { return *shadow_; }

 private:
  std::shared_ptr<Denoiser> shadow_;
  torch::Tensor shadow_values_, model_values_;
  torch::Tensor model_params_front_;  // the model's first parameter: still a view of model_values_?
  std::vector<torch::Tensor> shadow_buffers_, model_buffers_;
  double decay_;
  int64_t updates_ = 0;
};

// Copies every parameter and buffer of `from` into `to` (same architecture).
void copy_weights(Denoiser& from, Denoiser& to);

}  // namespace difftrain
