#include "difftrain/models/mlp.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/models/embeddings.h"

namespace difftrain {

namespace {
constexpr int64_t kSigmaDim = 2;

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The MLP as one autograd node. Recorded layer by layer, autograd keeps four nodes a layer
// (the weight's transpose, addmm, GELU, and the bias's broadcast) and runs each through its
// engine; for the toy model's 100 x 128 layers that bookkeeping costs more than the
// arithmetic. Here the forward records nothing, and the backward is written out: per layer
// GELU's derivative, one matmul for the weight's gradient, a column sum for the bias's, and
// one matmul for the gradient of the layer's input. The operations are the ones autograd
// would run, so the results agree to float rounding. `params` is [W0, b0, W1, b1, ...], with
// a GELU after every layer but the last.
struct MlpFunction : torch::autograd::Function<MlpFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, at::TensorList params) {
    const auto layers = static_cast<int64_t>(params.size()) / 2;
    // Saved: the parameters, then each layer's input; and each GELU's input (pre-activation).
    variable_list saved(params.begin(), params.end());
    torch::Tensor h = input;
    for (int64_t l = 0; l < layers; ++l) {
      saved.push_back(h);
      auto z = torch::addmm(params[2 * l + 1], h, params[2 * l].t());
      if (l + 1 == layers) {
        h = z;
        break;
      }
      h = torch::gelu(z);
      saved.push_back(z);
    }
    ctx->saved_data["layers"] = layers;
    ctx->save_for_backward(saved);
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const int64_t layers = ctx->saved_data["layers"].toInt();
    const auto saved = ctx->get_saved_variables();
    // saved: 2 * layers parameters, then per layer its input and (but the last) its pre-activation
    const auto input_of = [&](int64_t l) { return saved[2 * layers + 2 * l]; };
    const auto pre_activation_of = [&](int64_t l) { return saved[2 * layers + 2 * l + 1]; };
    variable_list grads(1 + 2 * layers);
    torch::Tensor g = grad_outputs[0];
    for (int64_t l = layers - 1; l >= 0; --l) {
      if (l + 1 < layers) g = torch::gelu_backward(g, pre_activation_of(l));
      grads[1 + 2 * l] = g.t().mm(input_of(l));
      grads[2 + 2 * l] = g.sum(0);
      if (l > 0 || ctx->needs_input_grad(0)) g = g.mm(saved[2 * l]);
    }
    if (ctx->needs_input_grad(0)) grads[0] = g;
    return grads;
  }
};

// Under autocast the layers must run one by one, as autocast casts each operation's inputs.
bool autocast_on(const torch::Device& device) {
  return !c10::impl::tls_is_dispatch_key_excluded(device.is_cuda() ? c10::DispatchKey::AutocastCUDA
                                                                   : c10::DispatchKey::AutocastCPU);
}

}  // namespace

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
  for (const auto& layer : net->children())
    if (auto* linear = layer->as<torch::nn::Linear>()) {
      parameters_in_order_.push_back(linear->weight);
      parameters_in_order_.push_back(linear->bias);
    }
}

torch::Tensor TimeInputMLPImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor&) {
  if (x.dim() != 2 || x.size(1) != dim_)
    fail("mlp: expected input of shape [B, {}], got {}", dim_, x.sizes());
  const auto input = torch::cat({x, sigma_sincos_embedding(x.size(0), sigma)}, 1);
  if (autocast_on(input.device())) return net->forward(input);
  return MlpFunction::apply(input, at::TensorList(parameters_in_order_));
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
