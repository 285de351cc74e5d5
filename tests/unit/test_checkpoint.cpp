// Checkpoints: a save/load round trip loses no bit of the model, the EMA, the optimizer
// or the run's counters, and continuing from a loaded checkpoint is bitwise the same as
// never having stopped (what resuming relies on). Bad files are one clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/error.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/mlp.h"
#include "difftrain/train/ema.h"
#include "difftrain/train/optimizer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::Checkpoint;
using difftrain::TimeInputMLP;
using difftrain::test::TempDir;
using difftrain::test::error_of;
using difftrain::test::flattened;
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

const std::vector<int64_t> kHidden{16, 128, 128, 128, 128, 16};

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && torch::equal(a, b);
}

void expect_state_equal(const StateDict& a, const StateDict& b, const std::string& what) {
  ASSERT_EQ(a.keys(), b.keys()) << what;
  for (const auto& item : a)
    EXPECT_TRUE(bitwise_equal(item.value(), b[item.key()])) << what << ": " << item.key();
}

// Structural, bitwise equality of two IValues (dicts, lists, tuples, tensors, scalars).
void expect_ivalue_equal(const c10::IValue& a, const c10::IValue& b, const std::string& where) {
  ASSERT_EQ(a.tagKind(), b.tagKind()) << where;
  if (a.isGenericDict()) {
    const auto da = a.toGenericDict(), db = b.toGenericDict();
    ASSERT_EQ(da.size(), db.size()) << where;
    for (const auto& item : da) {
      const auto key = item.key().isString() ? item.key().toStringRef() : std::to_string(item.key().toInt());
      auto found = db.find(item.key());
      ASSERT_TRUE(found != db.end()) << where << "." << key;
      expect_ivalue_equal(item.value(), found->value(), where + "." + key);
    }
  } else if (a.isList()) {
    const auto la = a.toListRef(), lb = b.toListRef();
    ASSERT_EQ(la.size(), lb.size()) << where;
    for (std::size_t i = 0; i < la.size(); ++i) expect_ivalue_equal(la[i], lb[i], where + "[" + std::to_string(i) + "]");
  } else if (a.isTuple()) {
    const auto& ta = a.toTupleRef().elements();
    const auto& tb = b.toTupleRef().elements();
    ASSERT_EQ(ta.size(), tb.size()) << where;
    for (std::size_t i = 0; i < ta.size(); ++i) expect_ivalue_equal(ta[i], tb[i], where + "(" + std::to_string(i) + ")");
  } else if (a.isTensor()) {
    EXPECT_TRUE(bitwise_equal(a.toTensor(), b.toTensor())) << where;
  } else if (a.isInt()) {
    EXPECT_EQ(a.toInt(), b.toInt()) << where;
  } else if (a.isDouble()) {
    EXPECT_EQ(a.toDouble(), b.toDouble()) << where;  // bitwise, not approximately
  } else if (a.isString()) {
    EXPECT_EQ(a.toStringRef(), b.toStringRef()) << where;
  } else if (a.isBool()) {
    EXPECT_EQ(a.toBool(), b.toBool()) << where;
  } else {
    ADD_FAILURE() << where << ": unexpected IValue kind " << a.tagKind();
  }
}

// One optimizer step on a batch fixed by `step`, so two runs can be fed identical data.
void train_step(TimeInputMLP& model, difftrain::FlatAdam& optimizer, int64_t step) {
  auto gen = difftrain::random_stream(123, 0, difftrain::Stream::eps, static_cast<uint64_t>(step));
  const auto x0 = gen.normal({64, 2});
  const auto sigma = gen.normal({64, 1}).exp();
  const auto eps = gen.normal({64, 2});
  optimizer.zero_grad();
  const auto loss = torch::mse_loss(model->forward(x0 + sigma * eps, sigma), eps);
  loss.backward();
  optimizer.step();
}

difftrain::TrainConfig train_config(const std::string& optimizer) {
  difftrain::TrainConfig c;
  c.optimizer = difftrain::parse_name<difftrain::OptimizerType>(optimizer, "test");
  c.weight_decay = c.optimizer == difftrain::OptimizerType::adamw ? 0.01 : 0.0;
  c.lr = 3e-3;  // large enough that every step moves every parameter visibly
  return c;
}

TimeInputMLP fresh_model(uint64_t seed) {
  torch::manual_seed(seed);
  return TimeInputMLP(2, kHidden);
}

// A model, its EMA and its optimizer after `steps` steps.
struct Trainee {
  TimeInputMLP model;
  std::unique_ptr<difftrain::Ema> ema;
  std::unique_ptr<difftrain::FlatAdam> optimizer;

  Trainee(uint64_t seed, const std::string& optimizer_name)
      : model(flattened(fresh_model(seed))),
        ema(std::make_unique<difftrain::Ema>(flattened(std::make_shared<difftrain::TimeInputMLPImpl>(2, kHidden)), *model,
                                             0.99)),
        optimizer(difftrain::make_optimizer(model->parameters(), train_config(optimizer_name))) {}

  void steps(int64_t from, int64_t to) {
    for (int64_t s = from; s < to; ++s) {
      train_step(model, *optimizer, s);
      ema->update();
    }
  }
};

Checkpoint make_checkpoint(Trainee& run, int64_t step) {
  Checkpoint c;
  c.step = step;
  c.config_yaml = "run_dir: runs/ckpt-test\nseed: 17\n# not ASCII: ünïcödé σ\ntrain:\n  steps: 99\n";
  c.sample_shape = {2};
  c.model = difftrain::state_dict(*run.model);
  c.ema = difftrain::state_dict(run.ema->model());
  c.optimizer = run.optimizer->state_dict();
  c.world_size = 4;
  c.data_position = 12345678901LL;  // past 32 bits
  c.seed = 17;
  c.skipped_steps = std::min<int64_t>(2, step);
  return c;
}

// ---------------------------------------------------------------- names

TEST(CheckpointStateDict, ParameterNamesAndShapesAreTheReferenceModules) {
  auto model = fresh_model(0);
  const auto state = difftrain::state_dict(*model);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected{
      {"net.0.weight", {16, 4}},     {"net.0.bias", {16}},         {"net.2.weight", {128, 16}},
      {"net.2.bias", {128}},         {"net.4.weight", {128, 128}}, {"net.4.bias", {128}},
      {"net.6.weight", {128, 128}},  {"net.6.bias", {128}},        {"net.8.weight", {128, 128}},
      {"net.8.bias", {128}},         {"net.10.weight", {16, 128}}, {"net.10.bias", {16}},
      {"net.12.weight", {2, 16}},    {"net.12.bias", {2}}};
  ASSERT_EQ(state.size(), expected.size());
  std::size_t i = 0;
  for (const auto& item : state) {
    EXPECT_EQ(item.key(), expected[i].first);
    EXPECT_EQ(item.value().sizes(), expected[i].second) << item.key();
    EXPECT_EQ(item.value().scalar_type(), torch::kFloat32) << item.key();
    EXPECT_FALSE(item.value().requires_grad()) << item.key();
    ++i;
  }
  // A copy, not a view: changing the model later does not change the saved state.
  const auto before = state["net.0.bias"].clone();
  {
    torch::NoGradGuard no_grad;
    model->named_parameters()["net.0.bias"].add_(1.0);
  }
  EXPECT_TRUE(torch::equal(state["net.0.bias"], before));
}

// ---------------------------------------------------------------- round trip and resume

class CheckpointRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointRoundTrip, EveryTensorAndFieldSurvivesBitwise) {
  TempDir dir;
  Trainee run(0, GetParam());
  run.steps(0, 3);
  const Checkpoint saved = make_checkpoint(run, 3);
  const std::string path = difftrain::checkpoint_path(dir / "run", 3);
  difftrain::save_checkpoint(path, saved);
  EXPECT_EQ(fs::path(path).filename().string(), "step-0000003.pt");

  const Checkpoint loaded = difftrain::load_checkpoint(path);
  EXPECT_EQ(loaded.step, 3);
  EXPECT_EQ(loaded.config_yaml, saved.config_yaml);
  EXPECT_EQ(loaded.sample_shape, std::vector<int64_t>{2});
  EXPECT_EQ(loaded.world_size, 4);
  EXPECT_EQ(loaded.data_position, 12345678901LL);
  EXPECT_EQ(loaded.seed, 17);
  EXPECT_EQ(loaded.skipped_steps, 2);
  expect_state_equal(loaded.model, saved.model, "model");
  expect_state_equal(loaded.ema, saved.ema, "ema");
  expect_ivalue_equal(loaded.optimizer, saved.optimizer, "optimizer");

  // The EMA is its own set of weights, not the model's.
  EXPECT_FALSE(torch::equal(loaded.ema["net.0.weight"], loaded.model["net.0.weight"]));

  // The optimizer state has an entry per parameter, advanced by the steps taken.
  const auto opt = loaded.optimizer.toGenericDict();
  const auto state = opt.at("state").toGenericDict();
  EXPECT_EQ(state.size(), 14u);
  for (int64_t i = 0; i < 14; ++i) {
    auto entry = state.at(c10::IValue(i)).toGenericDict();
    EXPECT_EQ(entry.at("step").toInt(), 3) << "param " << i;
    const auto& param = loaded.model[loaded.model.keys()[i]];
    EXPECT_EQ(entry.at("exp_avg").toTensor().sizes(), param.sizes()) << "param " << i;
    EXPECT_GT(entry.at("exp_avg_sq").toTensor().abs().sum().item<double>(), 0) << "param " << i;
  }
  const auto group = opt.at("param_groups").toListRef().at(0).toGenericDict();
  EXPECT_EQ(group.at("lr").toDouble(), 3e-3);
  EXPECT_EQ(group.at("eps").toDouble(), 1e-8);
  EXPECT_EQ(group.at("weight_decay").toDouble(), GetParam() == "adamw" ? 0.01 : 0.0);

  // Loaded into fresh models and a fresh optimizer, the state reads back the same.
  Trainee other(1, GetParam());
  difftrain::load_state_dict(*other.model, loaded.model, path);
  difftrain::load_state_dict(other.ema->model(), loaded.ema, path);
  other.optimizer->load_state_dict(loaded.optimizer);
  expect_state_equal(difftrain::state_dict(*other.model), saved.model, "reloaded model");
  expect_state_equal(difftrain::state_dict(other.ema->model()), saved.ema, "reloaded ema");
  expect_ivalue_equal(other.optimizer->state_dict(), saved.optimizer, "reloaded optimizer");
}

TEST_P(CheckpointRoundTrip, ContinuingFromALoadedCheckpointIsBitwiseTheSame) {
  TempDir dir;
  const std::string path = dir / "ckpt.pt";
  Trainee original(0, GetParam());
  original.steps(0, 4);
  difftrain::save_checkpoint(path, make_checkpoint(original, 4));
  original.steps(4, 9);  // K = 5 more steps, uninterrupted

  const Checkpoint c = difftrain::load_checkpoint(path);
  Trainee resumed(1, GetParam());  // other initial weights: everything must come from the file
  difftrain::load_state_dict(*resumed.model, c.model, path);
  difftrain::load_state_dict(resumed.ema->model(), c.ema, path);
  resumed.ema->set_updates(c.step);
  resumed.optimizer->load_state_dict(c.optimizer);
  resumed.steps(4, 9);

  expect_state_equal(difftrain::state_dict(*resumed.model), difftrain::state_dict(*original.model), "model");
  expect_state_equal(difftrain::state_dict(resumed.ema->model()), difftrain::state_dict(original.ema->model()),
                     "ema");
  expect_ivalue_equal(resumed.optimizer->state_dict(), original.optimizer->state_dict(),
                      "optimizer");

  // Without the optimizer state the same steps land elsewhere: the comparison above can
  // tell a lost Adam moment or step count.
  Trainee forgetful(1, GetParam());
  difftrain::load_state_dict(*forgetful.model, c.model, path);
  forgetful.steps(4, 9);
  EXPECT_FALSE(torch::equal(difftrain::state_dict(*forgetful.model)["net.0.weight"],
                            difftrain::state_dict(*original.model)["net.0.weight"]));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, CheckpointRoundTrip, ::testing::Values(std::string("adamw"), std::string("adam")),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(CheckpointRoundTripFile, SavingOverAnExistingCheckpointLeavesOnlyTheFile) {
  TempDir dir;
  Trainee run(0, "adamw");
  const std::string path = difftrain::latest_checkpoint_path(dir / "run");
  EXPECT_EQ(path, (dir / "run") + "/checkpoints/latest.pt");
  difftrain::save_checkpoint(path, make_checkpoint(run, 0));
  run.steps(0, 1);
  difftrain::save_checkpoint(path, make_checkpoint(run, 1));
  EXPECT_EQ(difftrain::load_checkpoint(path).step, 1);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "run/checkpoints")) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"latest.pt"});
  EXPECT_EQ(difftrain::checkpoint_path("r", 1234567), "r/checkpoints/step-1234567.pt");
  EXPECT_EQ(difftrain::checkpoint_path("r", 0), "r/checkpoints/step-0000000.pt");
}

// ---------------------------------------------------------------- strict loading

TEST(CheckpointStateDict, LoadingIsStrict) {
  auto model = fresh_model(0);
  const auto good = difftrain::state_dict(*fresh_model(5));

  StateDict missing;
  for (const auto& item : good)
    if (item.key() != "net.4.bias") missing.insert(item.key(), item.value());
  auto message = error_of([&] { difftrain::load_state_dict(*model, missing, "ckpt.pt (model)"); });
  EXPECT_MENTIONS(message, "net.4.bias");
  EXPECT_MENTIONS(message, "ckpt.pt (model)");

  StateDict unexpected = good;
  unexpected.insert("net.14.weight", torch::zeros({2, 2}));
  message = error_of([&] { difftrain::load_state_dict(*model, unexpected, "ckpt.pt (ema)"); });
  EXPECT_MENTIONS(message, "net.14.weight");
  EXPECT_MENTIONS(message, "ckpt.pt (ema)");

  StateDict wrong_shape;
  for (const auto& item : good)
    wrong_shape.insert(item.key(), item.key() == "net.2.weight" ? torch::zeros({64, 16}) : item.value());
  message = error_of([&] { difftrain::load_state_dict(*model, wrong_shape, "src"); });
  EXPECT_MENTIONS(message, "net.2.weight");
  EXPECT_MENTIONS(message, "64");

  // A different architecture (the reference's hidden dims differ) is refused too.
  message = error_of([&] { difftrain::load_state_dict(*model, difftrain::state_dict(*TimeInputMLP(2, std::vector<int64_t>{16, 32})), "small"); });
  EXPECT_MENTIONS(message, "small");

  // The good one loads, every value.
  difftrain::load_state_dict(*model, good, "good");
  expect_state_equal(difftrain::state_dict(*model), good, "loaded");
}

TEST(CheckpointStateDict, OptimizerStateOfAnotherShapeIsRefused) {
  auto small = flattened(TimeInputMLP(2, std::vector<int64_t>{16, 32, 16}));
  auto big = flattened(fresh_model(0));
  auto small_opt = difftrain::make_optimizer(small->parameters(), train_config("adamw"));
  auto big_opt = difftrain::make_optimizer(big->parameters(), train_config("adamw"));
  train_step(big, *big_opt, 0);
  error_of([&] { small_opt->load_state_dict(big_opt->state_dict()); });
}

// ---------------------------------------------------------------- bad files

TEST(CheckpointFile, MissingEmptyTruncatedAndForeignFilesAreErrorsNamingThePath) {
  TempDir dir;
  Trainee run(0, "adamw");
  run.steps(0, 2);
  const std::string good = dir / "good.pt";
  difftrain::save_checkpoint(good, make_checkpoint(run, 2));
  const auto size = fs::file_size(good);
  ASSERT_GT(size, 100000u);  // the MLP's weights, twice, plus Adam's moments

  const std::string missing = dir / "missing.pt";
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(missing); }), missing);

  const std::string empty = dir / "empty.pt";
  std::ofstream(empty).close();
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(empty); }), empty);

  const std::string half = dir / "half.pt";
  fs::copy_file(good, half);
  fs::resize_file(half, size / 2);
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(half); }), half);

  const std::string nearly = dir / "nearly.pt";
  fs::copy_file(good, nearly);
  fs::resize_file(nearly, size - 10);
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(nearly); }), nearly);

  const std::string text = dir / "text.pt";
  std::ofstream(text) << "model: not really\n";
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(text); }), text);

  // A directory where the file should be.
  EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(dir.path()); }), dir.path());

  // The good one still loads after all that.
  EXPECT_EQ(difftrain::load_checkpoint(good).step, 2);
}

// A checksum that verifies says nothing of whether the values are possible: a crafted file
// with an impossible step, data position, world size or shape is refused by entry, before a
// resume acts on it (a position of -100 used to crash, -1 to fail inside LibTorch, and a
// step of -5 to train from step -4).
TEST(CheckpointFile, ImpossibleValuesWithAValidChecksumAreRefusedByEntry) {
  TempDir dir;
  Trainee run(0, "adamw");
  const std::string path = dir / "crafted.pt";
  struct Case {
    const char* entry;
    std::function<void(Checkpoint&)> craft;
  };
  const std::vector<Case> cases{
      {"'step' is -5, below 0", [](Checkpoint& c) { c.step = -5, c.skipped_steps = 0; }},
      {"'data.position' is -100, below 0", [](Checkpoint& c) { c.data_position = -100; }},
      {"'data.position' is -1, below 0", [](Checkpoint& c) { c.data_position = -1; }},
      {"'data.position' is 4611686018427387904: times data.world_size = 4 it overflows",
       [](Checkpoint& c) { c.data_position = int64_t{1} << 62; }},
      {"'data.world_size' is 0, below 1", [](Checkpoint& c) { c.world_size = 0; }},
      {"'skipped_steps' is 9, outside [0, step = 3]", [](Checkpoint& c) { c.skipped_steps = 9; }},
      {"'rng.seed' is -1", [](Checkpoint& c) { c.seed = -1; }},
      {"'sample_shape' is [2, 0]", [](Checkpoint& c) { c.sample_shape = {2, 0}; }},
      {"'sample_shape' is []", [](Checkpoint& c) { c.sample_shape = {}; }},
      {"'retained' names step -3", [](Checkpoint& c) { c.retained_steps = {-3}; }},
      {"'config' is empty", [](Checkpoint& c) { c.config_yaml.clear(); }},
  };
  for (const auto& [entry, craft] : cases) {
    SCOPED_TRACE(entry);
    Checkpoint c = make_checkpoint(run, 3);
    craft(c);
    difftrain::save_checkpoint(path, c);  // a checksum over the crafted values
    EXPECT_MENTIONS(error_of([&] { difftrain::load_checkpoint(path); }),
                    path + ": checkpoint entry " + entry);
  }
  difftrain::save_checkpoint(path, make_checkpoint(run, 3));
  EXPECT_EQ(difftrain::load_checkpoint(path).step, 3);
}

TEST(CheckpointFile, SymbolicLinkLoopIsNotAMissingFile) {
  TempDir dir;
  fs::create_symlink(dir / "b.pt", dir / "a.pt");
  fs::create_symlink(dir / "a.pt", dir / "b.pt");
  EXPECT_EQ(error_of([&] { difftrain::load_checkpoint(dir / "a.pt"); }), dir / "a.pt" + ": symbolic link loop");
  EXPECT_EQ(error_of([&] { difftrain::load_checkpoint(dir / "c.pt"); }), dir / "c.pt" + ": no such checkpoint");
}

}  // namespace
