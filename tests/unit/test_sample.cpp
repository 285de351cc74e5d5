// `difftrain sample` as a library call: options out of range name the option, too large an
// --n is refused before anything is allocated, the samples are finite at every step count
// of a small schedule and for guidance scales 0 to 7 on conditional image models, and
// non-finite samples are never written.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/registry.h"
#include "difftrain/sample/sample.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kN = 20;  // schedule.N of the test checkpoints

// An untrained model's checkpoint over a 20-sigma log-linear schedule; `edit` may change
// its EMA weights before they are saved.
std::string write_checkpoint(const test::TempDir& dir, const std::vector<std::string>& overrides = {},
                             const std::function<void(torch::OrderedDict<std::string, torch::Tensor>&)>& edit = {}) {
  std::vector<std::string> all{"model.hidden_dims=[16, 16]", fmt::format("schedule.N={}", kN), "sample.steps=5"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const Config config = parse_config("", "test", all);
  Checkpoint c;
  c.config_yaml = to_yaml(config);
  c.sample_shape = {2};
  auto model = make_model(config.model, c.sample_shape);
  c.model = state_dict(*model);
  c.ema = state_dict(*model);
  if (edit) edit(c.ema);
  const std::string path = dir / "model.pt";
  save_checkpoint(path, c);
  return path;
}

SampleOptions options_for(const std::string& checkpoint, const std::string& out) {
  SampleOptions o;
  o.checkpoint = checkpoint;
  o.out = out;
  o.n = 50;
  return o;
}

TEST(SampleCommand, FiniteAtEveryStepCountAndMu) {
  test::TempDir dir;
  const auto checkpoint = write_checkpoint(dir);
  int64_t runs = 0;
  for (double mu : {0.0, 0.5, 0.9}) {
    for (double gam : {1.0, 2.0}) {
      for (int64_t steps = 1; steps <= kN; ++steps) {
        auto o = options_for(checkpoint, dir / "s.h5");
        o.steps = steps, o.mu = mu, o.gam = gam;
        const auto samples = run_sample(o);
        ASSERT_EQ(samples.sizes(), torch::IntArrayRef({50, 2}));
        EXPECT_TRUE(torch::isfinite(samples).all().item<bool>()) << "steps=" << steps << " mu=" << mu << " gam=" << gam;
        ++runs;
      }
    }
  }
  EXPECT_EQ(runs, 3 * 2 * kN);
}

// A class-conditional image model over 8x8 grey images (3 classes), its EMA weights all
// moved by noise: the adaLN-Zero DiT starts out predicting exactly zero, and guidance
// would have nothing to amplify.
std::string write_conditional_checkpoint(const test::TempDir& dir, const std::vector<std::string>& model_keys) {
  std::vector<std::string> all{"model.num_classes=3", fmt::format("schedule.N={}", kN), "sample.steps=5",
                               "sample.class=all"};
  all.insert(all.end(), model_keys.begin(), model_keys.end());
  const Config config = parse_config("", "test", all);
  Checkpoint c;
  c.config_yaml = to_yaml(config);
  c.sample_shape = {1, 8, 8};
  auto model = make_model(config.model, c.sample_shape);
  c.model = state_dict(*model);
  torch::manual_seed(5);
  for (const auto& item : c.model) c.ema.insert(item.key(), item.value() + 0.2 * torch::randn_like(item.value()));
  const std::string path = dir / "conditional.pt";
  save_checkpoint(path, c);
  return path;
}

TEST(SampleCommand, GuidedSamplesAreFiniteForScalesZeroToSeven) {
  const std::vector<std::vector<std::string>> models{
      {"model.type=dit", "model.patch=2", "model.depth=2", "model.head_dim=8", "model.num_heads=2"},
      {"model.type=unet", "model.ch=32", "model.ch_mult=[1]", "model.attn_res=[8]", "model.num_res_blocks=1"}};
  for (const auto& keys : models) {
    test::TempDir dir;
    const auto checkpoint = write_conditional_checkpoint(dir, keys);
    torch::Tensor unguided;
    int64_t runs = 0;
    for (int scale = 0; scale <= 7; ++scale) {
      for (int64_t steps : {int64_t{1}, kN - 1, kN}) {
        for (double gam : {1.0, 2.0}) {
          auto o = options_for(checkpoint, dir / "s.h5");
          o.n = 4, o.cfg_scale = scale, o.steps = steps, o.gam = gam;
          const auto samples = run_sample(o);
          ASSERT_EQ(samples.sizes(), torch::IntArrayRef({4, 1, 8, 8})) << keys[0];
          EXPECT_TRUE(torch::isfinite(samples).all().item<bool>())
              << keys[0] << " scale=" << scale << " steps=" << steps << " gam=" << gam;
          if (scale == 0 && steps == kN && gam == 1.0) unguided = samples;
          // The scale reaches the sampler: the same noise gives other samples under guidance.
          if (scale == 7 && steps == kN && gam == 1.0) {
            EXPECT_FALSE(torch::equal(samples, unguided)) << keys[0];
          }
          ++runs;
        }
      }
    }
    EXPECT_EQ(runs, 8 * 3 * 2) << keys[0];
  }
}

TEST(SampleCommand, NonFiniteSamplesAreCountedAndNotWritten) {
  test::TempDir dir;
  // The last layer's first bias near float32's largest value (finite: a checkpoint never
  // holds NaN or Inf): the first coordinate of every eps estimate is huge, and one step of
  // size sigma overflows it to Inf; the second stays finite, so half the values are Inf.
  const auto checkpoint = write_checkpoint(dir, {}, [](auto& state) {
    auto& bias = state["net.4.bias"];
    bias = bias.clone();
    bias[0] = 3e38f;
  });
  const std::string out = dir / "s.h5";
  auto o = options_for(checkpoint, out);
  o.steps = 1;
  const auto message = test::error_of([&] { run_sample(o); });
  EXPECT_THAT(message, HasSubstr("50 of 100 values are NaN or Inf"));
  EXPECT_THAT(message, HasSubstr(out));
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(SampleCommand, OptionsOutOfRangeNameTheOption) {
  test::TempDir dir;
  const auto checkpoint = write_checkpoint(dir);
  const std::string out = dir / "s.h5";
  struct Case {
    const char* option;
    std::function<void(SampleOptions&)> set;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<Case> cases{
      {"--gam", [&](SampleOptions& o) { o.gam = nan; }},
      {"--gam", [](SampleOptions& o) { o.gam = 1e30; }},
      {"--gam", [](SampleOptions& o) { o.gam = -0.5; }},
      {"--gam", [](SampleOptions& o) { o.gam = 10.5; }},
      {"--mu", [](SampleOptions& o) { o.mu = 1; }},
      {"--mu", [](SampleOptions& o) { o.mu = -0.1; }},
      {"--mu", [&](SampleOptions& o) { o.mu = nan; }},
      {"--steps", [](SampleOptions& o) { o.steps = 0; }},
      {"--steps", [](SampleOptions& o) { o.steps = kN + 1; }},
      {"--n", [](SampleOptions& o) { o.n = 0; }},
  };
  for (const auto& c : cases) {
    auto o = options_for(checkpoint, out);
    c.set(o);
    const auto message = test::error_of([&] { run_sample(o); });
    EXPECT_THAT(message, HasSubstr(c.option));
    EXPECT_FALSE(std::filesystem::exists(out)) << message;
  }
  // The ends of the ranges are accepted.
  for (double gam : {0.0, 10.0}) {
    auto o = options_for(checkpoint, out);
    o.gam = gam;
    o.steps = kN;
    EXPECT_NO_THROW(run_sample(o)) << "gam=" << gam;
  }
}

// Guidance and a class both need a class-conditional model: for an unconditional one each
// is refused by its option, and nothing is written (a scale of 0 is no guidance at all).
TEST(SampleCommand, GuidanceOrAClassForAnUnconditionalModelIsRefused) {
  test::TempDir dir;
  const auto checkpoint = write_checkpoint(dir);
  const std::string out = dir / "s.h5";
  auto o = options_for(checkpoint, out);
  o.cfg_scale = 2;
  EXPECT_THAT(test::error_of([&] { run_sample(o); }),
              HasSubstr("sample: --cfg-scale 2: the model is unconditional (model.num_classes 0)"));
  EXPECT_FALSE(std::filesystem::exists(out));
  o.cfg_scale.reset();
  o.label = "3";
  EXPECT_THAT(test::error_of([&] { run_sample(o); }), HasSubstr("the model is unconditional"));
  EXPECT_FALSE(std::filesystem::exists(out));
  o.label.reset();
  o.cfg_scale = 0;
  EXPECT_NO_THROW(run_sample(o));
}

TEST(SampleCommand, StepsBeyondTheScheduleFromTheConfigNameTheKey) {
  test::TempDir dir;
  const auto checkpoint = write_checkpoint(dir, {fmt::format("sample.steps={}", kN + 1)});
  auto o = options_for(checkpoint, dir / "s.h5");
  const auto message = test::error_of([&] { run_sample(o); });
  EXPECT_THAT(message, HasSubstr("sample.steps"));
  EXPECT_THAT(message, HasSubstr(fmt::format("schedule.N = {}", kN)));
  o.steps = kN;  // the option overrides it
  EXPECT_NO_THROW(run_sample(o));
}

TEST(SampleCommand, TooLargeNIsRefusedWithTheMemoryItNeeds) {
  test::TempDir dir;
  const auto checkpoint = write_checkpoint(dir);
  auto o = options_for(checkpoint, dir / "s.h5");
  o.n = 3000000000;
  const auto message = test::error_of([&] { run_sample(o); });
  EXPECT_THAT(message, HasSubstr("--n 3000000000 needs about"));
  EXPECT_THAT(message, HasSubstr("GiB of memory"));
  EXPECT_THAT(message, HasSubstr("available"));
  EXPECT_FALSE(std::filesystem::exists(dir / "s.h5"));
}

TEST(SampleCommand, MemoryEstimateCountsLoopBuffersAndTheWidestLayer) {
  ModelConfig model;
  model.hidden_dims = std::vector<int64_t>{16, 128, 16};
  // Per example: 8 buffers of 2 values, and twice the widest layer (128), 4 bytes each.
  EXPECT_EQ(sampling_memory_bytes(1000, {2}, model), 1000.0 * (8 * 2 + 2 * 128) * 4);
}

}  // namespace
}  // namespace difftrain
