// A class-conditional image run (label dropout, random flips, dropout in the U-Net) resumed
// on the same ranks equals the uninterrupted run bit for bit: every random draw it adds is
// keyed by (seed, rank, step).
#include <gtest/gtest.h>

#include <filesystem>

#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/train/trainer.h"
#include "mpi_test_env.h"

namespace difftrain {
namespace {

using test::SharedDir;
using test::world;

// 48 grey 8x8 images of 4 classes: class k is a bright band at rows 2k, 2k+1, noisy.
void write_images(const std::string& dir) {
  torch::manual_seed(5);
  const auto y = torch::arange(48, torch::kInt64).remainder(4);
  auto x = torch::rand({48, 1, 8, 8}) * 40;
  for (int64_t i = 0; i < 48; ++i) x[i].narrow(1, 2 * y[i].item<int64_t>(), 2) += 200;
  write_shards(dir, 3, x.clamp(0, 255).to(torch::kUInt8), y);
}

Config config_for(const SharedDir& dir, const std::string& model, const std::string& run, int64_t steps) {
  if (world().rank() == 0 && !std::filesystem::exists(dir / "data")) write_images(dir / "data");
  world().barrier();
  std::vector<std::string> overrides{"data.path=" + (dir / "data"), "data.hflip=true", "run_dir=" + (dir / run),
                                     fmt::format("train.steps={}", steps), "train.batch_size=8",
                                     "train.cond_drop=0.3", "train.log_every=5", "train.checkpoint_every=5",
                                     "model.num_classes=4", "schedule.type=ddpm", "schedule.N=100"};
  if (model == "dit") {
    for (const char* o : {"model.type=dit", "model.patch=4", "model.depth=1", "model.head_dim=8", "model.num_heads=2"})
      overrides.emplace_back(o);
  } else {
    for (const char* o : {"model.type=unet", "model.ch=32", "model.ch_mult=[1, 1]", "model.attn_res=[4]",
                          "model.num_res_blocks=1", "model.dropout=0.2"})
      overrides.emplace_back(o);
  }
  return parse_config("", "test", overrides);
}

std::vector<torch::Tensor> train(const Config& config, TrainResult* result = nullptr) {
  Trainer trainer(config, world());
  trainer.synchronize();
  const auto r = trainer.run();
  if (result) *result = r;
  std::vector<torch::Tensor> out;
  for (const auto& p : trainer.model().parameters()) out.push_back(p.detach().clone());
  for (const auto& p : trainer.ema().model().parameters()) out.push_back(p.detach().clone());
  return out;
}

class ConditionalResume : public ::testing::TestWithParam<std::string> {};

TEST_P(ConditionalResume, SplitRunEqualsUninterruptedBitwise) {
  SharedDir dir;
  const auto straight = train(config_for(dir, GetParam(), "straight", 12));
  train(config_for(dir, GetParam(), "split", 7));
  TrainResult second;
  const auto resumed = train(config_for(dir, GetParam(), "split", 12), &second);
  EXPECT_EQ(second.start_step, 7);
  ASSERT_GT(straight.size(), 4u);
  ASSERT_EQ(resumed.size(), straight.size());
  for (std::size_t i = 0; i < resumed.size(); ++i) EXPECT_TRUE(torch::equal(resumed[i], straight[i])) << "tensor " << i;
}

INSTANTIATE_TEST_SUITE_P(Images, ConditionalResume, ::testing::Values("dit", "unet"));

}  // namespace
}  // namespace difftrain
