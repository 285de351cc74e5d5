#pragma once
// A diffusion noise schedule: N increasing float32 sigmas. Training draws sigma uniformly
// from them; sampling walks a decreasing subset of them.
#include <string>

#include <torch/torch.h>

#include "difftrain/config.h"
#include "difftrain/random_streams.h"

namespace difftrain {

class Schedule {
 public:
  Schedule(std::string type, torch::Tensor sigmas);

  const std::string& type() const { return type_; }
  const torch::Tensor& sigmas() const { return sigmas_; }  // float32 [N], on the CPU
  int64_t size() const { return sigmas_.size(0); }
  float operator[](int64_t i) const;

  // One sigma per example, drawn uniformly from the N values: float32 [batch], on the
  // draws' device.
  torch::Tensor sample_batch(int64_t batch, RandomStream& draws) const;

  // `steps + 1` decreasing sigmas with "trailing" spacing (Lin et al. 2023, Table 2):
  // indices round(N * (1 - i/steps)) - 1 for i = 0..steps-1, then index 0.
  torch::Tensor sample_sigmas(int64_t steps) const;

 private:
  std::string type_;
  torch::Tensor sigmas_;
  mutable torch::Tensor on_device_;  // sigmas_ where sample_batch last drew
};

// sigma_t = sqrt(1 / prod_{s<=t}(1 - beta_s) - 1), in float32 as the reference computes it.
torch::Tensor sigmas_from_betas(const torch::Tensor& betas);

Schedule log_linear_schedule(int64_t N, double sigma_min = 0.02, double sigma_max = 10);
Schedule ddpm_schedule(int64_t N = 1000, double beta_start = 1e-4, double beta_end = 0.02);
Schedule ldm_schedule(int64_t N = 1000, double beta_start = 0.00085, double beta_end = 0.012);
Schedule sigmoid_schedule(int64_t N = 1000, double beta_start = 1e-4, double beta_end = 0.02);
Schedule cosine_schedule(int64_t N = 1000, double max_beta = 0.999);

// The schedule a resolved config names.
Schedule make_schedule(const ScheduleConfig& config);

// Refuses a schedule that float32 cannot hold: every sigma must be finite and > 0, and
// each above the one before. The error names the config key responsible (e.g.
// schedule.sigma_max when a log-linear schedule overflows) and the first bad sigma.
void validate_sigmas(const ScheduleConfig& config, const torch::Tensor& sigmas);
// validate_sigmas on the schedule the resolved config names.
void validate_schedule(const ScheduleConfig& config);

}  // namespace difftrain
