// train.cuda_graph on the CPU: the step graph records the step's work and runs it at each
// replay, and the trainer's captured step keeps to one input shape. (The captured step's
// values are held by GradAccum.MicroBatchesEqualOneBatchOfTheirUnion/Captured, on 2 and 4
// ranks by DataParallel.CapturedStepTrainsLikeTheEagerStepBitwise; on a GPU by
// launch/gpu-check.sh.)
#include <gtest/gtest.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/train/step_graph.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {

TEST(StepGraph, OnTheCpuCaptureRecordsTheWorkAndEachReplayRunsIt) {
  auto graph = make_step_graph(torch::kCPU);
  EXPECT_NE(test::error_of([&] { graph->replay(); }).find("before anything was captured"), std::string::npos);
  int runs = 0;
  graph->capture([&] { ++runs; });
  EXPECT_EQ(runs, 0);
  graph->replay();
  graph->replay();
  EXPECT_EQ(runs, 2);
}

TEST(StepGraph, CapturedStepRefusesAMicroBatchOfAnotherShape) {
  test::TempDir dir;
  prepare_swissroll(dir / "data", 1);
  const Config config = parse_config("", "test",
                                     {"data.path=" + (dir / "data"), "run_dir=" + (dir / "run"), "train.steps=10",
                                      "train.batch_size=20", "train.cuda_graph=true"});
  static auto comm = make_communicator(Backend::mpi);
  Trainer trainer(config, *comm);
  trainer.synchronize();
  const auto points = swissroll_points(40);
  // Before the capture (after 3 eager steps) the shape may change; after it, not.
  EXPECT_FALSE(trainer.step({points.narrow(0, 0, 10)}, 1).skipped);
  for (int64_t s = 2; s <= 5; ++s) EXPECT_FALSE(trainer.step({points.narrow(0, 0, 20)}, s).skipped);
  try {
    trainer.step({points.narrow(0, 0, 21)}, 6);
    ADD_FAILURE() << "a micro-batch of 21 examples went through a step captured for 20";
  } catch (const RankError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("step 6"), std::string::npos) << what;
    EXPECT_NE(what.find("[21, 2]"), std::string::npos) << what;
    EXPECT_NE(what.find("train.cuda_graph"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace difftrain
