#pragma once
// The YAML schema: every key with its default, validation, and `key.sub=value` overrides.
// The README's "Configuration" section documents every key this file declares.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "difftrain/comm/backend.h"
#include "difftrain/core/schedule_config.h"
#include "difftrain/models/model_config.h"
#include "difftrain/names.h"

namespace difftrain {

enum class OptimizerType { adam, adamw };
constexpr std::array<Named<OptimizerType>, 2> names_of(OptimizerType) {
  return {{{OptimizerType::adam, "adam"}, {OptimizerType::adamw, "adamw"}}};
}

// fp32, or bf16 autocast for the forward pass (train/precision.h).
enum class Precision { fp32, bf16 };
constexpr std::array<Named<Precision>, 2> names_of(Precision) {
  return {{{Precision::fp32, "fp32"}, {Precision::bf16, "bf16"}}};
}

struct DataConfig {
  std::string path = "data/swissroll";  // a directory of *.h5 shards, one file, or a glob
  std::string dataset = "x";
  bool hflip = false;  // flip each image left-right with probability 1/2 (images only)
};

struct TrainConfig {
  int64_t steps = 15000;
  int64_t batch_size = 100;  // global: split evenly over the ranks
  int64_t grad_accum = 1;    // micro-batches per step on each rank
  double lr = 1.0e-3;
  OptimizerType optimizer = OptimizerType::adamw;
  std::vector<double> betas{0.9, 0.999};
  double adam_eps = 1e-8;
  std::optional<double> weight_decay;  // default: 0 for adam, 0.01 for adamw
  double grad_clip = 0.0;              // max global gradient norm; 0 = off
  int64_t warmup_steps = 0;            // linear LR warm-up
  double ema_decay = 0.999;
  int64_t log_every = 100;
  int64_t checkpoint_every = 1000;
  int64_t keep_checkpoints = 3;  // step-*.pt files kept besides latest.pt; 0 = keep all
  int64_t max_bad_steps = 20;    // consecutive non-finite steps skipped before the run stops
  double cond_drop = 0.1;        // share of labels replaced by "no label" (conditional models)
  int64_t sample_every = 0;      // steps between sample grids in RUN/samples/ (images); 0 = off
  Precision precision = Precision::fp32;
  bool tf32 = true;                // TF32 matmuls and convolutions on GPUs
  int64_t threads = 0;             // intra-op threads per rank; 0 = the node's cores / its ranks
  bool cuda_graph = false;  // replay the step's device work from a CUDA graph (static shapes)
};

struct DistConfig {
  Backend backend = Backend::automatic;
  double bucket_mb = 25;
  int64_t check_every = 1000;  // steps between cross-rank parameter checksums; 0 = off
  double timeout_s = 600;      // a collective not done by then ends the job (a peer died or hangs)
};

struct SampleConfig {
  int64_t steps = 20;
  double gam = 2.0;
  double mu = 0.0;
  int64_t n = 2000;
  double cfg_scale = 0.0;     // classifier-free guidance: eps_c + cfg_scale (eps_c - eps_u)
  std::string label = "all";  // key `class`: a class id, or "all" (cycle the classes)
};

struct Config {
  std::string run_dir = "runs/swissroll";
  int64_t seed = 0;
  DataConfig data;
  ModelConfig model;
  ScheduleConfig schedule;
  TrainConfig train;
  DistConfig dist;
  SampleConfig sample;
};

// Defaults, then the YAML file (if any), then each "key.sub=value" override; then the
// type-dependent defaults are filled in and every value is validated. `source` names the
// origin in error messages. Throws difftrain::Error naming the key at fault.
Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// Fills the schedule's, model's and optimizer's type-dependent defaults and checks every range.
void resolve(Config& config);

// The resolved config as YAML text; parse_config(to_yaml(c)) == c.
std::string to_yaml(const Config& config);

// Every key with its value as YAML text, in schema order: ("train.lr", "0.001"), ...
std::vector<std::pair<std::string, std::string>> flatten(const Config& config);

// "  schedule.type: loglinear, ddpm, ...\n" for every key that picks one of a few names, from
// their tables (names.h): for help texts.
std::string describe_choices();

// Whether `key` may differ between a checkpoint's config and the config resuming it: a
// property each key is declared with (config.cpp's schema). Those that say how long, how
// fast, how often or how ranks talk may; those that change the arithmetic of training may not.
bool may_change_on_resume(const std::string& key);

}  // namespace difftrain
