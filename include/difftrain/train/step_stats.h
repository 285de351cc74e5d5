#pragma once
// What one training step reports, the same on every rank.
#include <torch/torch.h>

#include "difftrain/train/metrics.h"

namespace difftrain {

struct StepStats {
  double loss = 0, grad_norm = 0;
  bool skipped = false;  // non-finite loss or gradient norm: no optimizer step, no EMA
  bool stop = false;     // some rank asked to stop
  StepTimes times;       // this rank's
  torch::Tensor loss_by_sigma;  // LossBySigma's [sums, counts] over every rank's examples
};

}  // namespace difftrain
