#pragma once
// A diffusion noise schedule: N increasing float32 sigmas. Training draws sigma uniformly
// from them; sampling walks a decreasing subset of them.
#include <torch/torch.h>

#include "difftrain/core/random_streams.h"
#include "difftrain/core/schedule_config.h"

namespace difftrain {

class Schedule {
 public:
  Schedule(ScheduleType type, torch::Tensor sigmas);

  ScheduleType type() const { return type_; }
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
  ScheduleType type_;
  torch::Tensor sigmas_;
  mutable torch::Tensor on_device_;  // sigmas_ where sample_batch last drew
};

// sigma_t = sqrt(1 / prod_{s<=t}(1 - beta_s) - 1), in float32 as the reference computes it.
torch::Tensor sigmas_from_betas(const torch::Tensor& betas);

// The five schedules, every parameter given: the defaults are the config's
// (resolve_schedule_config), in one place.
Schedule log_linear_schedule(int64_t N, double sigma_min, double sigma_max);
Schedule ddpm_schedule(int64_t N, double beta_start, double beta_end);
Schedule ldm_schedule(int64_t N, double beta_start, double beta_end);
Schedule sigmoid_schedule(int64_t N, double beta_start, double beta_end);
Schedule cosine_schedule(int64_t N, double max_beta);

// The schedule a resolved config names.
Schedule make_schedule(const ScheduleConfig& config);

// Refuses a schedule that float32 cannot hold: every sigma must be finite and > 0, and
// each above the one before. The error names the config key responsible (e.g.
// schedule.sigma_max when a log-linear schedule overflows) and the first bad sigma.
void validate_sigmas(const ScheduleConfig& config, const torch::Tensor& sigmas);

}  // namespace difftrain
