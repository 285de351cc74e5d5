#pragma once
// Adam / AdamW as configured (PyTorch's defaults and arithmetic), on flat buffers: the
// parameters are views of one buffer (flat_buffer.h) and the moments are two more of the
// same layout, so a step is one fused pass over the buffers on the CPU and a handful of
// whole-buffer operations elsewhere, whatever the number of tensors. Also the learning-rate
// warm-up, and the state as a PyTorch-style state dict for checkpoints.
#include <memory>
#include <vector>

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>
#include <torch/torch.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"

namespace difftrain {

// One update's hyper-parameters. `step` counts from 1.
struct AdamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = true;  // AdamW: decay the weights; Adam: add weight_decay * p to the gradient
  int64_t step = 1;
};

// The update on whole buffers (parameters, gradients, first and second moments, all float32
// of one layout), as LibTorch's Adam/AdamW do it per parameter.
// The fused form makes one pass on the CPU; the tensor-operation form runs on any device.
void adam_update_fused_cpu(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                           torch::Tensor& exp_avg_sq, const AdamHyper& h);
// `scratch` is a buffer of the same size, for the intermediate values.
void adam_update_tensor_ops(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                            torch::Tensor& exp_avg_sq, const AdamHyper& h, torch::Tensor& scratch);
// PyTorch's own fused kernel (torch.optim's fused=True), one launch for the whole buffer:
// what FlatAdam runs on a GPU. LibTorch 2.x has it for GPUs and the CPU; with 1.x this is
// an error.
void adam_update_torch_fused(torch::Tensor& values, const torch::Tensor& grads, torch::Tensor& exp_avg,
                             torch::Tensor& exp_avg_sq, const AdamHyper& h);

class FlatAdam {
 public:
  // `params` must be views of one buffer (flatten_storage, flat_buffer.h); they stay where they are.
  FlatAdam(std::vector<torch::Tensor> params, const AdamHyper& hyper);

  // One step of every parameter, on gradients laid out as the parameters (GradBuckets'
  // flat_grads()). The other form gathers each parameter's .grad() (undefined counts as
  // zero): for callers without a gradient buffer.
  void step(const torch::Tensor& grads);
  void step();
  // Zeroes each parameter's .grad(), as torch.optim's zero_grad(set_to_none=False).
  void zero_grad();

  void set_lr(double lr) { hyper_.lr = lr; }
  double lr() const { return hyper_.lr; }
  const AdamHyper& hyper() const { return hyper_; }
  int64_t steps() const { return steps_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  const torch::Tensor& values() const { return values_; }
  const torch::Tensor& exp_avg() const { return exp_avg_; }
  const torch::Tensor& exp_avg_sq() const { return exp_avg_sq_; }

  // {"state": {i: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [{...}]} as in
  // torch.optim's state_dict(), parameters numbered in order; no entries before a step.
  c10::IValue state_dict() const;
  // From such a dict. Entries may be missing (parameters PyTorch never stepped: zero
  // moments), but those present must agree on the step count.
  void load_state_dict(const c10::IValue& state);
  // Collective: every rank ends with rank 0's moments and step count.
  void broadcast(Communicator& comm);

 private:
  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offsets_;
  torch::Tensor values_, exp_avg_, exp_avg_sq_;
  torch::Tensor scratch_;  // for the tensor-operation update, made on its first step
  AdamHyper hyper_;
  int64_t steps_ = 0;
};

std::unique_ptr<FlatAdam> make_optimizer(std::vector<torch::Tensor> params, const TrainConfig& config);

// Linear warm-up from lr / warmup_steps at step 1 to lr at step warmup_steps, then flat.
double learning_rate(const TrainConfig& config, int64_t step);

}  // namespace difftrain
