// Nothing lost, nothing silently wrong, on one rank: checkpoint integrity, the fallback to
// the newest good checkpoint, retention that prunes only the run's own files, the run
// directory's lock, recipe changes on resume, and stop signals in every phase.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/data/prepare.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/train/resume.h"
#include "difftrain/train/run_dir_lock.h"
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

Config config_for(const test::TempDir& dir, int64_t steps, std::vector<std::string> extra = {}) {
  if (!fs::exists(dir / "data")) prepare_swissroll(dir / "data", 2);
  std::vector<std::string> o{"data.path=" + (dir / "data"), "run_dir=" + (dir / "run"),
                             fmt::format("train.steps={}", steps), "train.batch_size=20", "train.log_every=25",
                             "train.checkpoint_every=25"};
  o.insert(o.end(), extra.begin(), extra.end());
  return parse_config("", "test", o);
}

TrainResult train(const Config& config, TrainOptions options = {}) {
  Trainer trainer(config, single_rank(), options);
  trainer.synchronize();
  return trainer.run();
}

// What synchronize() (rank 0's resume) says, for a config that must be refused.
std::string resume_error(const Config& config) {
  return test::error_of([&] {
    Trainer trainer(config, single_rank());
    trainer.synchronize();
  });
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Where the raw float32 data of `tensor` sits inside a checkpoint file's bytes.
std::size_t offset_of_tensor_data(const std::vector<char>& file, const torch::Tensor& tensor) {
  const auto t = tensor.contiguous();
  const auto* data = static_cast<const char*>(t.data_ptr());
  const std::size_t n = static_cast<std::size_t>(t.numel() * t.element_size());
  const auto it = std::search(file.begin(), file.end(), data, data + n);
  EXPECT_NE(it, file.end()) << "tensor data not found in the file";
  return static_cast<std::size_t>(it - file.begin());
}

std::vector<std::string> step_files(const test::TempDir& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "run/checkpoints"))
    if (e.path().filename().string().rfind("step-", 0) == 0) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// ---- integrity ------------------------------------------------------------------------

TEST(CheckpointIntegrity, DamagedTensorDataIsRefusedNamingTheFile) {
  test::TempDir dir;
  train(config_for(dir, 25));
  const std::string latest = dir / "run/checkpoints/latest.pt";
  auto bytes = read_bytes(latest);
  const auto c = load_checkpoint(latest);
  const std::size_t at = offset_of_tensor_data(bytes, c.model.begin()->value());
  ASSERT_GE(bytes.size(), at + 64);
  std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(at), 64, static_cast<char>(0xFF));
  write_bytes(latest, bytes);
  const auto message = test::error_of([&] { load_checkpoint(latest); });
  EXPECT_MENTIONS(message, latest);
  EXPECT_MENTIONS(message, "checksum mismatch");
}

TEST(CheckpointIntegrity, ChecksumCatchesAFlippedBitThatKeepsValuesFinite) {
  test::TempDir dir;
  train(config_for(dir, 25));
  const std::string latest = dir / "run/checkpoints/latest.pt";
  auto bytes = read_bytes(latest);
  const auto c = load_checkpoint(latest);
  const auto& ema_weight = c.ema.begin()->value();
  bytes[offset_of_tensor_data(bytes, ema_weight)] ^= 1;  // lowest mantissa bit of a float32
  write_bytes(latest, bytes);
  EXPECT_MENTIONS(test::error_of([&] { load_checkpoint(latest); }), "checksum mismatch");
}

TEST(CheckpointIntegrity, NonFiniteValuesAreNeverWritten) {
  test::TempDir dir;
  train(config_for(dir, 25));
  auto c = load_checkpoint(dir / "run/checkpoints/latest.pt");
  c.model.begin()->value()[0][0] = std::numeric_limits<float>::quiet_NaN();
  const std::string out = dir / "nan.pt";
  EXPECT_MENTIONS(test::error_of([&] { save_checkpoint(out, c); }), c.model.begin()->key());
  EXPECT_FALSE(fs::exists(out));

  auto d = load_checkpoint(dir / "run/checkpoints/latest.pt");
  auto state = d.optimizer.toGenericDict().at("state").toGenericDict();
  ASSERT_GT(state.size(), 0u);
  state.begin()->value().toGenericDict().at("exp_avg_sq").toTensor().fill_(std::numeric_limits<float>::infinity());
  EXPECT_MENTIONS(test::error_of([&] { save_checkpoint(out, d); }), "optimizer/state/0/exp_avg_sq");
  EXPECT_FALSE(fs::exists(out));
}

// ---- which checkpoint a run resumes from -----------------------------------------------

TEST(ResumeFallback, MissingLatestResumesFromTheNewestStepFileNotFromZero) {
  test::TempDir dir;
  train(config_for(dir, 100));  // step files 50, 75, 100 (keep 3)
  fs::remove(dir / "run/checkpoints/latest.pt");
  testing::internal::CaptureStderr();
  const auto result = train(config_for(dir, 150));
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_EQ(result.start_step, 100);
  EXPECT_MENTIONS(note, "step-0000100.pt");
  EXPECT_MENTIONS(note, "latest.pt: missing");
  EXPECT_EQ(step_files(dir), (std::vector<std::string>{"step-0000100.pt", "step-0000125.pt", "step-0000150.pt"}));
}

TEST(ResumeFallback, DamagedLatestResumesFromTheNewestGoodFileAndSaysWhy) {
  test::TempDir dir;
  train(config_for(dir, 75));
  const std::string latest = dir / "run/checkpoints/latest.pt";
  auto bytes = read_bytes(latest);
  const std::size_t at = offset_of_tensor_data(bytes, load_checkpoint(latest).model.begin()->value());
  std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(at), 64, static_cast<char>(0xFF));
  write_bytes(latest, bytes);
  // The step file of the same step is whole; it is the one to resume from.
  testing::internal::CaptureStderr();
  Trainer trainer(config_for(dir, 100), single_rank());
  trainer.synchronize();
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_EQ(trainer.start_step(), 75);
  EXPECT_MENTIONS(note, "step-0000075.pt");
  EXPECT_MENTIONS(note, "latest.pt: checksum mismatch");
  for (const auto& p : trainer.model().parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(ResumeFallback, WhenNoCheckpointLoadsTheRunStopsInsteadOfStartingOver) {
  test::TempDir dir;
  train(config_for(dir, 50));
  const auto files = step_files(dir);
  ASSERT_EQ(files.size(), 2u);
  for (const auto& name : std::vector<std::string>{"latest.pt", files[0], files[1]})
    fs::resize_file(dir / ("run/checkpoints/" + name), 100);
  const auto message = resume_error(config_for(dir, 100));
  EXPECT_MENTIONS(message, "no checkpoint loads");
  EXPECT_MENTIONS(message, files[0]);
  EXPECT_MENTIONS(message, "--fresh");
  EXPECT_EQ(step_files(dir).size(), 2u);
}

TEST(ResumeFallback, AnExplicitDamagedCheckpointIsAnErrorNotAFallback) {
  test::TempDir dir;
  train(config_for(dir, 50));
  const std::string chosen = dir / "run/checkpoints/step-0000025.pt";
  fs::resize_file(chosen, fs::file_size(chosen) / 2);
  TrainOptions options;
  options.resume = chosen;
  const auto message = test::error_of([&] {
    Trainer trainer(config_for(dir, 100), single_rank(), options);
    trainer.synchronize();
  });
  EXPECT_MENTIONS(message, chosen);
}

// ---- retention ------------------------------------------------------------------------

TEST(Retention, PrunesOnlyTheRunsOwnStepFiles) {
  test::TempDir dir;
  train(config_for(dir, 50, {"train.keep_checkpoints=2"}));
  // A file the run did not write (a copy the user put there), older than the run's own.
  fs::copy_file(dir / "run/checkpoints/step-0000025.pt", dir / "run/checkpoints/step-0000001.pt");
  train(config_for(dir, 150, {"train.keep_checkpoints=2"}));
  EXPECT_EQ(step_files(dir), (std::vector<std::string>{"step-0000001.pt", "step-0000125.pt", "step-0000150.pt"}));
}

TEST(Retention, AFileLeftByARunKilledBeforeItsPruneIsPrunedOnResume) {
  test::TempDir dir;
  train(config_for(dir, 75, {"train.keep_checkpoints=2"}));
  ASSERT_EQ(step_files(dir), (std::vector<std::string>{"step-0000050.pt", "step-0000075.pt"}));
  // As if killed after writing step 75 and before removing step 25.
  fs::copy_file(dir / "run/checkpoints/step-0000050.pt", dir / "run/checkpoints/step-0000025.pt");
  train(config_for(dir, 100, {"train.keep_checkpoints=2"}));
  EXPECT_EQ(step_files(dir), (std::vector<std::string>{"step-0000075.pt", "step-0000100.pt"}));
}

TEST(Retention, AResumeFromAnotherDirectoryPrunesNothingThere) {
  test::TempDir dir;
  train(config_for(dir, 50, {"train.keep_checkpoints=1"}));
  // The second run resumes from the first run's step file; its retention list (steps of
  // the first run's directory) must not make it delete same-named files of its own dir.
  TrainOptions from_first;
  from_first.resume = dir / "run/checkpoints/step-0000050.pt";
  Config second = config_for(dir, 100, {"train.keep_checkpoints=1", "run_dir=" + (dir / "second")});
  fs::create_directories(dir / "second/checkpoints");
  fs::copy_file(dir / "run/checkpoints/step-0000050.pt", dir / "second/checkpoints/step-0000050.pt");
  train(second, from_first);
  EXPECT_TRUE(fs::exists(dir / "second/checkpoints/step-0000050.pt"));
  EXPECT_TRUE(fs::exists(dir / "second/checkpoints/step-0000100.pt"));
  EXPECT_FALSE(fs::exists(dir / "second/checkpoints/step-0000075.pt"));
}

// ---- the run directory's lock -----------------------------------------------------------

TEST(RunDirLockTest, ASecondHolderIsRefusedWithTheFirstOnesPid) {
  test::TempDir dir;
  {
    RunDirLock first(dir / "run");
    const auto message = test::error_of([&] { RunDirLock second(dir / "run"); });
    EXPECT_MENTIONS(message, dir / "run");
    EXPECT_MENTIONS(message, fmt::format("pid {}", ::getpid()));
  }
  EXPECT_NO_THROW(RunDirLock again(dir / "run"));  // released with its holder
}

TEST(RunDirLockTest, ALockFileLeftByADeadProcessDoesNotBlockAndIsNamedAsStale) {
  test::TempDir dir;
  fs::create_directories(dir / "run");
  std::ofstream(dir / "run/.lock") << "pid 999999 on host gone, started 2020-01-01 00:00:00\n";
  ::testing::internal::CaptureStderr();
  EXPECT_NO_THROW(RunDirLock lock(dir / "run"));
  const std::string note = ::testing::internal::GetCapturedStderr();
  EXPECT_MENTIONS(note, "the last run here (pid 999999 on host gone, started 2020-01-01 00:00:00) ended without "
                        "releasing the run directory (killed?); its lock is stale, taking it over");
  // A holder that ends cleanly leaves no record: the next run has nothing to note.
  ::testing::internal::CaptureStderr();
  EXPECT_NO_THROW(RunDirLock again(dir / "run"));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// A model whose training would not fit in memory is refused before anything is allocated,
// naming the estimate and what is available (it used to pass a parameters-only check and
// die minutes later in the kernel's OOM killer, leaving a lock file and an empty log).
TEST(RunDirLockTest, AModelTooLargeToTrainIsRefusedBeforeAllocatingOrLocking) {
  test::TempDir dir;
  const auto message = test::error_of([&] {
    Trainer trainer(config_for(dir, 50, {"model.hidden_dims=[1000000000]"}), single_rank());
  });
  EXPECT_MENTIONS(message, "config: model.type 'mlp', model.hidden_dims [1000000000]: training needs about");
  EXPECT_MENTIONS(message, "parameters:");
  EXPECT_MENTIONS(message, "for the activations of a micro-batch of 20");
  EXPECT_MENTIONS(message, "is available");
  EXPECT_FALSE(fs::exists(dir / "run"));
}

TEST(RunDirLockTest, ASecondTrainerOnABusyRunDirectoryStopsBeforeReadingIt) {
  test::TempDir dir;
  Trainer first(config_for(dir, 50), single_rank());
  first.synchronize();
  const auto message = resume_error(config_for(dir, 50));
  EXPECT_MENTIONS(message, "another training run is using this run directory");
}

// ---- recipe changes on resume ---------------------------------------------------------

TEST(ResumeConfig, SettingsThatChangeTheMathAreErrorsNamingKeyAndValues) {
  test::TempDir dir;
  train(config_for(dir, 25));
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"seed=7", {"seed = 0", "has 7"}},
      {"schedule.type=cosine", {"schedule.type", "loglinear", "cosine"}},
      {"schedule.N=100", {"schedule.N = 200", "has 100"}},
      {"train.betas=[0.8,0.99]", {"train.betas"}},
      {"train.weight_decay=0.1", {"train.weight_decay"}},
      {"train.ema_decay=0.9", {"train.ema_decay"}},
      {"train.adam_eps=1e-6", {"train.adam_eps"}},
  };
  for (const auto& [override_, words] : cases) {
    const auto message = resume_error(config_for(dir, 50, {override_}));
    EXPECT_MENTIONS(message, "latest.pt");
    EXPECT_MENTIONS(message, "--fresh");
    for (const auto& w : words) EXPECT_MENTIONS(message, w);
  }
  prepare_swissroll(dir / "data2", 1);
  EXPECT_MENTIONS(resume_error(config_for(dir, 50, {"data.path=" + (dir / "data2")})), "data.path");
}

TEST(ResumeConfig, SettingsThatMayChangeAreAcceptedAndEachIsNoted) {
  test::TempDir dir;
  train(config_for(dir, 25));
  testing::internal::CaptureStderr();
  const auto result = train(
      config_for(dir, 50, {"train.lr=5e-4", "train.batch_size=40", "train.grad_accum=2", "train.log_every=5",
                           "train.cuda_graph=true"}));
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_EQ(result.start_step, 25);
  EXPECT_MENTIONS(note, "changed settings");
  EXPECT_MENTIONS(note, "train.lr 0.001 -> 0.0005");
  EXPECT_MENTIONS(note, "train.steps 25 -> 50");
  EXPECT_MENTIONS(note, "train.batch_size 20 -> 40");
  EXPECT_MENTIONS(note, "train.grad_accum 1 -> 2");
  EXPECT_MENTIONS(note, "train.cuda_graph false -> true");
}

TEST(ResumeConfig, EveryKeyIsClassified) {
  // A key added to the schema is strict unless listed as free: this pins the free list.
  std::vector<std::string> free;
  for (const auto& [key, value] : flatten(Config{}))
    if (may_change_on_resume(key)) free.push_back(key);
  EXPECT_EQ(free, (std::vector<std::string>{"run_dir", "train.steps", "train.batch_size", "train.grad_accum",
                                            "train.lr", "train.grad_clip", "train.warmup_steps", "train.log_every",
                                            "train.checkpoint_every", "train.keep_checkpoints",
                                            "train.max_bad_steps", "train.sample_every", "train.precision", "train.tf32", "train.threads", "train.cuda_graph",
                                            "dist.backend", "dist.bucket_mb",
                                            "dist.check_every", "dist.timeout_s", "sample.steps", "sample.gam",
                                            "sample.mu", "sample.n", "sample.cfg_scale", "sample.class"}));
}

// ---- stop signals ---------------------------------------------------------------------

TEST(StopSignalDeathTest, DuringSetUpASignalEndsTheProcessAtOnce) {
  EXPECT_EXIT(
      {
        install_stop_signal_handlers();
        std::raise(SIGTERM);
        std::_Exit(0);  // not reached
      },
      testing::ExitedWithCode(128 + SIGTERM), "during set-up");
}

TEST(StopSignalDeathTest, WhileTrainingSigintAndSighupAskForACheckpointAndASecondCtrlCExits) {
  EXPECT_EXIT(
      {
        install_stop_signal_handlers();
        begin_training_phase();
        std::raise(SIGHUP);
        if (!stop_requested()) std::_Exit(3);
        clear_stop_request();
        std::raise(SIGINT);
        if (!stop_requested()) std::_Exit(4);
        std::raise(SIGINT);
        std::_Exit(5);  // not reached: the second Ctrl-C exits
      },
      testing::ExitedWithCode(128 + SIGINT), "second interrupt");
}

TEST(StopSignalDeathTest, ASignalIgnoredAtStartStaysIgnored) {
  EXPECT_EXIT(
      {
        std::signal(SIGHUP, SIG_IGN);  // as nohup starts a program
        install_stop_signal_handlers();
        std::raise(SIGHUP);
        std::_Exit(stop_requested() ? 1 : 0);
      },
      testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace difftrain
