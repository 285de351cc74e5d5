// Single-rank training: the toy recipe learns, runs are reproducible, bad steps are skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/registry.h"
#include "difftrain/sample/sample.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {

Communicator& single_rank() {
  static auto comm = make_communicator(Backend::mpi);
  return *comm;
}

Config toy_config(const test::TempDir& dir, int64_t steps) {
  prepare_swissroll(dir / "data", 2);
  return parse_config("", "test",
                      {"data.path=" + (dir / "data"), "run_dir=" + (dir / "run"), fmt::format("train.steps={}", steps),
                       "train.log_every=100", "train.checkpoint_every=1000"});
}

std::vector<double> losses(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find("\"loss\": ") + 8;
    out.push_back(std::stod(line.substr(at)));
  }
  return out;
}

// The bar at 2000 steps: plain PyTorch measures about 0.15; difftrain must be no
// worse than 0.19.
TEST(Train, SwissrollLearnsAndSamplesLandNearTheCurve) {
  test::TempDir dir;
  Trainer trainer(toy_config(dir, 2000), single_rank());
  trainer.synchronize();
  const auto result = trainer.run();
  EXPECT_EQ(result.final_step, 2000);
  EXPECT_EQ(result.skipped_steps, 0);

  const auto l = losses(dir / "run");
  ASSERT_EQ(l.size(), 20u);
  EXPECT_LT(l.back(), l.front() - 0.05) << "the loss did not go down";
  ASSERT_TRUE(std::filesystem::exists(dir / "run/checkpoints/step-0001000.pt"));
  ASSERT_TRUE(std::filesystem::exists(dir / "run/checkpoints/step-0002000.pt"));

  SampleOptions options;
  options.checkpoint = dir / "run/checkpoints/latest.pt";
  options.out = dir / "samples.h5";
  options.png = dir / "samples.png";
  const auto samples = run_sample(options);
  ASSERT_EQ(samples.sizes(), (std::vector<int64_t>{2000, 2}));
  const double distance = swissroll_curve_distance(samples).mean().item<double>();
  RecordProperty("mean_distance", std::to_string(distance));
  EXPECT_LE(distance, 0.19);
  EXPECT_TRUE(std::filesystem::exists(dir / "samples.png"));

  // Untrained weights are far worse: the bar above is not met by chance.
  test::TempDir fresh;
  Trainer untrained(toy_config(fresh, 1), single_rank());
  auto gen = random_stream(0, 0, Stream::sample, 0);
  const auto noise_like = swissroll_curve_distance(
      sample([&](const torch::Tensor& x, const torch::Tensor& s) { return untrained.model().forward(x, s); },
             trainer.schedule().sample_sigmas(20), {2.0, 0.0}, {2000, 2}, gen));
  EXPECT_GT(noise_like.mean().item<double>(), 2 * distance);
}

std::vector<torch::Tensor> params_after(const Config& config, int64_t steps, const torch::Tensor& batch) {
  Trainer trainer(config, single_rank());
  trainer.synchronize();
  for (int64_t s = 1; s <= steps; ++s) trainer.step({batch}, s);
  std::vector<torch::Tensor> out;
  for (const auto& p : trainer.model().parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(Train, SameSeedSameParametersBitwise) {
  test::TempDir dir;
  const auto config = toy_config(dir, 10);
  const auto batch = swissroll_points();
  const auto a = params_after(config, 5, batch), b = params_after(config, 5, batch);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;

  auto other = config;
  other.seed = 1;
  const auto c = params_after(other, 5, batch);
  bool any_differs = false;
  for (std::size_t i = 0; i < a.size(); ++i) any_differs |= !torch::equal(a[i], c[i]);
  EXPECT_TRUE(any_differs) << "the seed has no effect";
}

TEST(Train, NonFiniteStepIsSkippedAndParametersStayFinite) {
  test::TempDir dir;
  Trainer trainer(toy_config(dir, 10), single_rank());
  trainer.synchronize();
  trainer.step({swissroll_points()}, 1);
  std::vector<torch::Tensor> before;
  for (const auto& p : trainer.model().parameters()) before.push_back(p.detach().clone());

  auto poisoned = swissroll_points();
  poisoned[3][1] = std::numeric_limits<float>::quiet_NaN();
  const auto stats = trainer.step({poisoned}, 2);
  EXPECT_TRUE(stats.skipped);
  const auto after = trainer.model().parameters();
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(before[i], after[i])) << "a skipped step changed parameter " << i;
    EXPECT_TRUE(torch::isfinite(after[i]).all().item<bool>());
  }
  EXPECT_FALSE(trainer.step({swissroll_points()}, 3).skipped);
}

TEST(Train, GradClipBoundsTheGlobalNorm) {
  test::TempDir dir;
  auto config = toy_config(dir, 10);
  config.train.grad_clip = 1e-3;
  Trainer trainer(config, single_rank());
  trainer.synchronize();
  const auto stats = trainer.step({swissroll_points()}, 1);
  double clipped = 0;
  for (const auto& p : trainer.model().parameters()) clipped += p.grad().square().sum().item<double>();
  EXPECT_GT(stats.grad_norm, 10 * config.train.grad_clip) << "the bound would not bite";
  EXPECT_NEAR(std::sqrt(clipped), config.train.grad_clip, 1e-6);
}

TEST(Train, GlobalBatchMustDivideOverRanksAndMicroBatches) {
  test::TempDir dir;
  auto config = toy_config(dir, 10);
  config.train.grad_accum = 3;  // 100 examples do not split into 3 micro-batches
  try {
    Trainer trainer(config, single_rank());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.batch_size"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("100"), std::string::npos) << e.what();
  }
}

TEST(Ema, RampsUpThenHoldsTheDecay) {
  torch::manual_seed(0);
  auto model = test::flattened(make_model(ModelConfig{}, {2}));
  Ema ema(test::flattened(make_model(ModelConfig{}, {2})), *model, 0.999);
  auto w = model->parameters()[0];
  const auto w0 = w.detach().clone();
  {
    torch::NoGradGuard no_grad;
    w.add_(1.0);
  }
  auto shadow = [&] { return ema.model().parameters()[0].detach().clone(); };
  ema.update();  // d = min(0.999, 1/10): the average moves 90% of the way
  EXPECT_TRUE(torch::allclose(shadow(), w0 + 0.9, 1e-6, 1e-6));
  ema.update();  // d = 2/11
  EXPECT_TRUE(torch::allclose(shadow(), w0 + 0.9 + (1 - 2.0 / 11) * 0.1, 1e-6, 1e-6));
  ema.set_updates(100000);  // ramp done: d = 0.999
  const auto before = shadow();
  ema.update();
  EXPECT_TRUE(torch::allclose(shadow(), before + 0.001 * (w0 + 1 - before), 1e-6, 1e-7));
  EXPECT_EQ(ema.updates(), 100001);
}

TEST(Train, WarmupRampsTheLearningRate) {
  TrainConfig t;
  t.lr = 1e-3;
  t.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate(t, 1), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 5), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 5000), 1e-3);
  t.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(t, 1), 1e-3);
}

}  // namespace
}  // namespace difftrain
