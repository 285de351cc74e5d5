#pragma once
// Checkpoints: a dict written as torch.save does (torch_save.h), so Python's torch.load(path) reads
// it. Keys: model, ema (name -> tensor, names as in the reference PyTorch modules),
// optimizer (torch.optim-style state dict), step, config (resolved YAML text),
// sample_shape, data ({world_size, position}: examples each rank has consumed), rng
// ({seed, scheme}: the streams are recomputed from the step, see random_streams.h),
// retained (the step files of this run that retention may prune) and checksum
// ({algorithm, value}: XXH3-64 of every other entry, verified on load).
// No checkpoint with a non-finite weight or optimizer value is ever written or accepted.
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>
#include <torch/torch.h>

#include "difftrain/core/random_streams.h"

namespace difftrain {

struct Checkpoint {
  int64_t step = 0;
  std::string config_yaml;
  std::vector<int64_t> sample_shape;
  torch::OrderedDict<std::string, torch::Tensor> model, ema;
  c10::IValue optimizer;
  int64_t world_size = 1;
  int64_t data_position = 0;  // examples consumed by each rank
  int64_t seed = 0;
  std::string stream_scheme = kStreamScheme;  // how the random streams derive from the seed
  int64_t skipped_steps = 0;  // non-finite steps skipped so far
  // Steps whose step-NNNNNNN.pt this run wrote beside this checkpoint and still keeps:
  // retention prunes only these, never a file some other run (or the user) put there.
  std::vector<int64_t> retained_steps;
};

// Atomically: a crash mid-write leaves any previous file at `path` intact. Refuses (Error)
// a checkpoint holding a non-finite value.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// The same bytes to several paths (e.g. step-NNNNNNN.pt and latest.pt), serialised once.
void save_checkpoint(const std::vector<std::string>& paths, const Checkpoint& checkpoint);
// Verifies the checksum (when the file has one: older checkpoints do not) and that every
// weight and optimizer value is finite; an Error names the file and what is wrong.
Checkpoint load_checkpoint(const std::string& path);

// name -> tensor of a module's parameters and buffers (detached, CPU), as in state_dict().
torch::OrderedDict<std::string, torch::Tensor> state_dict(const torch::nn::Module& module);
// Copies `state` into `module`; every name must match, with the same shape (strict).
void load_state_dict(torch::nn::Module& module, const torch::OrderedDict<std::string, torch::Tensor>& state,
                     const std::string& source);

// RUN/checkpoints/step-NNNNNNN.pt
std::string checkpoint_path(const std::string& run_dir, int64_t step);
std::string latest_checkpoint_path(const std::string& run_dir);

}  // namespace difftrain
