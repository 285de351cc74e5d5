#pragma once
// The reference library's U-Net (after the DDIM/PNDM one): residual blocks conditioned on
// the sigma (and label) embedding, self-attention at chosen resolutions, halving the image
// per level on the way down and doubling it on the way up with the down path's outputs
// concatenated in. Module and parameter names are the reference's, so state dicts carry
// over both ways.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/models/denoiser.h"
#include "difftrain/models/layers.h"
#include "difftrain/models/model_config.h"

namespace difftrain {

// GroupNorm, SiLU, 3x3 conv; plus the projected embedding; GroupNorm, SiLU, dropout, 3x3
// conv; added to the input (through a 1x1 `shortcut` conv when the channels change).
class ResnetBlockImpl : public CondModule {
 public:
  ResnetBlockImpl(int64_t in_ch, int64_t out_ch, int64_t temb_ch, double dropout);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) override;

  torch::nn::Sequential layer1{nullptr}, temb_proj{nullptr}, layer2{nullptr};
  torch::nn::Conv2d shortcut{nullptr};  // only when in_ch != out_ch
};
TORCH_MODULE(ResnetBlock);

// One-head self-attention over the pixels (GroupNorm first, 1x1 conv after), added to the
// input. Takes the embedding only to sit in a CondSequential.
class AttnBlockImpl : public CondModule {
 public:
  explicit AttnBlockImpl(int64_t ch);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) override;

  torch::nn::GroupNorm norm{nullptr};
  Attention attn{nullptr};
  torch::nn::Conv2d proj_out{nullptr};
};
TORCH_MODULE(AttnBlock);

// One resolution of the U-Net: `blocks` (each a ResnetBlock, then an AttnBlock at the
// attention resolutions) and, except at the last level, the resampling layer, registered
// as `downsample` (zero-pad right and bottom, 3x3 conv with stride 2) or `upsample`
// (nearest x2, 3x3 conv).
class UNetLevelImpl : public torch::nn::Module {
 public:
  void add_block(CondSequential block);
  void set_resample(const std::string& name, torch::nn::Sequential layer);

  std::vector<CondSequential> blocks;
  torch::nn::Sequential resample{nullptr};

 private:
  torch::nn::ModuleList block_list_{nullptr};
};
TORCH_MODULE(UNetLevel);

struct UNetShape {
  int64_t channels, side, ch;
  std::vector<int64_t> ch_mult, attn_res;
  int64_t num_res_blocks;
  double dropout;
  bool scaled_input;
  int64_t num_classes = 0;
};

class UNetImpl : public Denoiser {
 public:
  explicit UNetImpl(const UNetShape& shape);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma,
                        const torch::Tensor& labels = {}) override;
  int64_t num_classes() const override { return shape_.num_classes; }
  std::vector<int64_t> input_dims() const override { return {shape_.channels, shape_.side, shape_.side}; }

  SigmaEmbedder sig_embed{nullptr};
  LabelEmbedder cond_embed{nullptr};  // only when num_classes > 0
  torch::nn::Conv2d conv_in{nullptr};
  std::vector<UNetLevel> downs, ups;
  CondSequential mid{nullptr};
  torch::nn::Sequential out_layer{nullptr};

 private:
  UNetShape shape_;
};
TORCH_MODULE(UNet);

// The registry's row for "unet": defaults and ranges of its keys, the example shapes it
// takes ([C, H, H] with H halving cleanly at every level, and model.attn_res among the
// resolutions visited), its weight count and the values per example a forward holds at
// its peak.
void resolve_unet_config(ModelConfig& m);
void check_unet_shape(const ModelConfig& m, const std::vector<int64_t>& sample_shape, const std::string& shape_source);
long double unet_parameter_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);
double unet_activation_count(const ModelConfig& m, const std::vector<int64_t>& sample_shape);
UNet make_unet(const ModelConfig& m, const std::vector<int64_t>& sample_shape);

}  // namespace difftrain
