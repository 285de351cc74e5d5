#pragma once
// What every model is to the diffusion core: eps_theta(x, sigma[, label]). It knows nothing of
// schedules, losses or ranks.
#include <vector>

#include <torch/torch.h>

namespace difftrain {

class Denoiser : public torch::nn::Module {
 public:
  // x: [B, *input_dims]; sigma: [] (one noise level for all), [B] or [B, 1, ..., 1];
  // labels: int64 [B] in [0, num_classes()], num_classes() meaning "no label", for a
  // class-conditional model; undefined for an unconditional one.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma,
                                const torch::Tensor& labels = {}) = 0;
  // 0 for an unconditional model.
  virtual int64_t num_classes() const { return 0; }
  // The shape of one example, e.g. {2} for 2-d points, {1, 28, 28} for images.
  virtual std::vector<int64_t> input_dims() const = 0;
};

}  // namespace difftrain
