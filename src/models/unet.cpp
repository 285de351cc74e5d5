#include "difftrain/models/unet.h"

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

#include "difftrain/error.h"

namespace difftrain {

namespace {

constexpr int64_t kGroups = 32;
constexpr double kNormEps = 1e-6;
constexpr int64_t kEmbedMult = 4;  // the embedding is 4 * ch wide

torch::nn::GroupNorm group_norm(int64_t ch) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(kGroups, ch).eps(kNormEps));
}

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, int64_t padding = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(padding));
}

torch::nn::Conv2d conv1x1(int64_t in, int64_t out) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)); }

// The resolutions the levels work at: side, side/2, ... (one per ch_mult entry).
template <typename Side>
std::vector<Side> level_resolutions(Side side, std::size_t levels) {
  std::vector<Side> res;
  for (std::size_t i = 0; i < levels; ++i, side /= 2) res.push_back(side);
  return res;
}

bool has(const std::vector<int64_t>& values, int64_t v) { return std::find(values.begin(), values.end(), v) != values.end(); }

}  // namespace

ResnetBlockImpl::ResnetBlockImpl(int64_t in_ch, int64_t out_ch, int64_t temb_ch, double dropout) {
  layer1 = register_module("layer1", torch::nn::Sequential(group_norm(in_ch), torch::nn::SiLU(), conv3x3(in_ch, out_ch)));
  temb_proj = register_module("temb_proj", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(temb_ch, out_ch)));
  layer2 = register_module("layer2", torch::nn::Sequential(group_norm(out_ch), torch::nn::SiLU(),
                                                           torch::nn::Dropout(dropout), conv3x3(out_ch, out_ch)));
  if (in_ch != out_ch) shortcut = register_module("shortcut", conv1x1(in_ch, out_ch));
}

torch::Tensor ResnetBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto h = layer1->forward(x) + temb_proj->forward(temb).unsqueeze(-1).unsqueeze(-1);
  h = layer2->forward(h);
  return (shortcut ? shortcut->forward(x) : x) + h;
}

AttnBlockImpl::AttnBlockImpl(int64_t ch) {
  norm = register_module("norm", group_norm(ch));
  attn = register_module("attn", Attention(ch, 1, /*qkv_bias=*/false));
  proj_out = register_module("proj_out", conv1x1(ch, ch));
}

torch::Tensor AttnBlockImpl::forward(const torch::Tensor& x, const torch::Tensor&) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto pixels = norm->forward(x).flatten(2).transpose(1, 2);  // [B, H*W, C]
  const auto mixed = attn->forward(pixels).transpose(1, 2).reshape({b, c, h, w});
  return x + proj_out->forward(mixed);
}

void UNetLevelImpl::add_block(CondSequential block) {
  if (!block_list_) block_list_ = register_module("blocks", torch::nn::ModuleList());
  block_list_->push_back(block);
  blocks.push_back(std::move(block));
}

void UNetLevelImpl::set_resample(const std::string& name, torch::nn::Sequential layer) {
  resample = register_module(name, std::move(layer));
}

UNetImpl::UNetImpl(const UNetShape& s) : shape_(s) {
  const int64_t temb_ch = kEmbedMult * s.ch;
  const auto block = [&](int64_t in, int64_t out, bool with_attention) {
    CondSequential seq;
    seq->push_back(ResnetBlock(in, out, temb_ch, s.dropout).ptr());
    if (with_attention) seq->push_back(AttnBlock(out).ptr());
    return seq;
  };
  sig_embed = register_module("sig_embed", SigmaEmbedder(temb_ch));
  if (s.num_classes > 0) cond_embed = register_module("cond_embed", LabelEmbedder(temb_ch, s.num_classes));
  conv_in = register_module("conv_in", conv3x3(s.channels, s.ch));

  // Channels entering and leaving each level: ch, ch * ch_mult[0], ch * ch_mult[1], ...
  std::vector<int64_t> level_ch{s.ch};
  for (int64_t m : s.ch_mult) level_ch.push_back(s.ch * m);
  const std::size_t levels = s.ch_mult.size();
  const auto resolution = level_resolutions(s.side, levels);

  auto down_list = register_module("downs", torch::nn::ModuleList());
  int64_t block_in = s.ch;
  for (std::size_t i = 0; i < levels; ++i) {
    UNetLevel level;
    for (int64_t j = 0; j < s.num_res_blocks; ++j) {
      level->add_block(block(block_in, level_ch[i + 1], has(s.attn_res, resolution[i])));
      block_in = level_ch[i + 1];
    }
    if (i + 1 < levels)
      level->set_resample("downsample", torch::nn::Sequential(torch::nn::ZeroPad2d(torch::nn::ZeroPad2dOptions({0, 1, 0, 1})),
                                                              conv3x3(block_in, block_in, /*stride=*/2, /*padding=*/0)));
    down_list->push_back(level);
    downs.push_back(level);
  }

  mid = register_module("mid", CondSequential());
  mid->push_back(ResnetBlock(block_in, block_in, temb_ch, s.dropout).ptr());
  mid->push_back(AttnBlock(block_in).ptr());
  mid->push_back(ResnetBlock(block_in, block_in, temb_ch, s.dropout).ptr());

  // Each level up takes num_res_blocks + 1 skips: its own level's block outputs, then the
  // output of the level below it (or of conv_in).
  auto up_list = register_module("ups", torch::nn::ModuleList());
  for (std::size_t u = 0; u < levels; ++u) {
    const std::size_t i = levels - 1 - u;  // the matching down level
    UNetLevel level;
    for (int64_t j = 0; j <= s.num_res_blocks; ++j) {
      const int64_t skip_ch = j == s.num_res_blocks ? level_ch[i] : level_ch[i + 1];
      level->add_block(block(block_in + skip_ch, level_ch[i + 1], has(s.attn_res, resolution[i])));
      block_in = level_ch[i + 1];
    }
    if (i > 0)
      level->set_resample("upsample", torch::nn::Sequential(torch::nn::Upsample(torch::nn::UpsampleOptions()
                                                                                    .scale_factor(std::vector<double>{2, 2})
                                                                                    .mode(torch::kNearest)),
                                                            conv3x3(block_in, block_in)));
    up_list->push_back(level);
    ups.push_back(level);
  }

  out_layer = register_module(
      "out_layer", torch::nn::Sequential(group_norm(block_in), torch::nn::SiLU(), conv3x3(block_in, s.channels)));
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels) {
  const auto& s = shape_;
  if (x.dim() != 4 || x.size(1) != s.channels || x.size(2) != s.side || x.size(3) != s.side)
    fail("unet: expected input of shape [B, {}, {}, {}], got {}", s.channels, s.side, s.side, x.sizes());
  const int64_t batch = x.size(0);
  check_labels("unet", s.num_classes, batch, labels);
  auto emb = sig_embed->forward(batch, sigma);
  if (cond_embed) emb = emb + cond_embed->forward(labels);

  const auto input = s.scaled_input ? scale_input(x, sigma) : x;
  std::vector<torch::Tensor> skips{conv_in->forward(input)};
  for (auto& level : downs) {
    for (auto& block : level->blocks) skips.push_back(block->forward(skips.back(), emb));
    if (level->resample) skips.push_back(level->resample->forward(skips.back()));
  }
  auto h = mid->forward(skips.back(), emb);
  for (auto& level : ups) {
    for (auto& block : level->blocks) {
      h = block->forward(torch::cat({h, skips.back()}, 1), emb);
      skips.pop_back();
    }
    if (level->resample) h = level->resample->forward(h);
  }
  return out_layer->forward(h);
}

// ---- registry row ---------------------------------------------------------------------

void resolve_unet_config(ModelConfig& m) {
  if (!m.ch) m.ch = 64;
  if (!m.ch_mult) m.ch_mult = std::vector<int64_t>{1, 1, 2};
  if (!m.attn_res) m.attn_res = std::vector<int64_t>{14};
  if (!m.num_res_blocks) m.num_res_blocks = 2;
  if (!m.dropout) m.dropout = 0.1;
  if (!m.scaled_input) m.scaled_input = true;
  if (*m.ch < kGroups || *m.ch % kGroups != 0)
    fail("config: key 'model.ch': must be a positive multiple of {} (the group norms' {} groups), got {}", kGroups,
         kGroups, *m.ch);
  if (m.ch_mult->empty()) fail("config: key 'model.ch_mult': needs at least one level");
  for (int64_t v : *m.ch_mult)
    if (v < 1) fail("config: key 'model.ch_mult': every multiplier must be >= 1, got {}", v);
  for (int64_t v : *m.attn_res)
    if (v < 1) fail("config: key 'model.attn_res': every resolution must be >= 1, got {}", v);
  if (*m.num_res_blocks < 1) fail("config: key 'model.num_res_blocks': must be >= 1, got {}", *m.num_res_blocks);
  if (!(*m.dropout >= 0 && *m.dropout < 1)) fail("config: key 'model.dropout': must be in [0, 1), got {}", *m.dropout);
}

void check_unet_shape(const ModelConfig& m, const std::vector<int64_t>& shape, const std::string& shape_source) {
  if (shape.size() != 3 || shape[0] < 1 || shape[1] < 1 || shape[1] != shape[2])
    fail("{}: examples of shape [{}] do not fit model 'unet', which takes square images [channels, side, side]",
         shape_source, fmt::join(shape, ", "));
  const std::size_t levels = m.ch_mult->size();
  int64_t side = shape[1];
  for (std::size_t i = 1; i < levels; ++i, side /= 2)
    if (side % 2 != 0)
      fail("{}: images of side {} do not halve {} times, as model.ch_mult's {} levels need", shape_source, shape[1],
           levels - 1, levels);
  const auto visited = level_resolutions(shape[1], levels);
  for (int64_t r : *m.attn_res)
    if (!has(visited, r))
      fail("{}: model.attn_res holds {}, but on images of side {} the U-Net works at resolutions {}", shape_source, r,
           shape[1], fmt::join(visited, ", "));
}

namespace {

// Walks the levels as UNetImpl builds them, in long double so that no setting overflows:
// `block(in, out, resolution, attention)` for every block (mid included), `resample(ch,
// resolution)` for every down- and upsampling layer (at the resolution it reads).
template <typename Block, typename Resample>
void walk_unet(const ModelConfig& m, const std::vector<int64_t>& shape, Block&& block, Resample&& resample) {
  const long double ch = static_cast<long double>(*m.ch);
  const std::size_t levels = m.ch_mult->size();
  std::vector<long double> level_ch{ch};
  for (int64_t mult : *m.ch_mult) level_ch.push_back(ch * mult);
  const auto res = level_resolutions(shape[1], levels);
  long double block_in = ch;
  for (std::size_t i = 0; i < levels; ++i) {
    for (int64_t j = 0; j < *m.num_res_blocks; ++j, block_in = level_ch[i + 1])
      block(block_in, level_ch[i + 1], res[i], has(*m.attn_res, res[i]));
    if (i + 1 < levels) resample(block_in, res[i]);
  }
  block(block_in, block_in, res.back(), true);
  block(block_in, block_in, res.back(), false);
  for (std::size_t u = 0; u < levels; ++u) {
    const std::size_t i = levels - 1 - u;
    for (int64_t j = 0; j <= *m.num_res_blocks; ++j, block_in = level_ch[i + 1])
      block(block_in + (j == *m.num_res_blocks ? level_ch[i] : level_ch[i + 1]), level_ch[i + 1], res[i],
            has(*m.attn_res, res[i]));
    if (i > 0) resample(block_in, res[i]);
  }
}

long double linear(long double in, long double out) { return (in + 1) * out; }
long double conv(long double in, long double out, long double k) { return (in * k * k + 1) * out; }

}  // namespace

long double unet_parameter_count(const ModelConfig& m, const std::vector<int64_t>& shape) {
  const long double ch = static_cast<long double>(*m.ch), temb = kEmbedMult * ch, channels = shape[0];
  long double count = linear(2, temb) + linear(temb, temb);
  if (m.num_classes > 0) count += (m.num_classes + 1) * temb + linear(temb, temb);
  count += conv(channels, ch, 3);
  const auto norm = [](long double c) { return 2 * c; };
  long double last_out = ch;
  walk_unet(
      m, shape,
      [&](long double in, long double out, int64_t, bool attention) {
        count += norm(in) + conv(in, out, 3) + linear(temb, out) + norm(out) + conv(out, out, 3);
        if (in != out) count += conv(in, out, 1);
        if (attention) count += norm(out) + 3 * out * out + linear(out, out) + conv(out, out, 1);
        last_out = out;
      },
      [&](long double c, int64_t) { count += conv(c, c, 3); });
  return count + norm(last_out) + conv(last_out, channels, 3);
}

// Without autograd the forward keeps every skip until the way up takes it, and besides
// them about four maps of the block at hand (its input, the concatenation, the block's
// two convolutions) and, at an attention, q, k, v and the [pixels x pixels] weights
// before and after the softmax.
double unet_activation_count(const ModelConfig& m, const std::vector<int64_t>& shape) {
  const long double ch = static_cast<long double>(*m.ch);
  long double skips = ch * shape[1] * shape[1], peak = 0;
  walk_unet(
      m, shape,
      [&](long double in, long double out, int64_t res, bool attention) {
        const long double pixels = static_cast<long double>(res) * res;
        long double here = 2 * (in + out) * pixels;
        if (attention) here = std::max(here, 4 * out * pixels + 2 * pixels * pixels);
        peak = std::max(peak, here);
      },
      [](long double, int64_t) {});
  // The skips: conv_in's output, every down block's, and every downsampling's.
  const auto res = level_resolutions(shape[1], m.ch_mult->size());
  for (std::size_t i = 0; i < res.size(); ++i) {
    const long double pixels = static_cast<long double>(res[i]) * res[i];
    skips += *m.num_res_blocks * ch * (*m.ch_mult)[i] * pixels;
    if (i + 1 < res.size()) skips += ch * (*m.ch_mult)[i] * pixels / 4;
  }
  return static_cast<double>(skips + peak);
}

UNet make_unet(const ModelConfig& m, const std::vector<int64_t>& shape) {
  return UNet(UNetShape{shape[0], shape[1], *m.ch, *m.ch_mult, *m.attn_res, *m.num_res_blocks, *m.dropout,
                        *m.scaled_input, m.num_classes});
}

}  // namespace difftrain
