#pragma once
// What every model is to the diffusion core: eps_theta(x, sigma). It knows nothing of
// schedules, losses or ranks.
#include <vector>

#include <torch/torch.h>

namespace difftrain {

class Denoiser : public torch::nn::Module {
 public:
  // x: [B, *input_dims]; sigma: [] (one noise level for all), [B] or [B, 1, ..., 1].
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma) = 0;
  // The shape of one example, e.g. {2} for 2-d points, {1, 28, 28} for images.
  virtual std::vector<int64_t> input_dims() const = 0;
};

}  // namespace difftrain
