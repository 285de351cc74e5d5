#pragma once
// The toy model: an MLP on [x, sin/cos(0.5 log sigma)]. Mirrors smalldiffusion's
// TimeInputMLP: `net` is a Sequential of Linear/GELU pairs and a final Linear, so the
// parameters are net.0.weight, net.0.bias, net.2.weight, ...
#include <vector>

#include <torch/torch.h>

#include "difftrain/models/denoiser.h"

namespace difftrain {

class TimeInputMLPImpl : public Denoiser {
 public:
  TimeInputMLPImpl(int64_t dim, std::vector<int64_t> hidden_dims);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma) override;
  std::vector<int64_t> input_dims() const override { return {dim_}; }

 private:
  int64_t dim_;
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(TimeInputMLP);

}  // namespace difftrain
