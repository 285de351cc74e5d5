// The image models (DiT, U-Net): shapes in and out, parameter names and shapes as the
// reference library's PyTorch modules have them, adaLN-Zero initialisation, labels, the
// attention formula, training on a tiny batch, and config errors naming their keys.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include "difftrain/core/diffusion.h"
#include "difftrain/models/dit.h"
#include "difftrain/models/layers.h"
#include "difftrain/models/registry.h"
#include "difftrain/models/unet.h"
#include "test_util.h"

namespace difftrain {
namespace {

using test::error_of;
using Shapes = std::map<std::string, std::vector<int64_t>>;

ModelConfig small_dit(int64_t num_classes) {
  ModelConfig c;
  c.type = "dit";
  c.patch = 2, c.depth = 2, c.head_dim = 4, c.num_heads = 2, c.mlp_ratio = 1.3;  // width 8, MLP int(10.4) = 10
  c.num_classes = num_classes;
  return c;
}

ModelConfig small_unet(int64_t num_classes) {
  ModelConfig c;
  c.type = "unet";
  c.ch = 32, c.ch_mult = std::vector<int64_t>{1, 2}, c.attn_res = std::vector<int64_t>{4}, c.num_res_blocks = 1;
  c.num_classes = num_classes;
  return c;
}

ModelConfig type_only(const std::string& type) {
  ModelConfig c;
  c.type = type;
  return c;
}

Shapes state_shapes(torch::nn::Module& model) {
  Shapes shapes;
  for (const auto& p : model.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : model.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
  return shapes;
}

// Seeded values of about 0.1 in every parameter, so that no layer is the zero map.
void perturb(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : model.parameters()) p.copy_(torch::randn(p.sizes(), gen) * 0.1);
}

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

// ---- shapes -----------------------------------------------------------------------------

TEST(ImageModels, OutputHasTheInputShapeForEverySigmaShape) {
  const std::vector<int64_t> shape{2, 8, 8};
  const int64_t batch = 3;
  for (const auto& base : {small_dit(0), small_dit(5), small_unet(0), small_unet(5)}) {
    auto model = make_model(base, shape);
    perturb(*model, 1);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({batch, 2, 8, 8});
    const auto labels = base.num_classes > 0 ? torch::tensor({0, 5, 2}, torch::kLong) : torch::Tensor();
    for (const auto& sigma : {torch::tensor(0.7), torch::rand({batch}) + 0.1, torch::rand({batch, 1, 1, 1}) + 0.1}) {
      const auto out = model->forward(x, sigma, labels);
      EXPECT_EQ(out.sizes(), x.sizes()) << base.type << " num_classes " << base.num_classes << " sigma " << sigma.sizes();
      EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
    }
    EXPECT_EQ(model->input_dims(), shape);
    EXPECT_EQ(model->num_classes(), base.num_classes);
  }
}

// A sigma of shape [] means one level for the batch, [B] and [B, 1, 1, 1] one per example:
// all three say the same thing here and must give the same output.
TEST(ImageModels, SigmaShapesThatSayTheSameGiveTheSameOutput) {
  for (const auto& base : {small_dit(0), small_unet(0)}) {
    auto model = make_model(base, {1, 8, 8});
    perturb(*model, 2);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 1, 8, 8});
    const auto a = model->forward(x, torch::tensor(0.3));
    EXPECT_TRUE(torch::allclose(a, model->forward(x, torch::full({2}, 0.3))));
    EXPECT_TRUE(torch::allclose(a, model->forward(x, torch::full({2, 1, 1, 1}, 0.3))));
    EXPECT_FALSE(torch::allclose(a, model->forward(x, torch::tensor(3.0)))) << base.type << " ignores sigma";
  }
}

// ---- names and shapes, written from the reference's module structure ---------------------

TEST(ImageModels, DiTStateHasTheReferenceNamesAndShapes) {
  // dim = 4 * 2 = 8, 4 patches of 2x2 on a 1x4x4 image, MLP width int(8 * 1.3) = 10, 3 classes.
  Shapes expected{
      {"pos_embed", {1, 4, 8}},
      {"x_embed.proj.weight", {8, 1, 2, 2}},
      {"x_embed.proj.bias", {8}},
      {"sig_embed.mlp.0.weight", {8, 2}},
      {"sig_embed.mlp.0.bias", {8}},
      {"sig_embed.mlp.2.weight", {8, 8}},
      {"sig_embed.mlp.2.bias", {8}},
      {"cond_embed.embeddings.weight", {4, 8}},
      {"cond_embed.mlp.1.weight", {8, 8}},
      {"cond_embed.mlp.1.bias", {8}},
      {"final_norm.modulation.proj.1.weight", {16, 8}},
      {"final_norm.modulation.proj.1.bias", {16}},
      {"final_linear.weight", {4, 8}},
      {"final_linear.bias", {4}},
  };
  for (const std::string b : {"blocks.0.", "blocks.1."}) {
    expected[b + "norm1.modulation.proj.1.weight"] = {16, 8};
    expected[b + "norm1.modulation.proj.1.bias"] = {16};
    expected[b + "attn.qkv.weight"] = {24, 8};
    expected[b + "attn.qkv.bias"] = {24};
    expected[b + "attn.proj.weight"] = {8, 8};
    expected[b + "attn.proj.bias"] = {8};
    expected[b + "norm2.modulation.proj.1.weight"] = {16, 8};
    expected[b + "norm2.modulation.proj.1.bias"] = {16};
    expected[b + "mlp.0.weight"] = {10, 8};
    expected[b + "mlp.0.bias"] = {10};
    expected[b + "mlp.2.weight"] = {8, 10};
    expected[b + "mlp.2.bias"] = {8};
    expected[b + "scale_modulation.proj.1.weight"] = {16, 8};
    expected[b + "scale_modulation.proj.1.bias"] = {16};
  }
  auto model = make_model(small_dit(3), {1, 4, 4});
  EXPECT_EQ(state_shapes(*model), expected);
  // The position embedding is fixed: a buffer, never trained.
  ASSERT_EQ(model->named_buffers().size(), 1u);
  EXPECT_TRUE(model->named_buffers().contains("pos_embed"));
  EXPECT_FALSE(model->named_parameters().contains("pos_embed"));
  // Unconditional: no cond_embed at all.
  const auto unconditional = state_shapes(*make_model(small_dit(0), {1, 4, 4}));
  EXPECT_EQ(unconditional.size(), expected.size() - 3);
  EXPECT_EQ(unconditional.count("cond_embed.embeddings.weight"), 0u);
}

void expect_resnet(Shapes& s, const std::string& p, int64_t in, int64_t out, int64_t temb) {
  s[p + "layer1.0.weight"] = {in};
  s[p + "layer1.0.bias"] = {in};
  s[p + "layer1.2.weight"] = {out, in, 3, 3};
  s[p + "layer1.2.bias"] = {out};
  s[p + "temb_proj.1.weight"] = {out, temb};
  s[p + "temb_proj.1.bias"] = {out};
  s[p + "layer2.0.weight"] = {out};
  s[p + "layer2.0.bias"] = {out};
  s[p + "layer2.3.weight"] = {out, out, 3, 3};
  s[p + "layer2.3.bias"] = {out};
  if (in != out) {
    s[p + "shortcut.weight"] = {out, in, 1, 1};
    s[p + "shortcut.bias"] = {out};
  }
}

void expect_attn(Shapes& s, const std::string& p, int64_t ch) {
  s[p + "norm.weight"] = {ch};
  s[p + "norm.bias"] = {ch};
  s[p + "attn.qkv.weight"] = {3 * ch, ch};  // no bias
  s[p + "attn.proj.weight"] = {ch, ch};
  s[p + "attn.proj.bias"] = {ch};
  s[p + "proj_out.weight"] = {ch, ch, 1, 1};
  s[p + "proj_out.bias"] = {ch};
}

TEST(ImageModels, UNetStateHasTheReferenceNamesAndShapes) {
  // ch 32, ch_mult [1, 2], one block per level, attention at 4 (the second level of an
  // 8x8 image), 2 channels in, 2 classes; the embedding is 4 * 32 = 128 wide.
  const int64_t t = 128;
  Shapes s{
      {"sig_embed.mlp.0.weight", {t, 2}},      {"sig_embed.mlp.0.bias", {t}},
      {"sig_embed.mlp.2.weight", {t, t}},      {"sig_embed.mlp.2.bias", {t}},
      {"cond_embed.embeddings.weight", {3, t}}, {"cond_embed.mlp.1.weight", {t, t}},
      {"cond_embed.mlp.1.bias", {t}},          {"conv_in.weight", {32, 2, 3, 3}},
      {"conv_in.bias", {32}},                  {"downs.0.downsample.1.weight", {32, 32, 3, 3}},
      {"downs.0.downsample.1.bias", {32}},     {"ups.0.upsample.1.weight", {64, 64, 3, 3}},
      {"ups.0.upsample.1.bias", {64}},         {"out_layer.0.weight", {32}},
      {"out_layer.0.bias", {32}},              {"out_layer.2.weight", {2, 32, 3, 3}},
      {"out_layer.2.bias", {2}},
  };
  // Down: 8x8 at 32 channels, then 4x4 at 64 with attention; no downsampling after the last.
  expect_resnet(s, "downs.0.blocks.0.0.", 32, 32, t);
  expect_resnet(s, "downs.1.blocks.0.0.", 32, 64, t);
  expect_attn(s, "downs.1.blocks.0.1.", 64);
  expect_resnet(s, "mid.0.", 64, 64, t);
  expect_attn(s, "mid.1.", 64);
  expect_resnet(s, "mid.2.", 64, 64, t);
  // Up, 4x4: skips of the 64-channel block, then of the downsampling (32); then 8x8: skips
  // of the 32-channel block and of conv_in.
  expect_resnet(s, "ups.0.blocks.0.0.", 64 + 64, 64, t);
  expect_attn(s, "ups.0.blocks.0.1.", 64);
  expect_resnet(s, "ups.0.blocks.1.0.", 64 + 32, 64, t);
  expect_attn(s, "ups.0.blocks.1.1.", 64);
  expect_resnet(s, "ups.1.blocks.0.0.", 64 + 32, 32, t);
  expect_resnet(s, "ups.1.blocks.1.0.", 32 + 32, 32, t);
  // 17 single entries, 10 per ResnetBlock (12 with a shortcut), 7 per AttnBlock.
  EXPECT_EQ(s.size(), 17u + 3 * 10 + 5 * 12 + 4 * 7);

  auto model = make_model(small_unet(2), {2, 8, 8});
  EXPECT_EQ(state_shapes(*model), s);
  EXPECT_EQ(model->named_buffers().size(), 0u);
}

// Parameter counts are made before anything is allocated (for the memory check); they
// must be what the built models hold.
TEST(ImageModels, ParameterCountsMatchTheBuiltModels) {
  struct Case {
    ModelConfig config;
    std::vector<int64_t> shape;
  };
  auto reference_dit = type_only("dit");
  reference_dit.num_classes = 10;
  auto deep_unet = small_unet(0);
  deep_unet.ch_mult = std::vector<int64_t>{1, 2, 3}, deep_unet.num_res_blocks = 2, deep_unet.attn_res = std::vector<int64_t>{8, 2};
  for (const auto& c : {Case{small_dit(3), {1, 4, 4}}, Case{reference_dit, {3, 16, 16}}, Case{small_unet(2), {2, 8, 8}},
                        Case{type_only("unet"), {1, 28, 28}}, Case{deep_unet, {3, 8, 8}}}) {
    ModelConfig resolved = c.config;
    resolve_model_config(resolved);
    auto model = make_model(resolved, c.shape);
    int64_t held = 0;
    for (const auto& p : model->parameters()) held += p.numel();
    for (const auto& b : model->buffers()) held += b.numel();
    const long double counted = resolved.type == "dit" ? dit_parameter_count(resolved, c.shape)
                                                      : unet_parameter_count(resolved, c.shape);
    EXPECT_EQ(static_cast<int64_t>(counted), held) << resolved.type;
    EXPECT_GT(inference_activations(resolved, c.shape), 0);
  }
}

// ---- labels -----------------------------------------------------------------------------

TEST(ImageModels, LabelsIncludeANoLabelRowAndChangeTheOutput) {
  for (const auto& base : {small_dit(4), small_unet(4)}) {
    auto model = make_model(base, {1, 8, 8});
    perturb(*model, 3);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 1, 8, 8});
    const auto sigma = torch::tensor(0.5);
    const auto null = model->forward(x, sigma, torch::full({2}, 4, torch::kLong));  // label 4 = "no label"
    const auto zero = model->forward(x, sigma, torch::zeros({2}, torch::kLong));
    EXPECT_FALSE(torch::allclose(null, zero)) << base.type;
    EXPECT_MENTIONS(error_of([&] { model->forward(x, sigma); }), "needs one label per example");
    EXPECT_MENTIONS(error_of([&] { model->forward(x, sigma, torch::zeros({3}, torch::kLong)); }),
                    "expected int64 labels of shape [2]");
  }
  auto unconditional = make_model(small_dit(0), {1, 8, 8});
  EXPECT_MENTIONS(error_of([&] { unconditional->forward(torch::zeros({2, 1, 8, 8}), torch::tensor(1.0), torch::zeros({2}, torch::kLong)); }),
                  "dit: the model is unconditional");
}

// The trainer drops labels itself with its own random stream: a model in training mode
// must not drop any more (the U-Net's dropout is off here, so only label dropout could
// make two passes differ).
TEST(ImageModels, TrainingModeDoesNoLabelDropout) {
  auto unet = small_unet(3);
  unet.dropout = 0.0;
  for (const auto& base : {small_dit(3), unet}) {
    auto model = make_model(base, {1, 8, 8});
    perturb(*model, 4);
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({64, 1, 8, 8});
    const auto labels = torch::randint(0, 3, {64}, torch::kLong);
    model->eval();
    const auto evaluated = model->forward(x, torch::tensor(0.5), labels);
    model->train();
    EXPECT_TRUE(torch::allclose(evaluated, model->forward(x, torch::tensor(0.5), labels), 1e-6, 1e-6)) << base.type;
  }
}

// ---- initialisation ---------------------------------------------------------------------

TEST(ImageModels, DiTStartsAsAdaLNZeroAndOutputsExactlyZero) {
  auto config = type_only("dit");  // the reference's Fashion-MNIST size: width 192
  config.num_classes = 10;
  auto model = make_model(config, {1, 28, 28});
  const auto params = model->named_parameters();
  int zeroed = 0;
  for (const auto& p : params) {
    const auto& name = p.key();
    const bool modulation = name.find("modulation.proj.1.") != std::string::npos;
    if (modulation || name.rfind("final_linear.", 0) == 0) {
      EXPECT_EQ(max_abs(p.value()), 0.0) << name;
      ++zeroed;
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
      EXPECT_EQ(max_abs(p.value()), 0.0) << name;
    }
  }
  EXPECT_EQ(zeroed, 6 * 3 * 2 + 2 + 2);  // three modulations per block, the final norm's, final_linear
  // Xavier-uniform: bound sqrt(6 / (fan_in + fan_out)); the patch embedding as a Linear
  // over its flattened [192, 1*2*2] view, not as a 4-d conv weight (whose bound is half).
  const auto bound = [](double fan_in, double fan_out) { return std::sqrt(6 / (fan_in + fan_out)); };
  const double qkv = max_abs(params["blocks.0.attn.qkv.weight"]), patch = max_abs(params["x_embed.proj.weight"]);
  EXPECT_LE(qkv, bound(192, 576));
  EXPECT_GT(qkv, 0.99 * bound(192, 576));
  EXPECT_LE(patch, bound(4, 192));
  EXPECT_GT(patch, 0.9 * bound(4, 192));
  // N(0, 0.02): the sample std of n values lies within 5 standard errors (0.02 / sqrt(2n))
  // of 0.02; the first layer has only 2 x 192 weights, so a fixed 10% would fail now and then.
  for (const char* name : {"sig_embed.mlp.0.weight", "sig_embed.mlp.2.weight"}) {
    const auto& w = params[name];
    EXPECT_NEAR(w.std().item<double>(), 0.02, 5 * 0.02 / std::sqrt(2.0 * w.numel())) << name;
  }

  const auto x = torch::randn({4, 1, 28, 28});
  const auto out = model->forward(x, torch::rand({4}) + 0.1, torch::tensor({0, 3, 9, 10}, torch::kLong));
  EXPECT_TRUE(torch::equal(out, torch::zeros_like(x)));
}

TEST(ImageModels, DiTPositionEmbeddingEncodesColumnThenRow) {
  // n = 3 patches per side, width 8: omega = [1, 10000^(-1/2)].
  const auto pe = dit_position_embedding(6, 2, 8);
  ASSERT_EQ(pe.sizes(), torch::IntArrayRef({1, 9, 8}));
  const double omega[] = {1.0, 0.01};
  for (int row = 0; row < 3; ++row)
    for (int col = 0; col < 3; ++col)
      for (int j = 0; j < 2; ++j) {
        const auto token = pe[0][row * 3 + col];
        EXPECT_NEAR(token[j].item<double>(), std::sin(col * omega[j]), 1e-6);
        EXPECT_NEAR(token[2 + j].item<double>(), std::cos(col * omega[j]), 1e-6);
        EXPECT_NEAR(token[4 + j].item<double>(), std::sin(row * omega[j]), 1e-6);
        EXPECT_NEAR(token[6 + j].item<double>(), std::cos(row * omega[j]), 1e-6);
      }
}

// ---- attention --------------------------------------------------------------------------

TEST(ImageModels, AttentionFormulaMatchesADirectComputation) {
  torch::manual_seed(5);
  const auto q = torch::randn({2, 3, 5, 4}), k = torch::randn({2, 3, 5, 4}), v = torch::randn({2, 3, 5, 4});
  const auto out = attention_reference(q, k, v);
  ASSERT_EQ(out.sizes(), q.sizes());
  const auto Q = q.to(torch::kFloat64), K = k.to(torch::kFloat64), V = v.to(torch::kFloat64);
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 5; ++i) {
        std::vector<double> w(5);
        double total = 0;
        for (int j = 0; j < 5; ++j) total += w[j] = std::exp((Q[b][h][i] * K[b][h][j]).sum().item<double>() / 2);
        for (int d = 0; d < 4; ++d) {
          double expected = 0;
          for (int j = 0; j < 5; ++j) expected += w[j] / total * V[b][h][j][d].item<double>();
          EXPECT_NEAR(out[b][h][i][d].item<double>(), expected, 1e-5);
        }
      }
}

TEST(ImageModels, FusedAttentionEqualsTheWrittenOutOne) {
#if TORCH_VERSION_MAJOR >= 2
  torch::manual_seed(6);
  const auto q = torch::randn({2, 3, 7, 8}), k = torch::randn({2, 3, 7, 8}), v = torch::randn({2, 3, 7, 8});
  EXPECT_TRUE(torch::allclose(attention(q, k, v), attention_reference(q, k, v), 1e-5, 1e-5));
#else
  GTEST_SKIP() << "LibTorch " << TORCH_VERSION << " has no fused attention; the written-out one is the only path";
#endif
}

// ---- scaled input (the reference's Scaled wrapper) -----------------------------------------

TEST(ImageModels, ScaledInputSeesXOverSqrtOnePlusSigmaSquared) {
  auto dit_scaled = small_dit(0), dit_plain = small_dit(0);
  dit_scaled.scaled_input = true;
  auto unet_scaled = small_unet(0), unet_plain = small_unet(0);
  unet_plain.scaled_input = false;
  const std::vector<std::pair<ModelConfig, ModelConfig>> pairs{{dit_scaled, dit_plain}, {unet_scaled, unet_plain}};
  for (const auto& [scaled, plain] : pairs) {
    auto a = make_model(scaled, {1, 8, 8}), b = make_model(plain, {1, 8, 8});
    perturb(*a, 7);  // the same weights: the wrapper has none of its own
    perturb(*b, 7);
    a->eval(), b->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 1, 8, 8});
    const auto sigma = torch::tensor({0.5, 4.0});
    const auto expected = b->forward(x / (1 + sigma * sigma).sqrt().reshape({2, 1, 1, 1}), sigma);
    EXPECT_TRUE(torch::allclose(a->forward(x, sigma), expected, 1e-5, 1e-5)) << scaled.type;
    EXPECT_FALSE(torch::allclose(b->forward(x, sigma), expected, 1e-3, 1e-3)) << plain.type;
  }
}

// ---- training -----------------------------------------------------------------------------

// Forty Adam steps on one fixed batch (fixed sigma and noise) must lower the loss well
// (here to about 0.43 of the start for the DiT, 0.03 for the U-Net).
TEST(ImageModels, LossFallsOnATinyFixedBatch) {
  for (const auto& base : {small_dit(3), small_unet(3)}) {
    torch::manual_seed(8);
    auto model = make_model(base, {1, 8, 8});
    model->train();
    torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(5e-3));
    TrainSample batch;
    batch.x0 = torch::rand({8, 1, 8, 8}) * 2 - 1;
    batch.sigma = torch::exp(torch::randn({8, 1, 1, 1}));
    batch.eps = torch::randn({8, 1, 8, 8});
    batch.labels = torch::randint(0, 4, {8}, torch::kLong);
    std::vector<double> losses;
    for (int step = 0; step < 40; ++step) {
      adam.zero_grad();
      auto loss = training_loss(*model, Parameterization::eps, batch);
      loss.backward();
      adam.step();
      losses.push_back(loss.item<double>());
    }
    const double first = (losses[0] + losses[1] + losses[2] + losses[3] + losses[4]) / 5;
    const double last = (losses[35] + losses[36] + losses[37] + losses[38] + losses[39]) / 5;
    EXPECT_LT(last, 0.6 * first) << base.type << ": " << first << " -> " << last;
  }
}

// ---- config -------------------------------------------------------------------------------

TEST(ImageModels, TypesAreListedInOrder) {
  EXPECT_EQ(model_types(), (std::vector<std::string>{"mlp", "dit", "unet"}));
}

TEST(ImageModels, DefaultsAreTheReferenceFashionMnistRecipes) {
  auto dit = type_only("dit");
  resolve_model_config(dit);
  EXPECT_EQ(*dit.patch, 2);
  EXPECT_EQ(*dit.depth, 6);
  EXPECT_EQ(*dit.head_dim, 32);
  EXPECT_EQ(*dit.num_heads, 6);
  EXPECT_EQ(*dit.mlp_ratio, 4.0);
  EXPECT_FALSE(*dit.scaled_input);  // the reference's DiT sees raw x
  auto unet = type_only("unet");
  resolve_model_config(unet);
  EXPECT_EQ(*unet.ch, 64);
  EXPECT_EQ(*unet.ch_mult, (std::vector<int64_t>{1, 1, 2}));
  EXPECT_EQ(*unet.attn_res, (std::vector<int64_t>{14}));
  EXPECT_EQ(*unet.num_res_blocks, 2);
  EXPECT_EQ(*unet.dropout, 0.1);
  EXPECT_TRUE(*unet.scaled_input);
}

TEST(ImageModels, ConfigErrorsNameTheKey) {
  const std::string source = "data/fmnist (dataset 'x')";
  const auto with = [](ModelConfig c, auto change) {
    change(c);
    return c;
  };
  struct Case {
    ModelConfig config;
    std::vector<int64_t> shape;
    std::string message;
  };
  const std::vector<Case> cases{
      {with(small_dit(0), [](ModelConfig& c) { c.patch = 3; }), {1, 8, 8},
       source + ": images of side 8 do not divide into patches of model.patch 3"},
      {small_dit(0), {1, 8, 6}, source + ": examples of shape [1, 8, 6] do not fit model 'dit'"},
      {small_dit(0), {64}, source + ": examples of shape [64] do not fit model 'dit'"},
      {with(small_dit(0), [](ModelConfig& c) { c.depth = 0; }), {1, 8, 8}, "key 'model.depth': must be >= 1, got 0"},
      {with(small_dit(0), [](ModelConfig& c) { c.head_dim = 3, c.num_heads = 3; }), {1, 8, 8},
       "keys 'model.head_dim' and 'model.num_heads': the width head_dim * num_heads = 3 * 3 must be a multiple of 4"},
      {with(small_dit(0), [](ModelConfig& c) { c.mlp_ratio = 0.0; }), {1, 8, 8}, "key 'model.mlp_ratio': must be"},
      {with(small_dit(0), [](ModelConfig& c) { c.mlp_ratio = 0.1; }), {1, 8, 8}, "key 'model.mlp_ratio': 0.1 gives"},
      {with(small_unet(0), [](ModelConfig& c) { c.ch = 48; }), {1, 8, 8},
       "key 'model.ch': must be a positive multiple of 32"},
      {with(small_unet(0), [](ModelConfig& c) { c.ch_mult = std::vector<int64_t>{1, 0}; }), {1, 8, 8},
       "key 'model.ch_mult'"},
      {with(small_unet(0), [](ModelConfig& c) { c.dropout = 1.0; }), {1, 8, 8}, "key 'model.dropout': must be in [0, 1)"},
      {with(small_unet(0), [](ModelConfig& c) { c.num_res_blocks = 0; }), {1, 8, 8}, "key 'model.num_res_blocks'"},
      {with(small_unet(0), [](ModelConfig& c) { c.attn_res = std::vector<int64_t>{5}; }), {1, 8, 8},
       source + ": model.attn_res holds 5, but on images of side 8 the U-Net works at resolutions 8, 4"},
      {type_only("unet"), {1, 28, 28}, ""},  // the recipe itself builds
      {with(type_only("dit"), [](ModelConfig& c) { c.head_dim = 1000000, c.num_heads = 1000000; }), {1, 28, 28},
       "model.head_dim 1000000, model.num_heads 1000000, model.mlp_ratio 4, model.scaled_input false makes a model of"},
      {with(type_only("unet"), [](ModelConfig& c) { c.ch = 3200000; }), {1, 28, 28},
       "config: model.type 'unet', model.ch 3200000, model.ch_mult [1, 1, 2]"},
      {with(type_only("unet"), [](ModelConfig& c) { c.ch_mult = std::vector<int64_t>{1, 1, 2, 2}; }), {1, 28, 28},
       source + ": images of side 28 do not halve 3 times, as model.ch_mult's 4 levels need"},
      {small_unet(0), {1, 8, 7}, source + ": examples of shape [1, 8, 7] do not fit model 'unet'"},
      {with(small_unet(0), [](ModelConfig& c) { c.patch = 2; }), {1, 8, 8},
       "key 'model.patch' does not apply to model type 'unet'"},
      {with(small_dit(0), [](ModelConfig& c) { c.ch = 32; }), {1, 8, 8},
       "key 'model.ch' does not apply to model type 'dit'"},
  };
  for (const auto& c : cases) {
    if (c.message.empty()) {
      EXPECT_NO_THROW(make_model(c.config, c.shape, source));
      continue;
    }
    EXPECT_MENTIONS(error_of([&] { make_model(c.config, c.shape, source); }), c.message);
  }
}

}  // namespace
}  // namespace difftrain
