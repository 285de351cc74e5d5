#pragma once
// The YAML schema: every key with its default, validation, and `key.sub=value` overrides.
// The README's "Configuration" section documents every key this file declares.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "difftrain/models/model_config.h"

namespace difftrain {

struct DataConfig {
  std::string path = "data/swissroll";  // a directory of *.h5 shards, one file, or a glob
  std::string dataset = "x";
  bool hflip = false;  // flip each image left-right with probability 1/2 (images only)
};


// Which keys apply, and their defaults, depend on `type`; resolve() fills them in.
struct ScheduleConfig {
  std::string type = "loglinear";  // loglinear | ddpm | ldm | sigmoid | cosine
  std::optional<int64_t> N;
  std::optional<double> sigma_min, sigma_max;            // loglinear
  std::optional<double> beta_start, beta_end, max_beta;  // ddpm, ldm, sigmoid, cosine (max_beta)
};

struct TrainConfig {
  int64_t steps = 15000;
  int64_t batch_size = 100;  // global: split evenly over the ranks
  int64_t grad_accum = 1;    // micro-batches per step on each rank
  double lr = 1.0e-3;
  std::string optimizer = "adamw";  // adam | adamw
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
  std::string precision = "fp32";  // fp32 | bf16 (autocast for the forward pass)
  bool tf32 = true;                // TF32 matmuls and convolutions on GPUs
  int64_t threads = 0;             // intra-op threads per rank; 0 = the node's cores / its ranks
  bool cuda_graph = false;  // replay the step's device work from a CUDA graph (static shapes)
};

struct DistConfig {
  std::string backend = "auto";  // auto | nccl | mpi
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

// Fills the schedule's and optimizer's type-dependent defaults and checks every range.
void resolve(Config& config);

// The resolved config as YAML text; parse_config(to_yaml(c)) == c.
std::string to_yaml(const Config& config);

// Every key with its value as YAML text, in schema order: ("train.lr", "0.001"), ...
std::vector<std::pair<std::string, std::string>> flatten(const Config& config);

}  // namespace difftrain
