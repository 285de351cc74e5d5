#include "difftrain/models/mlp.h"

#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/models/embeddings.h"

namespace difftrain {

namespace {
constexpr int64_t kSigmaDim = 2;
}

TimeInputMLPImpl::TimeInputMLPImpl(int64_t dim, std::vector<int64_t> hidden_dims) : dim_(dim) {
  if (dim < 1 || hidden_dims.empty()) fail("mlp: needs dim >= 1 and at least one hidden layer");
  net = torch::nn::Sequential();
  int64_t in = dim + kSigmaDim;
  for (int64_t out : hidden_dims) {
    net->push_back(torch::nn::Linear(in, out));
    net->push_back(torch::nn::GELU());
    in = out;
  }
  net->push_back(torch::nn::Linear(in, dim));
  register_module("net", net);
}

torch::Tensor TimeInputMLPImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor&) {
  if (x.dim() != 2 || x.size(1) != dim_)
    fail("mlp: expected input of shape [B, {}], got {}", dim_, x.sizes());
  return net->forward(torch::cat({x, sigma_sincos_embedding(x.size(0), sigma)}, 1));
}

void resolve_mlp_config(ModelConfig& m) {
  if (m.num_classes != 0) fail("config: key 'model.num_classes': model type 'mlp' is unconditional; use dit or unet for labels");
  if (!m.hidden_dims) m.hidden_dims = std::vector<int64_t>{16, 128, 128, 128, 128, 16};
  if (m.hidden_dims->empty()) fail("config: key 'model.hidden_dims': must not be empty");
  for (auto d : *m.hidden_dims)
    if (d < 1) fail("config: key 'model.hidden_dims': every width must be >= 1, got {}", d);
}

void check_mlp_shape(const std::vector<int64_t>& sample_shape, const std::string& shape_source) {
  if (sample_shape.size() != 1 || sample_shape[0] < 1)
    fail("{}: examples of shape [{}] do not fit model 'mlp', which takes examples of shape [dim] (a dataset of "
         "shape [n, dim])",
         shape_source, fmt::join(sample_shape, ", "));
}

// Counted in long double so that no width overflows it.
long double mlp_parameter_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape) {
  long double parameters = 0, in = static_cast<long double>(sample_shape[0]) + kSigmaDim;
  for (const int64_t out : *m.hidden_dims) parameters += (in + 1) * out, in = out;
  return parameters + (in + 1) * sample_shape[0];
}

// The forward keeps a layer's input and output alive together (no autograd graph while
// sampling), so its peak is about twice its widest layer, the input [x, sigma embedding]
// included.
double mlp_activation_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape) {
  double widest = static_cast<double>(sample_shape[0]) + kSigmaDim;
  for (int64_t w : *m.hidden_dims) widest = std::max(widest, static_cast<double>(w));
  return 2 * widest;
}

}  // namespace difftrain
