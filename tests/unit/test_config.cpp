// The config schema (the README's "Config"): defaults, file and overrides, type-dependent
// defaults, the YAML round trip, and an error naming the key for every kind of mistake.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "difftrain/config.h"
#include "difftrain/error.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

Config parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return parse_config(yaml, "test.yaml", overrides);
}

// The message of the difftrain::Error that parsing throws. Any other exception escapes
// and fails the test: a YAML or std exception is not a user-facing error.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse(yaml, overrides);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for yaml '" << yaml << "' and " << overrides.size() << " override(s)";
  return "";
}

std::string write_file(const test::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path) << text;
  return path;
}

void expect_design_defaults(const Config& c) {
  EXPECT_EQ(c.run_dir, "runs/swissroll");
  EXPECT_EQ(c.seed, 0);
  EXPECT_EQ(c.data.path, "data/swissroll");
  EXPECT_EQ(c.data.dataset, "x");
  EXPECT_EQ(c.model.type, "mlp");
  EXPECT_EQ(c.model.hidden_dims, (std::vector<int64_t>{16, 128, 128, 128, 128, 16}));
  EXPECT_EQ(c.model.parameterization, Parameterization::eps);
  EXPECT_EQ(c.schedule.type, ScheduleType::loglinear);
  EXPECT_EQ(c.schedule.N, 200);
  EXPECT_EQ(c.schedule.sigma_min, 0.005);
  EXPECT_EQ(c.schedule.sigma_max, 10.0);
  EXPECT_FALSE(c.schedule.beta_start || c.schedule.beta_end || c.schedule.max_beta);
  EXPECT_EQ(c.train.steps, 15000);
  EXPECT_EQ(c.train.batch_size, 100);
  EXPECT_EQ(c.train.lr, 1.0e-3);
  EXPECT_EQ(c.train.optimizer, OptimizerType::adamw);
  EXPECT_EQ(c.train.ema_decay, 0.999);
  EXPECT_EQ(c.train.log_every, 100);
  EXPECT_EQ(c.train.checkpoint_every, 1000);
  EXPECT_EQ(c.dist.backend, Backend::automatic);
  EXPECT_EQ(c.dist.bucket_mb, 25.0);
  EXPECT_EQ(c.sample.steps, 20);
  EXPECT_EQ(c.sample.gam, 2.0);
  EXPECT_EQ(c.sample.mu, 0.0);
  EXPECT_EQ(c.sample.n, 2000);
  // "Optimizer defaults are PyTorch's": betas (0.9, 0.999), eps 1e-8, AdamW decay 0.01.
  EXPECT_EQ(c.train.betas, (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(c.train.adam_eps, 1e-8);
  EXPECT_EQ(c.train.weight_decay, 0.01);
}

// The config block the README shows (same keys and values; the README's comments say more).
const char* kDesignBlock = R"(
run_dir: runs/swissroll      # resolved config, metrics.jsonl, checkpoints/, samples/
seed: 0                      # rank r derives its own streams from (seed, r)
data:    {path: data/swissroll, dataset: x}     # a directory of *.h5 shards, one file, or a glob
model:   {type: mlp, hidden_dims: [16,128,128,128,128,16], parameterization: eps}
schedule: {type: loglinear, N: 200, sigma_min: 0.005, sigma_max: 10}
train:   {steps: 15000, batch_size: 100, lr: 1.0e-3, optimizer: adamw, ema_decay: 0.999,
          log_every: 100, checkpoint_every: 1000}
dist:    {backend: auto, bucket_mb: 25}         # auto | nccl | mpi
sample:  {steps: 20, gam: 2.0, mu: 0.0, n: 2000}
)";

TEST(Config, DefaultsAreTheDesignBlock) {
  expect_design_defaults(parse(""));
  expect_design_defaults(load_config(""));
  const Config design = parse(kDesignBlock);
  expect_design_defaults(design);
  EXPECT_EQ(to_yaml(design), to_yaml(parse("")));
  // The remaining keys have neutral defaults: nothing changes unless asked.
  const Config c = parse("");
  EXPECT_EQ(c.train.grad_accum, 1);
  EXPECT_EQ(c.train.grad_clip, 0.0);
  EXPECT_EQ(c.train.warmup_steps, 0);
}

TEST(Config, ShippedToyRecipeIsTheDefault) {
  const auto recipe = std::filesystem::path(__FILE__).parent_path() / "../../configs/swissroll.yaml";
  ASSERT_TRUE(std::filesystem::exists(recipe)) << recipe;
  EXPECT_EQ(to_yaml(load_config(recipe.string())), to_yaml(parse("")));
}

TEST(Config, NullValuesKeepTheDefaults) {
  const Config c = parse("seed:\ntrain:\n  steps:\nschedule:\n");
  EXPECT_EQ(c.seed, 0);
  EXPECT_EQ(c.train.steps, 15000);
  EXPECT_EQ(c.schedule.N, 200);
}

TEST(Config, FileThenOverridesApply) {
  test::TempDir dir;
  const std::string path = write_file(dir, "run.yaml", R"(
run_dir: runs/mine
seed: 3
model:
  hidden_dims: [32, 32]
  parameterization: v
train:
  steps: 500
  lr: 2.0e-4
  optimizer: adam
sample: {gam: 1.0, mu: 0.5}
)");
  const Config file_only = load_config(path);
  EXPECT_EQ(file_only.run_dir, "runs/mine");
  EXPECT_EQ(file_only.seed, 3);
  EXPECT_EQ(file_only.model.hidden_dims, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(file_only.model.parameterization, Parameterization::v);
  EXPECT_EQ(file_only.train.steps, 500);
  EXPECT_EQ(file_only.train.lr, 2.0e-4);
  EXPECT_EQ(file_only.train.optimizer, OptimizerType::adam);
  EXPECT_EQ(file_only.sample.gam, 1.0);
  EXPECT_EQ(file_only.sample.mu, 0.5);
  EXPECT_EQ(file_only.train.batch_size, 100);  // untouched keys keep their defaults

  // Overrides come after the file, in order (the last one wins), and reach every kind of
  // value: integers, numbers, strings, lists.
  const Config c = load_config(path, {"seed=7", "model.hidden_dims=[8,8]", "train.lr=3e-4", "train.lr=5e-4",
                                      "data.path=/data/shards/*.h5", "schedule.N=50", "sample.mu=0.25"});
  EXPECT_EQ(c.seed, 7);
  EXPECT_EQ(c.model.hidden_dims, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(c.train.lr, 5e-4);
  EXPECT_EQ(c.data.path, "/data/shards/*.h5");
  EXPECT_EQ(c.schedule.N, 50);
  EXPECT_EQ(c.sample.mu, 0.25);
  EXPECT_EQ(c.train.steps, 500);  // from the file
  EXPECT_EQ(c.run_dir, "runs/mine");

  EXPECT_EQ(parse("", {"train.betas=[0.5, 0.9]"}).train.betas, (std::vector<double>{0.5, 0.9}));
}

TEST(Config, ScheduleDefaultsDependOnTheType) {
  const auto ddpm = parse("", {"schedule.type=ddpm"}).schedule;
  EXPECT_EQ(ddpm.N, 1000);
  EXPECT_EQ(ddpm.beta_start, 1e-4);
  EXPECT_EQ(ddpm.beta_end, 0.02);
  EXPECT_FALSE(ddpm.sigma_min || ddpm.sigma_max || ddpm.max_beta);

  const auto ldm = parse("schedule: {type: ldm}").schedule;
  EXPECT_EQ(ldm.N, 1000);
  EXPECT_EQ(ldm.beta_start, 0.00085);
  EXPECT_EQ(ldm.beta_end, 0.012);

  const auto sigmoid = parse("", {"schedule.type=sigmoid"}).schedule;
  EXPECT_EQ(sigmoid.N, 1000);
  EXPECT_EQ(sigmoid.beta_start, 1e-4);
  EXPECT_EQ(sigmoid.beta_end, 0.02);

  const auto cosine = parse("", {"schedule.type=cosine"}).schedule;
  EXPECT_EQ(cosine.N, 1000);
  EXPECT_EQ(cosine.max_beta, 0.999);

  const auto loglinear = parse("", {"schedule.type=loglinear"}).schedule;
  EXPECT_EQ(loglinear.N, 200);
  EXPECT_EQ(loglinear.sigma_min, 0.005);
  EXPECT_EQ(loglinear.sigma_max, 10.0);

  // A given value wins over the type's default.
  const auto custom = parse("", {"schedule.type=ldm", "schedule.N=10", "schedule.beta_end=0.03"}).schedule;
  EXPECT_EQ(custom.N, 10);
  EXPECT_EQ(custom.beta_start, 0.00085);
  EXPECT_EQ(custom.beta_end, 0.03);
  EXPECT_EQ(parse("", {"schedule.type=cosine", "schedule.max_beta=0.5"}).schedule.max_beta, 0.5);
}

TEST(Config, WeightDecayDefaultDependsOnTheOptimizer) {
  EXPECT_EQ(parse("", {"train.optimizer=adamw"}).train.weight_decay, 0.01);
  EXPECT_EQ(parse("", {"train.optimizer=adam"}).train.weight_decay, 0.0);
  EXPECT_EQ(parse("", {"train.optimizer=adam", "train.weight_decay=0.1"}).train.weight_decay, 0.1);
  EXPECT_EQ(parse("", {"train.weight_decay=0"}).train.weight_decay, 0.0);
}

void expect_round_trip(const Config& c) {
  const std::string text = to_yaml(c);
  const Config back = parse_config(text, "round-trip.yaml");
  EXPECT_EQ(to_yaml(back), text);
  // Text equality could hide a lossy number format; compare a few values exactly too.
  EXPECT_EQ(back.run_dir, c.run_dir);
  EXPECT_EQ(back.train.lr, c.train.lr);
  EXPECT_EQ(back.train.adam_eps, c.train.adam_eps);
  EXPECT_EQ(back.train.weight_decay, c.train.weight_decay);
  EXPECT_EQ(back.schedule.N, c.schedule.N);
  EXPECT_EQ(back.schedule.sigma_min, c.schedule.sigma_min);
  EXPECT_EQ(back.schedule.beta_start, c.schedule.beta_start);
  EXPECT_EQ(back.schedule.max_beta, c.schedule.max_beta);
  EXPECT_EQ(back.model.hidden_dims, c.model.hidden_dims);
  EXPECT_EQ(back.dist.bucket_mb, c.dist.bucket_mb);
  EXPECT_EQ(back.sample.gam, c.sample.gam);
}

TEST(Config, ToYamlRoundTrips) {
  expect_round_trip(parse(""));
  expect_round_trip(parse("", {"schedule.type=cosine", "schedule.max_beta=0.3", "train.optimizer=adam"}));
  expect_round_trip(parse("", {"schedule.type=ddpm", "schedule.N=17", "schedule.beta_start=0.00012345678901234"}));
  // Values whose shortest text is long or unusual, and a string that needs quoting.
  const Config odd = parse(R"(run_dir: "runs/it's: a #test, [x]")",
                           {"train.lr=0.30000000000000004", "train.adam_eps=1e-300", "dist.bucket_mb=1e20",
                            "schedule.sigma_min=1e-7", "schedule.sigma_max=123456.789", "sample.gam=3",
                            "model.hidden_dims=[1]", "seed=12345678901"});
  EXPECT_EQ(odd.run_dir, "runs/it's: a #test, [x]");
  EXPECT_EQ(odd.seed, 12345678901);
  expect_round_trip(odd);
}

// ---- errors: each a difftrain::Error that names the key --------------------------------

TEST(ConfigErrors, MalformedYamlNamesTheSourceAndLine) {
  for (const char* yaml : {"train:\n  steps: [1, 2\n", "seed: 0\ntrain: {steps: 1\n", "a: b: c\n",
                           "train:\n  steps: 1\n lr: 2\n"}) {
    const std::string m = error_of(yaml);
    EXPECT_THAT(m, HasSubstr("test.yaml")) << yaml;
    EXPECT_THAT(m, HasSubstr("line")) << yaml;
  }
  test::TempDir dir;
  const std::string path = write_file(dir, "broken.yaml", "seed: 1\nmodel: {type: mlp\n");
  try {
    load_config(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("line"));
  }
}

TEST(ConfigErrors, FileErrorsNameThePath) {
  test::TempDir dir;
  const std::string missing = dir / "nope.yaml";
  try {
    load_config(missing);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing));
  }
  const std::string path = write_file(dir, "typo.yaml", "train:\n  step: 10\n");
  try {
    load_config(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("train.step"));
  }
  // A directory opens as a stream on Linux and reads as empty: it must not pass for defaults.
  try {
    load_config(dir.path());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("is a directory"));
  }
}

TEST(ConfigErrors, UnknownKeys) {
  EXPECT_THAT(error_of("epochs: 5\n"), HasSubstr("epochs"));
  EXPECT_THAT(error_of("train:\n  stepz: 5\n"), HasSubstr("train.stepz"));
  EXPECT_THAT(error_of("schedule: {type: ddpm, beta_mid: 0.01}\n"), HasSubstr("schedule.beta_mid"));
  EXPECT_THAT(error_of("model:\n  dit:\n    depth: 3\n"), HasSubstr("model.dit"));
  EXPECT_THAT(error_of("", {"train.stepz=5"}), HasSubstr("train.stepz"));
  EXPECT_THAT(error_of("", {"optim.lr=5"}), HasSubstr("optim.lr"));
  EXPECT_THAT(error_of("", {"model=mlp"}), HasSubstr("model"));
}

TEST(ConfigErrors, WrongTypes) {
  struct Case {
    const char* yaml;
    const char* key;
  };
  for (const auto& [yaml, key] : std::vector<Case>{
           {"train:\n  lr: fast\n", "train.lr"},                 // string for a number
           {"train:\n  steps: ten\n", "train.steps"},            // string for an integer
           {"train:\n  steps: 1.5\n", "train.steps"},            // fraction for an integer
           {"seed: 1e3\n", "seed"},                              // float syntax for an integer
           {"train:\n  steps: [1, 2]\n", "train.steps"},         // list for a scalar
           {"run_dir: [a, b]\n", "run_dir"},                     // list for a string
           {"seed: {a: 1}\n", "seed"},                           // mapping for a scalar
           {"train: 5\n", "'train'"},                            // scalar for a section
           {"schedule: [loglinear]\n", "'schedule'"},            // list for a section
           {"model:\n  hidden_dims: 16\n", "model.hidden_dims"},  // scalar for a list
           {"model:\n  hidden_dims: [16, wide]\n", "model.hidden_dims"},
           {"train:\n  betas: [0.9, {a: 1}]\n", "train.betas"},
           {"sample: {mu: zero}\n", "sample.mu"},
       }) {
    EXPECT_THAT(error_of(yaml), HasSubstr(key)) << yaml;
  }
  EXPECT_THAT(error_of("", {"train.lr=fast"}), HasSubstr("train.lr"));
  EXPECT_THAT(error_of("", {"train.steps=[1]"}), HasSubstr("train.steps"));
  EXPECT_THAT(error_of("", {"model.hidden_dims=8"}), HasSubstr("model.hidden_dims"));
  EXPECT_THAT(error_of("", {"schedule.N=1.5"}), HasSubstr("schedule.N"));
  // The top level must be a mapping.
  EXPECT_THAT(error_of("- seed\n- train\n"), HasSubstr("test.yaml"));
}

TEST(ConfigErrors, OutOfRangeValues) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
  };
  const std::vector<Case> cases{
      {{"schedule.sigma_min=10"}, "schedule.sigma_min"},  // == sigma_max
      {{"train.lr=.inf"}, "train.lr"},                    // not finite: would not survive the round trip
      {{"train.grad_clip=.nan"}, "train.grad_clip"},
      {{"dist.timeout_s=1e10"}, "dist.timeout_s"},        // would overflow the watchdog's clock
      {{"dist.timeout_s=0.5"}, "dist.timeout_s"},
      {{"schedule.sigma_min=20"}, "schedule.sigma_min"},
      {{"schedule.sigma_max=0.001"}, "schedule.sigma_max"},
      {{"schedule.sigma_min=0"}, "schedule.sigma_min"},
      {{"schedule.sigma_min=-0.5"}, "schedule.sigma_min"},
      {{"schedule.N=0"}, "schedule.N"},
      {{"schedule.N=-3"}, "schedule.N"},
      {{"schedule.type=ddpm", "schedule.N=0"}, "schedule.N"},
      {{"schedule.type=ddpm", "schedule.beta_start=0"}, "schedule.beta_start"},
      {{"schedule.type=ddpm", "schedule.beta_end=1"}, "schedule.beta_end"},
      {{"schedule.type=ddpm", "schedule.beta_start=0.05", "schedule.beta_end=0.01"}, "schedule.beta_start"},
      {{"schedule.type=cosine", "schedule.max_beta=1"}, "schedule.max_beta"},
      {{"schedule.type=cosine", "schedule.max_beta=0"}, "schedule.max_beta"},
      {{"train.steps=0"}, "train.steps"},
      {{"sample.steps=0"}, "sample.steps"},
      {{"train.batch_size=0"}, "train.batch_size"},
      {{"train.batch_size=-100"}, "train.batch_size"},
      {{"train.grad_accum=0"}, "train.grad_accum"},
      {{"train.lr=0"}, "train.lr"},
      {{"train.lr=-1e-3"}, "train.lr"},
      {{"train.betas=[0.9]"}, "train.betas"},
      {{"train.betas=[0.9, 1.0]"}, "train.betas"},
      {{"train.adam_eps=0"}, "train.adam_eps"},
      {{"train.weight_decay=-0.1"}, "train.weight_decay"},
      {{"train.grad_clip=-1"}, "train.grad_clip"},
      {{"train.warmup_steps=-1"}, "train.warmup_steps"},
      {{"train.ema_decay=1"}, "train.ema_decay"},
      {{"train.ema_decay=1.5"}, "train.ema_decay"},
      {{"train.ema_decay=-0.1"}, "train.ema_decay"},
      {{"train.log_every=0"}, "train.log_every"},
      {{"train.checkpoint_every=0"}, "train.checkpoint_every"},
      {{"sample.mu=1"}, "sample.mu"},
      {{"sample.mu=1.5"}, "sample.mu"},
      {{"sample.mu=-0.1"}, "sample.mu"},
      {{"sample.n=0"}, "sample.n"},
      {{"seed=-1"}, "seed"},
      {{"model.hidden_dims=[]"}, "model.hidden_dims"},
      {{"model.hidden_dims=[8, 0]"}, "model.hidden_dims"},
      {{"dist.bucket_mb=0"}, "dist.bucket_mb"},
      {{"dist.check_every=-1"}, "dist.check_every"},
      {{"run_dir=''"}, "run_dir"},
  };
  for (const auto& c : cases) EXPECT_THAT(error_of("", c.overrides), HasSubstr(c.key)) << c.overrides.back();
  // The same checks apply to values from the file.
  EXPECT_THAT(error_of("train: {lr: 0}\n"), HasSubstr("train.lr"));
  EXPECT_THAT(error_of("schedule: {sigma_min: 10, sigma_max: 1}\n"), HasSubstr("schedule.sigma_min"));
}

TEST(ConfigErrors, UnknownNames) {
  struct Case {
    const char* override;
    const char* key;
    const char* value;
  };
  for (const auto& [assignment, key, value] : std::vector<Case>{
           {"schedule.type=exponential", "schedule.type", "exponential"},
           {"model.type=transformer", "model.type", "transformer"},
           {"train.optimizer=sgd", "train.optimizer", "sgd"},
           {"model.parameterization=flow", "model.parameterization", "flow"},
           {"dist.backend=gloo", "dist.backend", "gloo"},
       }) {
    const std::string m = error_of("", {assignment});
    EXPECT_THAT(m, HasSubstr(key));
    EXPECT_THAT(m, HasSubstr(value));
  }
}

// Every key that picks one of a few names reads each name, writes it back, lists all of
// them in the help text and in the error for any other name: one table per choice.
TEST(ConfigChoices, EachNameReadsWritesBackAndIsListedInHelpAndErrors) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> choices{
      {"model.parameterization", {"eps", "x0", "v"}},
      {"schedule.type", {"loglinear", "ddpm", "ldm", "sigmoid", "cosine"}},
      {"train.optimizer", {"adam", "adamw"}},
      {"train.precision", {"fp32", "bf16"}},
      {"dist.backend", {"auto", "mpi", "nccl"}},
  };
  const std::string help = describe_choices();
  EXPECT_EQ(std::count(help.begin(), help.end(), '\n'), static_cast<long>(choices.size())) << help;
  for (const auto& [key, names] : choices) {
    const std::string listed = fmt::format("{}", fmt::join(names, ", "));
    EXPECT_THAT(help, HasSubstr(key + ": " + listed + "\n"));
    EXPECT_THAT(error_of("", {key + "=bogus"}), HasSubstr("key '" + key + "': expected one of " + listed + "; got 'bogus'"));
    for (const auto& name : names) {
      const auto written = flatten(parse("", {key + "=" + name}));
      const auto entry = std::find_if(written.begin(), written.end(), [&](const auto& kv) { return kv.first == key; });
      ASSERT_NE(entry, written.end()) << key;
      EXPECT_EQ(entry->second, "\"" + name + "\"") << key;
    }
  }
}

TEST(ConfigErrors, KeysThatDoNotApplyToTheScheduleType) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
    const char* type;
  };
  for (const auto& [overrides, key, type] : std::vector<Case>{
           {{"schedule.type=ddpm", "schedule.sigma_min=0.1"}, "schedule.sigma_min", "ddpm"},
           {{"schedule.type=sigmoid", "schedule.sigma_max=20"}, "schedule.sigma_max", "sigmoid"},
           {{"schedule.type=ldm", "schedule.max_beta=0.5"}, "schedule.max_beta", "ldm"},
           {{"schedule.type=ddpm", "schedule.max_beta=0.5"}, "schedule.max_beta", "ddpm"},
           {{"schedule.beta_start=0.001"}, "schedule.beta_start", "loglinear"},
           {{"schedule.beta_end=0.02"}, "schedule.beta_end", "loglinear"},
           {{"schedule.max_beta=0.9"}, "schedule.max_beta", "loglinear"},
       }) {
    const std::string m = error_of("", overrides);
    EXPECT_THAT(m, HasSubstr(key));
    EXPECT_THAT(m, HasSubstr(type));
  }
  // Switching the type by override while the file holds the other type's keys is the
  // same mistake, and named the same way.
  EXPECT_THAT(error_of("schedule: {sigma_min: 0.01}\n", {"schedule.type=cosine"}), HasSubstr("schedule.sigma_min"));
}

TEST(ConfigErrors, MalformedOverrides) {
  for (const char* bad : {"train.steps", "train.steps:5", "=5"})
    EXPECT_THAT(error_of("", {bad}), HasSubstr(bad)) << bad;
  EXPECT_THAT(error_of("", {"train.steps="}), HasSubstr("train.steps"));
  EXPECT_THAT(error_of("", {"model.hidden_dims=[8, 8"}), HasSubstr("model.hidden_dims"));
  // A valid override does not mask a later malformed one.
  EXPECT_THAT(error_of("", {"seed=1", "sample.steps"}), HasSubstr("sample.steps"));
}

TEST(ConfigErrors, DuplicateKeysNameTheKeyAndBothLines) {
  // Top level, block style: the second `seed` would silently win.
  EXPECT_THAT(error_of("seed: 1\ntrain:\n  lr: 0.1\nseed: 2\n"),
              HasSubstr("test.yaml: key 'seed' appears twice (lines 1 and 4)"));
  // One level down, in a block mapping.
  EXPECT_THAT(error_of("seed: 1\ntrain:\n  lr: 1.0e-3\n  steps: 5\n  lr: 2.0e-3\n"),
              HasSubstr("test.yaml: key 'train.lr' appears twice (lines 3 and 5)"));
  // One level down, in a flow mapping on one line.
  EXPECT_THAT(error_of("\nschedule: {type: ddpm, N: 10, N: 20}\n"),
              HasSubstr("key 'schedule.N' appears twice (lines 2 and 2)"));
  // A whole section written twice: the keys inside differ, the section does not.
  EXPECT_THAT(error_of("train: {lr: 0.1}\nmodel: {type: mlp}\ntrain: {steps: 2}\n"),
              HasSubstr("key 'train' appears twice (lines 1 and 3)"));
  // The same key name in two sections is two keys, not a duplicate.
  EXPECT_EQ(parse("train: {steps: 3}\nsample: {steps: 4}\n").sample.steps, 4);
  test::TempDir dir;
  const std::string path = write_file(dir, "dup.yaml", "model:\n  hidden_dims: [8]\n  hidden_dims: [16]\n");
  EXPECT_MENTIONS(test::error_of([&] { load_config(path); }), path + ": key 'model.hidden_dims' appears twice (lines 2 and 3)");
}

TEST(ConfigErrors, KeysThatAreNotNamesAreErrors) {
  EXPECT_THAT(error_of("[a, b]: 1\n"), HasSubstr("test.yaml: line 1: expected a key name, got a list"));
  EXPECT_THAT(error_of("train:\n  {a: 1}: 2\n"), HasSubstr("line 2: expected a key name in 'train'"));
}

TEST(ConfigErrors, IntegersBeyondInt64NameTheKeyAndTheRange) {
  // yaml-cpp cannot read these as int64; saying "expected an integer" of an integer hides why.
  const std::string seed = error_of("seed: 99999999999999999999\n");
  EXPECT_THAT(seed, HasSubstr("key 'seed'"));
  EXPECT_THAT(seed, HasSubstr("[-9223372036854775808, 9223372036854775807]"));
  EXPECT_THAT(error_of("", {"train.steps=-99999999999999999999"}),
              HasSubstr("key 'train.steps': expected an integer in [-9223372036854775808, 9223372036854775807]"));
  EXPECT_THAT(error_of("", {"seed=-1"}), HasSubstr("key 'seed': must be in [0, 9223372036854775807], got -1"));
  // The extremes themselves are fine.
  EXPECT_EQ(parse("seed: 9223372036854775807\n").seed, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(parse("", {"seed=+12"}).seed, 12);
}

// A value, a key or an override of megabytes is cut in the message, which still names the
// key and tells the full size.
TEST(ConfigErrors, LongValuesAndKeysAreCutInMessages) {
  const std::string huge(1 << 20, 'a');
  struct Case {
    std::string yaml;
    std::vector<std::string> overrides;
    const char* names;
  };
  const std::vector<Case> cases{
      {"train:\n  lr: " + huge + "\n", {}, "key 'train.lr': expected a number, got 'aaaa"},
      {"train:\n  ? " + huge + "\n  : 1\n", {}, "unknown key 'train.aaaa"},  // (a plain key stops at 1024 characters)
      {"", {"train.lr=" + huge}, "override: key 'train.lr': expected a number, got 'aaaa"},
      {"", {"model.type=" + huge}, "key 'model.type': expected one of mlp, dit, unet; got 'aaaa"},
      {"", {"dist.backend=" + huge}, "key 'dist.backend'"},
      {"", {"train.optimizer=" + huge}, "key 'train.optimizer'"},
      {"", {"model.parameterization=" + huge}, "key 'model.parameterization'"},
      {"", {"train." + huge + "=1"}, "override: unknown key 'train.aaaa"},
      {"", {"train.steps" + huge}, "override 'train.stepsaaaa"},
      {"", {"train.steps=[" + huge}, "override 'train.steps=[aaaa"},
      {"? " + huge + "\n: 1\n? " + huge + "\n: 2\n", {}, "appears twice (lines 1 and 3)"},
  };
  for (const auto& c : cases) {
    const std::string m = error_of(c.yaml, c.overrides);
    EXPECT_THAT(m, HasSubstr(c.names));
    EXPECT_LT(m.size(), 200u) << m.substr(0, 300);
  }
  EXPECT_THAT(error_of("", {"train.lr=" + huge}), HasSubstr(fmt::format("… ({} bytes)", huge.size())));
  // A multi-line string value stays on one line.
  const std::string multi = error_of("train:\n  lr: |\n    fast\n    slow\n");
  EXPECT_THAT(multi, HasSubstr("'fast\\nslow\\n'"));
  EXPECT_THAT(multi, Not(HasSubstr("\n")));
}

TEST(ConfigErrors, SymbolicLinkLoopIsNotAMissingFile) {
  test::TempDir dir;
  std::filesystem::create_symlink(dir / "b.yaml", dir / "a.yaml");
  std::filesystem::create_symlink(dir / "a.yaml", dir / "b.yaml");
  EXPECT_EQ(test::error_of([&] { load_config(dir / "a.yaml"); }), dir / "a.yaml" + ": symbolic link loop");
  EXPECT_MENTIONS(test::error_of([&] { load_config(dir / "none.yaml"); }), dir / "none.yaml" + ": no such config file");
}

TEST(ConfigErrors, MessagesAreOneLine) {
  for (const auto& m : {error_of("train:\n  steps: [1, 2\n"), error_of("", {"train.lr=0"}), error_of("epochs: 1\n"),
                        error_of("", {"train.steps"})})
    EXPECT_THAT(m, Not(HasSubstr("\n"))) << m;
}

}  // namespace
}  // namespace difftrain
