#pragma once
// Adam / AdamW as configured (PyTorch's defaults), the learning-rate warm-up, and the
// optimizer state as a PyTorch-style state dict for checkpoints.
#include <memory>
#include <vector>

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>
#include <torch/torch.h>

#include "difftrain/config.h"
#include "difftrain/comm/communicator.h"

namespace difftrain {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> params, const TrainConfig& config);

// Linear warm-up from lr / warmup_steps at step 1 to lr at step warmup_steps, then flat.
double learning_rate(const TrainConfig& config, int64_t step);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// {"state": {i: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [{...}]} as in
// torch.optim's state_dict(), parameters numbered in order.
c10::IValue optimizer_state(torch::optim::Optimizer& optimizer);
void load_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& state);

// Collective: every rank ends with rank 0's per-parameter state (moments and step counts).
void broadcast_optimizer_state(torch::optim::Optimizer& optimizer, Communicator& comm);

}  // namespace difftrain
