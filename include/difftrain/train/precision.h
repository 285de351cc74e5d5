#pragma once
// train.precision: fp32, or bf16 autocast for the forward pass with fp32 master weights,
// fp32 gradients and an fp32 all-reduce; the same on the CPU and on GPUs. And train.tf32:
// TF32 matmuls and convolutions on GPUs.
#include <torch/torch.h>

#include "difftrain/config.h"

namespace difftrain {

// While alive, operations on `device`'s type run under autocast in bfloat16 (nothing
// changes for fp32). The state before it (enabled or not, and its dtype) comes back after,
// and the cache of cast weights is dropped, as torch.autocast does on exit.
class AutocastScope {
 public:
  AutocastScope(Precision precision, torch::Device device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  torch::DeviceType type_;
  bool was_enabled_ = false;
  torch::ScalarType was_dtype_ = torch::kFloat32;
};

// Whether float32 matmuls and convolutions on GPUs may use TF32 (no effect on the CPU).
void set_tf32(bool allowed);

}  // namespace difftrain
