#pragma once
// The toy model: an MLP on [x, sin/cos(0.5 log sigma)]. Mirrors smalldiffusion's
// TimeInputMLP: `net` is a Sequential of Linear/GELU pairs and a final Linear, so the
// parameters are net.0.weight, net.0.bias, net.2.weight, ...
#include <vector>

#include <torch/torch.h>

#include "difftrain/models/denoiser.h"
#include "difftrain/models/model_config.h"

namespace difftrain {

class TimeInputMLPImpl : public Denoiser {
 public:
  TimeInputMLPImpl(int64_t dim, std::vector<int64_t> hidden_dims);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma,
                        const torch::Tensor& labels = {}) override;
  std::vector<int64_t> input_dims() const override { return {dim_}; }

 private:
  int64_t dim_;
  torch::nn::Sequential net{nullptr};
  std::vector<torch::Tensor> parameters_in_order_;  // W0, b0, W1, b1, ... of net's Linear layers
};
TORCH_MODULE(TimeInputMLP);

// The registry's row for "mlp": defaults and ranges of its keys, the example shapes it
// takes ([dim]), and its weight count.
void resolve_mlp_config(ModelConfig& m);
void check_mlp_shape(const std::vector<int64_t>& sample_shape, const std::string& shape_source);
long double mlp_parameter_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);
double mlp_activation_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);

}  // namespace difftrain
