// train.precision: bf16 autocast for the forward pass on the CPU (the same code path as on
// GPUs): the scope switches autocast on and back, a bf16 step keeps fp32 weights,
// gradients and optimizer state, and a bf16 swissroll run reaches the fp32 run's bar.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/sample/sample.h"
#include "difftrain/train/precision.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

Communicator& single_rank() {
  static auto comm = make_communicator(Backend::mpi);
  return *comm;
}

Config toy_config(const test::TempDir& dir, const std::string& run, int64_t steps, const std::string& precision) {
  prepare_swissroll(dir / "data", 1);
  return parse_config("", "test",
                      {"data.path=" + (dir / "data"), "run_dir=" + (dir / run), fmt::format("train.steps={}", steps),
                       "train.precision=" + precision, "train.log_every=500", "train.checkpoint_every=1000"});
}

TEST(Precision, AutocastScopeRunsMatmulsInBf16AndRestoresTheState) {
  torch::nn::Linear linear(4, 3);
  const auto x = torch::randn({2, 4});
  {
    AutocastScope bf16(Precision::bf16, torch::kCPU);
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    {
      AutocastScope fp32(Precision::fp32, torch::kCPU);  // changes nothing
      EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(linear(x).scalar_type(), torch::kFloat32);
  {
    AutocastScope fp32(Precision::fp32, torch::kCPU);
    EXPECT_EQ(linear(x).scalar_type(), torch::kFloat32);
  }
  EXPECT_EQ(parse_config("", "test", {"train.precision=bf16"}).train.precision, Precision::bf16);
  EXPECT_THAT(test::error_of([] { parse_config("", "test", {"train.precision=fp16"}); }),
              HasSubstr("train.precision"));
}

// One step from the same weights on the same batch: the bf16 step's gradients are float32
// and close to the fp32 step's, but not equal to them (the forward pass did run in bf16).
TEST(Precision, Bf16StepKeepsFp32WeightsGradientsAndOptimizerState) {
  test::TempDir dir;
  Trainer fp32(toy_config(dir, "fp32", 10, "fp32"), single_rank());
  Trainer bf16(toy_config(dir, "bf16", 10, "bf16"), single_rank());
  fp32.synchronize();
  bf16.synchronize();
  const std::vector<Batch> batch{Batch(swissroll_points())};
  const auto a = fp32.step(batch, 1), b = bf16.step(batch, 1);
  EXPECT_NEAR(b.loss, a.loss, 0.05 * a.loss);
  const auto pa = fp32.model().parameters(), pb = bf16.model().parameters();
  ASSERT_EQ(pa.size(), pb.size());
  ASSERT_FALSE(pa.empty());
  double most = 0, scale = 0;
  bool any_differs = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pb[i].scalar_type(), torch::kFloat32);
    EXPECT_EQ(pb[i].grad().scalar_type(), torch::kFloat32);
    most = std::max(most, (pb[i].grad() - pa[i].grad()).abs().max().item<double>());
    scale = std::max(scale, pa[i].grad().abs().max().item<double>());
    any_differs = any_differs || !torch::equal(pb[i].grad(), pa[i].grad());
  }
  EXPECT_TRUE(any_differs) << "the bf16 step computed exactly the fp32 gradients: autocast was not on";
  EXPECT_LT(most, 0.05 * scale);
  const auto& optimizer = bf16.optimizer();
  ASSERT_GT(optimizer.steps(), 0);
  EXPECT_EQ(optimizer.exp_avg().scalar_type(), torch::kFloat32);
  EXPECT_EQ(optimizer.exp_avg_sq().scalar_type(), torch::kFloat32);
  EXPECT_GT(optimizer.exp_avg_sq().abs().sum().item<double>(), 0) << "the moments were never updated";
}

TEST(Precision, Bf16SwissrollReachesTheFp32Bar) {
  test::TempDir dir;
  Trainer trainer(toy_config(dir, "run", 2000, "bf16"), single_rank());
  trainer.synchronize();
  const auto result = trainer.run();
  EXPECT_EQ(result.final_step, 2000);
  EXPECT_EQ(result.skipped_steps, 0);
  SampleOptions options;
  options.checkpoint = dir / "run/checkpoints/latest.pt";
  options.out = dir / "samples.h5";
  const auto samples = run_sample(options);
  ASSERT_EQ(samples.sizes(), (std::vector<int64_t>{2000, 2}));
  const double distance = swissroll_curve_distance(samples).mean().item<double>();
  RecordProperty("mean_distance", std::to_string(distance));
  EXPECT_LE(distance, 0.19);  // Train.SwissrollLearnsAndSamplesLandNearTheCurve's bar for fp32
}

}  // namespace
}  // namespace difftrain
