// Resume, preemption and failures across ranks (under mpirun -n 2 and -n 4): a resumed
// run equals an uninterrupted one bit for bit, a stop asked on one rank stops all ranks at
// the same step, and a failure on one rank ends every rank together.
#include <gtest/gtest.h>

#include <filesystem>

#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/trainer.h"
#include "mpi_test_env.h"

namespace difftrain {
namespace {

using test::SharedDir;
using test::world;

Config config_for(const SharedDir& dir, const std::string& run, int64_t steps) {
  if (world().rank() == 0 && !std::filesystem::exists(dir / "data")) prepare_swissroll(dir / "data", 3);
  world().barrier();
  return parse_config("", "test",
                      {"data.path=" + (dir / "data"), "run_dir=" + (dir / run), fmt::format("train.steps={}", steps),
                       "train.batch_size=20", "train.log_every=10", "train.checkpoint_every=10"});
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

TEST(Faults, ResumeOnSameWorldIsBitwise) {
  SharedDir dir;
  const auto straight = train(config_for(dir, "straight", 40));
  train(config_for(dir, "split", 23));  // mid-epoch: a rank's share of 100 is 5 steps or fewer
  TrainResult second;
  const auto resumed = train(config_for(dir, "split", 40), &second);
  EXPECT_EQ(second.start_step, 23);
  ASSERT_EQ(resumed.size(), straight.size());
  for (std::size_t i = 0; i < resumed.size(); ++i) EXPECT_TRUE(torch::equal(resumed[i], straight[i])) << "tensor " << i;
}

TEST(Faults, StopOnOneRankStopsAllAtTheSameStep) {
  SharedDir dir;
  Trainer trainer(config_for(dir, "run", 50), world());
  trainer.synchronize();
  const auto batch = swissroll_points().narrow(0, 0, trainer.per_rank_batch());
  trainer.step({batch}, 1);
  if (world().rank() == world().size() - 1) request_stop();  // only the last rank got the signal
  const auto stats = trainer.step({batch}, 2);
  clear_stop_request();
  EXPECT_TRUE(stats.stop) << "rank " << world().rank() << " did not learn of the stop";
}

TEST(Faults, FailureOnOneRankEndsEveryRankTogether) {
  SharedDir dir;
  Trainer trainer(config_for(dir, "run", 50), world());
  trainer.synchronize();
  const auto batch = swissroll_points().narrow(0, 0, trainer.per_rank_batch());
  const int failing = world().size() - 1;
  std::exception_ptr error;
  if (world().rank() == failing) error = std::make_exception_ptr(Error("data/shard-00002.h5: row 7 holds a NaN"));
  try {
    trainer.step({batch}, 3, error);
    ADD_FAILURE() << "rank " << world().rank() << " carried on";
  } catch (const RankError& e) {
    EXPECT_EQ(world().rank(), failing);
    EXPECT_NE(std::string(e.what()).find(fmt::format("rank {}, step 3", failing)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 7"), std::string::npos) << e.what();
  } catch (const PeerError&) {
    EXPECT_NE(world().rank(), failing);
  }
}

// train.cuda_graph: a step recorded after 3 eager steps carries a stop and a failure to every
// rank as the eager step does (the failing rank replays too, with its failure flag set), and
// a failure on one rank at the recording step ends every rank together.
class CapturedStep : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = config_for(dir_, "run", 50);
    config.train.cuda_graph = true;
    trainer_ = std::make_unique<Trainer>(config, world());
    trainer_->synchronize();
    batch_ = swissroll_points().narrow(0, 0, trainer_->per_rank_batch());
  }
  // Every rank but the last fails with PeerError, the last with RankError naming it and the step.
  void expect_failure_at(int64_t step) {
    const int failing = world().size() - 1;
    std::exception_ptr error;
    if (world().rank() == failing) error = std::make_exception_ptr(Error("data/shard-00002.h5: row 7 holds a NaN"));
    try {
      trainer_->step({batch_}, step, error);
      ADD_FAILURE() << "rank " << world().rank() << " carried on";
    } catch (const RankError& e) {
      EXPECT_EQ(world().rank(), failing);
      EXPECT_NE(std::string(e.what()).find(fmt::format("rank {}, step {}", failing, step)), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("row 7"), std::string::npos) << e.what();
    } catch (const PeerError&) {
      EXPECT_NE(world().rank(), failing);
    }
  }
  SharedDir dir_;
  std::unique_ptr<Trainer> trainer_;
  torch::Tensor batch_;
};

TEST_F(CapturedStep, StopAndFailureReachEveryRank) {
  for (int64_t s = 1; s <= 5; ++s) EXPECT_FALSE(trainer_->step({batch_}, s).stop);  // recorded at step 4
  if (world().rank() == world().size() - 1) request_stop();
  const auto stats = trainer_->step({batch_}, 6);
  clear_stop_request();
  EXPECT_TRUE(stats.stop) << "rank " << world().rank() << " did not learn of the stop";
  expect_failure_at(7);
}

TEST_F(CapturedStep, FailureAtTheRecordingStepEndsEveryRank) {
  for (int64_t s = 1; s <= 3; ++s) trainer_->step({batch_}, s);
  expect_failure_at(4);
}

}  // namespace
}  // namespace difftrain
