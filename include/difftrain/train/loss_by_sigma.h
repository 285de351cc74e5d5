#pragma once
// The training loss binned by noise level: where in the schedule the model is good or bad,
// which one mean loss hides (low-sigma losses are small, high-sigma ones near 1).
#include <vector>

#include <torch/torch.h>

namespace difftrain {

class LossBySigma {
 public:
  // `bins` equal bins of log sigma over [log sigma_min, log sigma_max]; sigmas outside
  // (none, for the schedule's own) count in the first or last bin.
  LossBySigma(double sigma_min, double sigma_max, int64_t bins = 10);

  // Per-bin [sum of losses, count] of a batch: float64 [2 * bins], ready to ride in an
  // all-reduce. `loss` and `sigma` hold one value per example.
  torch::Tensor bin(const torch::Tensor& loss, const torch::Tensor& sigma) const;
  // The same, added into `sums_and_counts` (float32 or float64 [2 * bins], contiguous, on
  // the loss's device) with no allocation on the CPU and no host read on a GPU.
  void bin_into(const torch::Tensor& loss, const torch::Tensor& sigma, torch::Tensor sums_and_counts) const;
  // Adds such a [2 * bins] tensor (after the all-reduce) to the window.
  void add(const torch::Tensor& sums_and_counts);
  void clear();

  int64_t bins() const { return static_cast<int64_t>(sum_.size()); }
  const std::vector<double>& log_sigma_edges() const { return edges_; }
  const std::vector<double>& sums() const { return sum_; }
  const std::vector<double>& counts() const { return count_; }

 private:
  std::vector<double> edges_, sum_, count_;
};

}  // namespace difftrain
