#pragma once
// The diffusion transformer (DiT) of the reference library: patches of the image become
// tokens, transformer blocks whose layer norms and residual gates are modulated by the
// sigma (and label) embedding (adaLN-Zero), and a linear layer back to patches. Module
// and parameter names are the reference's, so state dicts carry over both ways.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/models/denoiser.h"
#include "difftrain/models/layers.h"
#include "difftrain/models/model_config.h"

namespace difftrain {

// The fixed 2-d sin/cos position embedding, [1, n*n, dim] for n = side / patch patches
// per side: the first half of each row encodes the patch's column, the second its row,
// each as [sin, cos](pos * 10000^(-j / (dim/4))), j < dim/4. dim must divide by 4.
torch::Tensor dit_position_embedding(int64_t side, int64_t patch, int64_t dim);

// [B, C, H, W] -> [B, (H/p)(W/p), dim] by a convolution with kernel = stride = patch.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t patch, int64_t channels, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

// cond [B, dim] -> n tensors [B, 1, dim] from SiLU then one Linear (`proj.1`).
class ModulationImpl : public torch::nn::Module {
 public:
  ModulationImpl(int64_t dim, int64_t n);
  std::vector<torch::Tensor> forward(const torch::Tensor& cond);

  torch::nn::Sequential proj{nullptr};

 private:
  int64_t n_;
};
TORCH_MODULE(Modulation);

// A layer norm without its own weights (eps 1e-6) whose scale and shift come from the
// conditioning: norm(x) * (1 + scale) + shift.
class ModulatedLayerNormImpl : public torch::nn::Module {
 public:
  explicit ModulatedLayerNormImpl(int64_t dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond);

  Modulation modulation{nullptr};

 private:
  int64_t dim_;
};
TORCH_MODULE(ModulatedLayerNorm);

// x + gate_msa * attn(norm1(x)), then x + gate_mlp * mlp(norm2(x)), the gates from
// `scale_modulation`.
class DiTBlockImpl : public CondModule {
 public:
  DiTBlockImpl(int64_t head_dim, int64_t num_heads, double mlp_ratio);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond) override;

  ModulatedLayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  torch::nn::Sequential mlp{nullptr};
  Modulation scale_modulation{nullptr};
};
TORCH_MODULE(DiTBlock);

struct DiTShape {
  int64_t channels, side, patch, depth, head_dim, num_heads;
  double mlp_ratio;
  int64_t num_classes = 0;
  bool scaled_input = false;
};

class DiTImpl : public Denoiser {
 public:
  explicit DiTImpl(const DiTShape& shape);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma,
                        const torch::Tensor& labels = {}) override;
  int64_t num_classes() const override { return shape_.num_classes; }
  std::vector<int64_t> input_dims() const override { return {shape_.channels, shape_.side, shape_.side}; }

  torch::Tensor pos_embed;
  PatchEmbed x_embed{nullptr};
  SigmaEmbedder sig_embed{nullptr};
  LabelEmbedder cond_embed{nullptr};  // only when num_classes > 0
  CondSequential blocks{nullptr};
  ModulatedLayerNorm final_norm{nullptr};
  torch::nn::Linear final_linear{nullptr};

 private:
  // adaLN-Zero: xavier-uniform linears with zero biases, N(0, 0.02) sigma-MLP weights, and
  // every modulation and the output layer zero, so each block starts as the identity and
  // the untrained network outputs 0.
  void initialize();

  DiTShape shape_;
};
TORCH_MODULE(DiT);

// The registry's row for "dit": defaults and ranges of its keys, the example shapes it
// takes ([C, H, H] with H divisible by model.patch), its weight count (the fixed position
// embedding included) and the values per example a forward holds at its peak.
void resolve_dit_config(ModelConfig& m);
void check_dit_shape(const ModelConfig& m, const std::vector<int64_t>& sample_shape, const std::string& shape_source);
long double dit_parameter_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);
double dit_activation_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);
DiT make_dit(const ModelConfig& m, const std::vector<int64_t>& sample_shape);

}  // namespace difftrain
