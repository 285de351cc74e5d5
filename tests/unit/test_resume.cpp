// Resume, preemption and bad steps on one rank: nothing is lost, nothing differs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {
namespace fs = std::filesystem;

Communicator& single_rank() {
  static auto comm = make_communicator(Backend::mpi);
  return *comm;
}

// Batches of 20 so that an epoch (100 examples) spans several steps and the data position
// matters; a warm-up so that the learning rate depends on the step too.
Config config_for(const test::TempDir& dir, const std::string& run, int64_t steps,
                  std::vector<std::string> extra = {}) {
  if (!fs::exists(dir / "data")) prepare_swissroll(dir / "data", 3);
  std::vector<std::string> o{"data.path=" + (dir / "data"), "run_dir=" + (dir / run),
                             fmt::format("train.steps={}", steps), "train.batch_size=20",
                             "train.warmup_steps=30", "train.log_every=25", "train.checkpoint_every=25"};
  o.insert(o.end(), extra.begin(), extra.end());
  return parse_config("", "test", o);
}

struct Finished {
  TrainResult result;
  torch::OrderedDict<std::string, torch::Tensor> model, ema;
  c10::IValue optimizer;
};

Finished train(const Config& config, TrainOptions options = {}) {
  Trainer trainer(config, single_rank(), options);
  trainer.synchronize();
  Finished f;
  f.result = trainer.run();
  f.model = state_dict(trainer.model());
  f.ema = state_dict(trainer.ema().model());
  f.optimizer = trainer.optimizer().state_dict();
  return f;
}

// The steps of metrics.jsonl's log records, and of its records of one kind of event.
std::vector<int64_t> steps_of(const std::string& path, const std::string& event) {
  std::ifstream in(path);
  std::vector<int64_t> steps;
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.value("event", "") == event) steps.push_back(record.at("step").get<int64_t>());
  }
  return steps;
}
std::vector<int64_t> log_steps(const std::string& path) { return steps_of(path, ""); }
std::vector<int64_t> event_steps(const std::string& path, const std::string& event) { return steps_of(path, event); }

void expect_bitwise_equal(const torch::OrderedDict<std::string, torch::Tensor>& a,
                          const torch::OrderedDict<std::string, torch::Tensor>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << what << " " << item.key();
}

// The swissroll with two rows so large (finite, so the loader accepts them) that any step
// whose batch holds one overflows the loss to Inf: such steps are skipped, about one in
// three here (a batch of 20 out of 100 holds one of the two), never many in a row.
void write_data_with_overflowing_rows(const test::TempDir& dir) {
  auto points = swissroll_points();
  points[17].fill_(1e30);
  points[63].fill_(1e30);
  write_shards(dir / "data", 3, points);
}

struct SplitCase {
  std::string name;
  std::vector<std::string> overrides;
  bool overflowing_rows = false;
};
void PrintTo(const SplitCase& c, std::ostream* os) { *os << c.name; }

// Split mid-epoch (103 steps of 20 = 20.6 epochs of 100 examples), with gradient
// accumulation and with non-finite steps skipped before the split, so that the data
// position, the micro-batch streams, the skipped count and the EMA update count all have
// to be restored.
class ResumeBitwise : public ::testing::TestWithParam<SplitCase> {};

TEST_P(ResumeBitwise, SplitRunEqualsUninterrupted) {
  test::TempDir dir;
  const auto& extra = GetParam().overrides;
  if (GetParam().overflowing_rows) write_data_with_overflowing_rows(dir);
  const auto straight = train(config_for(dir, "straight", 200, extra));
  const auto first = train(config_for(dir, "split", 103, extra));
  EXPECT_EQ(first.result.final_step, 103);
  if (GetParam().overflowing_rows) {
    EXPECT_GT(first.result.skipped_steps, 0) << "no step was skipped before the split";
    EXPECT_GT(straight.result.skipped_steps, first.result.skipped_steps) << "no step was skipped after the split";
  } else {
    EXPECT_EQ(straight.result.skipped_steps, 0);
  }
  const auto second = train(config_for(dir, "split", 200, extra));  // raising train.steps is compatible
  EXPECT_EQ(second.result.start_step, 103);
  EXPECT_EQ(second.result.final_step, 200);
  EXPECT_EQ(second.result.skipped_steps, straight.result.skipped_steps);
  expect_bitwise_equal(second.model, straight.model, "model");
  expect_bitwise_equal(second.ema, straight.ema, "ema");
  const auto a = second.optimizer.toGenericDict().at("state").toGenericDict();
  const auto b = straight.optimizer.toGenericDict().at("state").toGenericDict();
  // One state entry per parameter on both sides (an empty state would compare vacuously).
  const auto parameters = static_cast<std::size_t>(second.model.size());
  ASSERT_EQ(a.size(), parameters);
  ASSERT_EQ(b.size(), parameters);
  for (const auto& item : a) {
    const auto x = item.value().toGenericDict(), y = b.at(item.key()).toGenericDict();
    EXPECT_EQ(x.at("step").toInt(), y.at("step").toInt());
    EXPECT_TRUE(torch::equal(x.at("exp_avg").toTensor(), y.at("exp_avg").toTensor()));
    EXPECT_TRUE(torch::equal(x.at("exp_avg_sq").toTensor(), y.at("exp_avg_sq").toTensor()));
  }
  // Metrics continue in the same file: logs at 25, 50, 75, 100, 103, then 125 ... 200, and
  // the record of the resume at 103.
  EXPECT_EQ(log_steps(dir / "split/metrics.jsonl"), (std::vector<int64_t>{25, 50, 75, 100, 103, 125, 150, 175, 200}));
  EXPECT_EQ(event_steps(dir / "split/metrics.jsonl", "resume"), (std::vector<int64_t>{103}));
}

INSTANTIATE_TEST_SUITE_P(Resume, ResumeBitwise,
                         ::testing::Values(SplitCase{"Plain", {}}, SplitCase{"GradAccum2", {"train.grad_accum=2"}},
                                           SplitCase{"NonFiniteStepsSkippedBeforeTheSplit", {}, true}),
                         [](const auto& info) { return info.param.name; });

TEST(Resume, SkippedStepsAreRestoredForTheEma) {
  // The EMA has seen one update per step that was not skipped; a resume must continue the
  // ramp from there, not from the step number.
  test::TempDir dir;
  train(config_for(dir, "run", 10));
  const std::string latest = dir / "run/checkpoints/latest.pt";
  auto c = load_checkpoint(latest);
  c.skipped_steps = 3;
  save_checkpoint(latest, c);
  Trainer resumed(config_for(dir, "run", 20), single_rank());
  resumed.synchronize();
  EXPECT_EQ(resumed.start_step(), 10);
  EXPECT_EQ(resumed.ema().updates(), 7);
}

TEST(Resume, MetricsFromAfterAnOlderCheckpointAreDropped) {
  test::TempDir dir;
  train(config_for(dir, "run", 75, {"train.keep_checkpoints=0"}));  // logs at 25, 50, 75
  TrainOptions older;
  older.resume = dir / "run/checkpoints/step-0000025.pt";
  train(config_for(dir, "run", 60), older);  // logs at 50, 60
  EXPECT_EQ(log_steps(dir / "run/metrics.jsonl"), (std::vector<int64_t>{25, 50, 60}));
  EXPECT_EQ(event_steps(dir / "run/metrics.jsonl", "resume"), (std::vector<int64_t>{25}));
}

TEST(Resume, MetricsKeepOtherRecordsByStepAndLoseALineTornByACrash) {
  test::TempDir dir;
  train(config_for(dir, "run", 50));  // logs at 25, 50
  const std::string metrics = dir / "run/metrics.jsonl";
  // A record of another kind, written without spaces, and the start of a line that a crash
  // cut short ("step": 7 would fool a search of the text).
  std::ofstream(metrics, std::ios::app) << "{\"step\":50,\"event\":\"note\"}\n{\"step\": 7, \"loss\": 0.";
  train(config_for(dir, "run", 75));  // resumes at 50, logs at 75
  std::ifstream in(metrics);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[2], "{\"step\":50,\"event\":\"note\"}");
  EXPECT_EQ(lines[3].rfind("{\"step\": 50, \"event\": \"resume\"", 0), 0u) << lines[3];
  EXPECT_EQ(lines[4].rfind("{\"step\": 75, ", 0), 0u) << lines[4];
}

TEST(Resume, DataPositionIsRestoredNotRecomputed) {
  // 10 steps of 20 examples consume 200; resumed with batches of 10, the run continues at
  // example 200 of the share, so 5 more steps end at 250 (recomputing from the step with
  // the new batch size would say 150).
  test::TempDir dir;
  train(config_for(dir, "run", 10));
  EXPECT_EQ(load_checkpoint(dir / "run/checkpoints/latest.pt").data_position, 200);
  train(config_for(dir, "run", 15, {"train.batch_size=10"}));
  EXPECT_EQ(load_checkpoint(dir / "run/checkpoints/latest.pt").data_position, 250);
}

TEST(Resume, StepsBelowTheCheckpointAreAnError) {
  test::TempDir dir;
  train(config_for(dir, "run", 30));
  const auto message = test::error_of([&] { Trainer(config_for(dir, "run", 20), single_rank()).synchronize(); });
  EXPECT_MENTIONS(message, "step 30");
  EXPECT_MENTIONS(message, "train.steps=20");
}

TEST(Resume, ExplicitCheckpointAndFresh) {
  test::TempDir dir;
  train(config_for(dir, "a", 50));
  // --resume from another run's checkpoint into a new run directory.
  TrainOptions from_a;
  from_a.resume = dir / "a/checkpoints/step-0000025.pt";
  EXPECT_EQ(train(config_for(dir, "b", 60), from_a).result.start_step, 25);
  // --fresh ignores and removes what is there.
  TrainOptions fresh;
  fresh.fresh = true;
  const auto again = train(config_for(dir, "a", 30), fresh);
  EXPECT_EQ(again.result.start_step, 0);
  EXPECT_FALSE(fs::exists(dir / "a/checkpoints/step-0000050.pt"));
  EXPECT_TRUE(fs::exists(dir / "a/checkpoints/step-0000030.pt"));
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << words.front();
  } catch (const Error& e) {
    for (const auto& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
  }
}

TEST(Resume, IncompatibleCheckpointIsAnErrorUnlessFresh) {
  test::TempDir dir;
  train(config_for(dir, "run", 25));
  expect_error([&] { Trainer(config_for(dir, "run", 50, {"model.hidden_dims=[32,32]"}), single_rank()).synchronize(); },
               {"latest.pt", "model.hidden_dims", "--fresh"});
  expect_error([&] { Trainer(config_for(dir, "run", 50, {"model.parameterization=v"}), single_rank()).synchronize(); },
               {"model.parameterization"});
  expect_error([&] { Trainer(config_for(dir, "run", 50, {"train.optimizer=adam"}), single_rank()).synchronize(); },
               {"train.optimizer"});
  // Other data shapes: 3-d points instead of 2-d.
  write_shards(dir / "data3", 1, torch::randn({40, 3}));
  expect_error([&] { Trainer(config_for(dir, "run", 50, {"data.path=" + (dir / "data3")}), single_rank()).synchronize(); },
               {"shape"});
  TrainOptions fresh;
  fresh.fresh = true;
  EXPECT_NO_THROW(Trainer(config_for(dir, "run", 50, {"model.hidden_dims=[32,32]"}), single_rank(), fresh).synchronize());
  // Cadence, learning rate and length may change.
  EXPECT_NO_THROW(Trainer(config_for(dir, "run", 80, {"train.log_every=7", "train.lr=5e-4"}), single_rank()).synchronize());
}

TEST(Resume, MissingOrTruncatedCheckpointIsAnError) {
  test::TempDir dir;
  TrainOptions missing;
  missing.resume = dir / "nope.pt";
  expect_error([&] { Trainer(config_for(dir, "run", 10), single_rank(), missing).synchronize(); }, {"nope.pt"});

  // A truncated latest.pt with no step file to fall back to (see test_run_safety.cpp for
  // the fallback).
  train(config_for(dir, "run", 25, {"train.keep_checkpoints=1"}));
  const std::string latest = dir / "run/checkpoints/latest.pt";
  fs::resize_file(latest, fs::file_size(latest) / 2);
  fs::remove(dir / "run/checkpoints/step-0000025.pt");
  expect_error([&] { Trainer(config_for(dir, "run", 50), single_rank()).synchronize(); },
               {"latest.pt", "truncated or corrupt"});
}

TEST(Resume, SymbolicLinkLoopAtTheCheckpointIsAnErrorNotANewRun) {
  test::TempDir dir;
  fs::create_directories(dir / "run/checkpoints");
  fs::create_symlink(dir / "loop.pt", dir / "run/checkpoints/latest.pt");
  fs::create_symlink(dir / "run/checkpoints/latest.pt", dir / "loop.pt");
  expect_error([&] { Trainer(config_for(dir, "run", 10), single_rank()).synchronize(); },
               {dir / "run/checkpoints/latest.pt: symbolic link loop"});
  TrainOptions looped;
  looped.resume = dir / "loop.pt";
  expect_error([&] { Trainer(config_for(dir, "other", 10), single_rank(), looped).synchronize(); },
               {dir / "loop.pt: symbolic link loop"});
}

TEST(Resume, KeepsTheLastCheckpointsAndCleansStaleTemporaries) {
  test::TempDir dir;
  fs::create_directories(dir / "run/checkpoints");
  std::ofstream(dir / "run/checkpoints/.latest.pt.tmp.12345") << "half a checkpoint";
  train(config_for(dir, "run", 10, {"train.checkpoint_every=1", "train.keep_checkpoints=3"}));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "run/checkpoints")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest.pt", "step-0000008.pt", "step-0000009.pt", "step-0000010.pt"}));
}

TEST(Preemption, StopRequestCheckpointsAndResumeMatchesUninterrupted) {
  test::TempDir dir;
  struct ClearOnExit {
    ~ClearOnExit() { clear_stop_request(); }
  } clear;
  const auto straight = train(config_for(dir, "straight", 60));
  const Config config = config_for(dir, "stopped", 60);
  train(config_for(dir, "stopped", 36));
  // A signal arrives while step 37 runs: the run stops after it, with a checkpoint.
  request_stop();
  TrainResult stopped;
  {
    Trainer interrupted(config, single_rank());  // holds the run directory until it ends
    interrupted.synchronize();
    stopped = interrupted.run();
  }
  clear_stop_request();
  EXPECT_TRUE(stopped.preempted);
  EXPECT_EQ(stopped.final_step, 37);
  EXPECT_EQ(load_checkpoint(dir / "stopped/checkpoints/latest.pt").step, 37);
  const auto resumed = train(config);
  EXPECT_EQ(resumed.result.start_step, 37);
  EXPECT_FALSE(resumed.result.preempted);
  expect_bitwise_equal(resumed.model, straight.model, "model");
  expect_bitwise_equal(resumed.ema, straight.ema, "ema");
}

TEST(NonFinite, TooManyConsecutiveBadStepsStopTheRun) {
  test::TempDir dir;
  Trainer trainer(config_for(dir, "run", 10, {"train.max_bad_steps=3"}), single_rank());
  trainer.synchronize();
  auto bad = torch::full({20, 2}, std::numeric_limits<float>::infinity());
  EXPECT_TRUE(trainer.step({bad}, 1).skipped);
  EXPECT_TRUE(trainer.step({bad}, 2).skipped);
  EXPECT_FALSE(trainer.step({swissroll_points().narrow(0, 0, 20)}, 3).skipped);  // the count restarts
  EXPECT_TRUE(trainer.step({bad}, 4).skipped);
  EXPECT_TRUE(trainer.step({bad}, 5).skipped);
  EXPECT_THROW(trainer.step({bad}, 6), AgreedError);
  for (const auto& p : trainer.model().parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

}  // namespace
}  // namespace difftrain
