#pragma once
// What every rank sends with its gradients: this rank's share of the mean loss, its stop
// request, its failure, and its loss by noise level. They ride at the head of the gradient
// buffer's bucket 0, so the step's one gradient all-reduce sums them over every rank too,
// and a rank that failed or was asked to stop costs no collective of its own. This is the
// one place that knows their layout.
#include <cstdint>

#include <torch/torch.h>

namespace difftrain {

class StepExtras {
 public:
  explicit StepExtras(int64_t sigma_bins) : bins_(sigma_bins) {}
  // Floats in all (GradBuckets' `extras`).
  int64_t size() const { return kLossBySigma + 2 * bins_; }

  // Views into the extras (float32 [size()], on the device):
  torch::Tensor loss(const torch::Tensor& extras) const { return extras.narrow(0, kLoss, 1); }
  torch::Tensor flags(const torch::Tensor& extras) const { return extras.narrow(0, kStop, 2); }  // [stop, failed]
  torch::Tensor loss_by_sigma(const torch::Tensor& extras) const {
    return extras.narrow(0, kLossBySigma, 2 * bins_);  // LossBySigma's [sums | counts]
  }

  // The extras after the all-reduce, read on the host once per step.
  struct Summed {
    double loss = 0;              // the global batch's mean loss
    bool stop = false;            // some rank was asked to stop
    bool failed = false;          // some rank failed
    torch::Tensor loss_by_sigma;  // float64 [sums | counts] over every rank's examples (a copy)
  };
  Summed read(const torch::Tensor& extras) const {
    const auto host = extras.cpu();
    const float* v = host.data_ptr<float>();
    return {v[kLoss], v[kStop] > 0, v[kStop + 1] > 0, host.narrow(0, kLossBySigma, 2 * bins_).to(torch::kFloat64)};
  }

 private:
  static constexpr int64_t kLoss = 0, kStop = 1, kLossBySigma = 3;
  int64_t bins_;
};

}  // namespace difftrain
