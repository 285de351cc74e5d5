#include "difftrain/models/dit.h"

#include <cmath>

#include <fmt/ranges.h>

#include "difftrain/error.h"

namespace difftrain {

torch::Tensor dit_position_embedding(int64_t side, int64_t patch, int64_t dim) {
  if (dim % 4 != 0) fail("dit: the position embedding needs a width divisible by 4, got {}", dim);
  const int64_t n = side / patch, quarter = dim / 4;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  // omega_j = 10000^(-j / quarter); computed in double, stored in float32 as the reference does.
  const auto omega = torch::pow(10000.0, -torch::arange(quarter, opts) / static_cast<double>(quarter));
  const auto freqs = torch::outer(torch::arange(n, opts), omega);               // [n, quarter]
  const auto sincos = torch::cat({freqs.sin(), freqs.cos()}, 1);               // [n, dim/2]
  const auto by_column = sincos.unsqueeze(0).expand({n, n, dim / 2});          // [row, col]: col's code
  const auto by_row = sincos.unsqueeze(1).expand({n, n, dim / 2});             // [row, col]: row's code
  return torch::cat({by_column, by_row}, 2).reshape({1, n * n, dim}).to(torch::kFloat32);
}

PatchEmbedImpl::PatchEmbedImpl(int64_t patch, int64_t channels, int64_t dim) {
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, dim, patch).stride(patch)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& x) {
  return proj->forward(x).flatten(2).transpose(1, 2);  // [B, dim, h, w] -> [B, h*w, dim]
}

ModulationImpl::ModulationImpl(int64_t dim, int64_t n) : n_(n) {
  proj = register_module("proj", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, n * dim)));
}

std::vector<torch::Tensor> ModulationImpl::forward(const torch::Tensor& cond) {
  auto parts = proj->forward(cond).chunk(n_, 1);
  for (auto& p : parts) p = p.unsqueeze(1);
  return parts;
}

ModulatedLayerNormImpl::ModulatedLayerNormImpl(int64_t dim) : dim_(dim) {
  modulation = register_module("modulation", Modulation(dim, 2));
}

torch::Tensor ModulatedLayerNormImpl::forward(const torch::Tensor& x, const torch::Tensor& cond) {
  const auto scale_shift = modulation->forward(cond);
  return torch::layer_norm(x, {dim_}, {}, {}, 1e-6) * (1 + scale_shift[0]) + scale_shift[1];
}

DiTBlockImpl::DiTBlockImpl(int64_t head_dim, int64_t num_heads, double mlp_ratio) {
  const int64_t dim = head_dim * num_heads, hidden = static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio);
  norm1 = register_module("norm1", ModulatedLayerNorm(dim));
  attn = register_module("attn", Attention(head_dim, num_heads, /*qkv_bias=*/true));
  norm2 = register_module("norm2", ModulatedLayerNorm(dim));
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(dim, hidden),
                                                     torch::nn::GELU(torch::nn::GELUOptions().approximate("tanh")),
                                                     torch::nn::Linear(hidden, dim)));
  scale_modulation = register_module("scale_modulation", Modulation(dim, 2));
}

torch::Tensor DiTBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cond) {
  const auto gates = scale_modulation->forward(cond);
  auto h = x + gates[0] * attn->forward(norm1->forward(x, cond));
  return h + gates[1] * mlp->forward(norm2->forward(h, cond));
}

DiTImpl::DiTImpl(const DiTShape& shape) : shape_(shape) {
  const int64_t dim = shape.head_dim * shape.num_heads;
  // A buffer, not a parameter: fixed, so no optimizer state and no gradient.
  pos_embed = register_buffer("pos_embed", dit_position_embedding(shape.side, shape.patch, dim));
  x_embed = register_module("x_embed", PatchEmbed(shape.patch, shape.channels, dim));
  sig_embed = register_module("sig_embed", SigmaEmbedder(dim));
  if (shape.num_classes > 0) cond_embed = register_module("cond_embed", LabelEmbedder(dim, shape.num_classes));
  blocks = register_module("blocks", CondSequential());
  for (int64_t i = 0; i < shape.depth; ++i)
    blocks->push_back(DiTBlock(shape.head_dim, shape.num_heads, shape.mlp_ratio).ptr());
  final_norm = register_module("final_norm", ModulatedLayerNorm(dim));
  final_linear = register_module("final_linear", torch::nn::Linear(dim, shape.patch * shape.patch * shape.channels));
  initialize();
}

void DiTImpl::initialize() {
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
  const auto& w = x_embed->proj->weight;
  torch::nn::init::xavier_uniform_(w.view({w.size(0), -1}));  // as a Linear over the flattened patch
  x_embed->proj->bias.zero_();
  for (int i : {0, 2}) torch::nn::init::normal_(sig_embed->mlp[i]->as<torch::nn::Linear>()->weight, 0.0, 0.02);
  // The reference zeroes the modulations when it builds them, then re-initialises them
  // with the other linears; adaLN-Zero keeps them zero.
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* modulation = module->as<ModulationImpl>()) {
      for (auto& p : modulation->parameters()) p.zero_();
    }
  }
  final_linear->weight.zero_();
  final_linear->bias.zero_();
}

torch::Tensor DiTImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels) {
  const auto& s = shape_;
  if (x.dim() != 4 || x.size(1) != s.channels || x.size(2) != s.side || x.size(3) != s.side)
    fail("dit: expected input of shape [B, {}, {}, {}], got {}", s.channels, s.side, s.side, x.sizes());
  const int64_t batch = x.size(0), n = s.side / s.patch;
  check_labels("dit", s.num_classes, batch, labels);
  auto tokens = x_embed->forward(s.scaled_input ? scale_input(x, sigma) : x) + pos_embed;  // [B, N, D]
  auto cond = sig_embed->forward(batch, sigma);    // [B, D]
  if (cond_embed) cond = cond + cond_embed->forward(labels);
  tokens = final_linear->forward(final_norm->forward(blocks->forward(tokens, cond), cond));  // [B, N, p*p*C]
  // [B, (rows cols), (p_row p_col C)] -> [B, C, rows*p, cols*p]
  return tokens.reshape({batch, n, n, s.patch, s.patch, s.channels})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({batch, s.channels, s.side, s.side});
}

// ---- registry row ---------------------------------------------------------------------

void resolve_dit_config(ModelConfig& m) {
  if (!m.patch) m.patch = 2;
  if (!m.depth) m.depth = 6;
  if (!m.head_dim) m.head_dim = 32;
  if (!m.num_heads) m.num_heads = 6;
  if (!m.mlp_ratio) m.mlp_ratio = 4.0;
  if (!m.scaled_input) m.scaled_input = false;  // the reference's DiT sees raw x
  const std::initializer_list<std::pair<const char*, int64_t>> counts{
      {"patch", *m.patch}, {"depth", *m.depth}, {"head_dim", *m.head_dim}, {"num_heads", *m.num_heads}};
  for (const auto& [key, value] : counts)
    if (value < 1) fail("config: key 'model.{}': must be >= 1, got {}", key, value);
  // The product's remainder from the factors' remainders: no overflow for any int64 values.
  if ((*m.head_dim % 4) * (*m.num_heads % 4) % 4 != 0)
    fail("config: keys 'model.head_dim' and 'model.num_heads': the width head_dim * num_heads = {} * {} must be a "
         "multiple of 4 for the 2-d position embedding",
         *m.head_dim, *m.num_heads);
  if (!(*m.mlp_ratio > 0) || !std::isfinite(*m.mlp_ratio))
    fail("config: key 'model.mlp_ratio': must be a finite number > 0, got {}", *m.mlp_ratio);
  const long double hidden = static_cast<long double>(*m.head_dim) * *m.num_heads * *m.mlp_ratio;
  if (hidden < 1)
    fail("config: key 'model.mlp_ratio': {} gives the blocks' MLP no hidden unit (head_dim * num_heads * "
         "mlp_ratio = {:.3g})",
         *m.mlp_ratio, static_cast<double>(hidden));
}

void check_dit_shape(const ModelConfig& m, const std::vector<int64_t>& shape, const std::string& shape_source) {
  if (shape.size() != 3 || shape[0] < 1 || shape[1] < 1 || shape[1] != shape[2])
    fail("{}: examples of shape [{}] do not fit model 'dit', which takes square images [channels, side, side]",
         shape_source, fmt::join(shape, ", "));
  if (shape[1] % *m.patch != 0)
    fail("{}: images of side {} do not divide into patches of model.patch {}", shape_source, shape[1], *m.patch);
}

namespace {

// Counted in long double, so that no setting overflows it.
struct DiTSizes {
  long double tokens, patch_values, dim, hidden, heads;
};

DiTSizes dit_sizes(const ModelConfig& m, const std::vector<int64_t>& shape) {
  const long double dim = static_cast<long double>(*m.head_dim) * *m.num_heads;
  const long double per_side = static_cast<long double>(shape[1] / *m.patch);
  const long double hidden = std::floor(static_cast<double>(dim) * *m.mlp_ratio);  // as DiTBlock computes it
  return {per_side * per_side, static_cast<long double>(*m.patch) * *m.patch * shape[0], dim, hidden,
          static_cast<long double>(*m.num_heads)};
}

}  // namespace

long double dit_parameter_count(const ModelConfig& m, const std::vector<int64_t>& shape) {
  const auto [tokens, patch_values, d, hidden, heads] = dit_sizes(m, shape);
  (void)heads;
  const auto linear = [](long double in, long double out) { return (in + 1) * out; };
  const long double modulation = linear(d, 2 * d);
  const long double block = modulation + linear(d, 3 * d) + linear(d, d) + modulation + linear(d, hidden) +
                            linear(hidden, d) + modulation;
  long double count = tokens * d                          // pos_embed
                      + linear(patch_values, d)           // x_embed
                      + linear(2, d) + linear(d, d)       // sig_embed
                      + *m.depth * block + modulation + linear(d, patch_values);
  if (m.num_classes > 0) count += (m.num_classes + 1) * d + linear(d, d);
  return count;
}

// Without autograd a block holds the residual stream, its normed copy, q/k/v and the
// attention weights (before and after the softmax), or the MLP's hidden layer.
double dit_activation_count(const ModelConfig& m, const std::vector<int64_t>& shape) {
  const auto [tokens, patch_values, d, hidden, heads] = dit_sizes(m, shape);
  (void)patch_values;
  const long double attention = 3 * tokens * d + 2 * heads * tokens * tokens + tokens * d;
  const long double mlp = 2 * tokens * hidden;
  return static_cast<double>(2 * tokens * d + std::max(attention, mlp));
}

DiT make_dit(const ModelConfig& m, const std::vector<int64_t>& shape) {
  return DiT(DiTShape{shape[0], shape[1], *m.patch, *m.depth, *m.head_dim,
                      *m.num_heads, *m.mlp_ratio, m.num_classes, *m.scaled_input});
}

}  // namespace difftrain
