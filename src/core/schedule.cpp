#include "difftrain/core/schedule.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "difftrain/error.h"

namespace difftrain {

Schedule::Schedule(ScheduleType type, torch::Tensor sigmas)
    : type_(type), sigmas_(sigmas.to(torch::kCPU, torch::kFloat32).contiguous()) {
  if (sigmas_.dim() != 1 || sigmas_.size(0) < 1)
    fail("schedule '{}': expected a non-empty 1-d tensor of sigmas", name_of(type_));
}

float Schedule::operator[](int64_t i) const { return sigmas_[i].item<float>(); }

torch::Tensor Schedule::sample_batch(int64_t batch, RandomStream& draws) const {
  const auto indices = draws.integers(size(), {batch});
  // One copy of the schedule on the draws' device, kept: no host-to-device copy per step.
  if (!on_device_.defined() || on_device_.device() != indices.device()) on_device_ = sigmas_.to(indices.device());
  return on_device_.index_select(0, indices);
}

torch::Tensor Schedule::sample_sigmas(int64_t steps) const {
  // Beyond N steps trailing spacing repeats sigmas and, in the reference, wraps index -1
  // around to sigma_max; refuse instead.
  if (steps < 1 || steps > size())
    fail("sample_sigmas: steps must be in [1, N={}], got {}", size(), steps);
  const double N = static_cast<double>(size());
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < steps; ++i) {
    // Same double arithmetic and round-half-to-even as numpy's (N * (1 - i/steps)).round().
    const double position = N * (1.0 - static_cast<double>(i) / static_cast<double>(steps));
    indices.push_back(static_cast<int64_t>(std::nearbyint(position)) - 1);
  }
  indices.push_back(0);
  return sigmas_.index_select(0, torch::tensor(indices, torch::kLong));
}

torch::Tensor sigmas_from_betas(const torch::Tensor& betas) {
  return (1 / torch::cumprod(1.0 - betas, 0) - 1).sqrt();
}

Schedule log_linear_schedule(int64_t N, double sigma_min, double sigma_max) {
  return {ScheduleType::loglinear, torch::logspace(std::log10(sigma_min), std::log10(sigma_max), N, 10.0,
                                       torch::kFloat32)};
}

Schedule ddpm_schedule(int64_t N, double beta_start, double beta_end) {
  return {ScheduleType::ddpm, sigmas_from_betas(torch::linspace(beta_start, beta_end, N, torch::kFloat32))};
}

Schedule ldm_schedule(int64_t N, double beta_start, double beta_end) {
  auto root_betas = torch::linspace(std::sqrt(beta_start), std::sqrt(beta_end), N, torch::kFloat32);
  return {ScheduleType::ldm, sigmas_from_betas(root_betas.pow(2))};
}

Schedule sigmoid_schedule(int64_t N, double beta_start, double beta_end) {
  auto betas = torch::sigmoid(torch::linspace(-6, 6, N, torch::kFloat32)) * (beta_end - beta_start) + beta_start;
  return {ScheduleType::sigmoid, sigmas_from_betas(betas)};
}

Schedule cosine_schedule(int64_t N, double max_beta) {
  // Nichol & Dhariwal's alpha-bar with s = 0.008, evaluated in double as the reference does
  // (numpy), then rounded to float32 before the cumulative product.
  const double pi = std::acos(-1.0);
  auto alpha_bar = [pi](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * pi / 2), 2); };
  std::vector<float> betas;
  for (int64_t i = 0; i < N; ++i) {
    const double t0 = static_cast<double>(i) / N, t1 = static_cast<double>(i + 1) / N;
    betas.push_back(static_cast<float>(std::min(1 - alpha_bar(t1) / alpha_bar(t0), max_beta)));
  }
  return {ScheduleType::cosine, sigmas_from_betas(torch::tensor(betas, torch::kFloat32))};
}

namespace {

enum class SigmaFault { not_finite, not_positive, not_increasing };

// The key to change when float32 cannot hold the schedule a config asks for, and how.
struct Blame {
  const char* key;
  const char* hint;
};

Blame blame(ScheduleType type, SigmaFault fault) {
  if (type == ScheduleType::loglinear) {
    switch (fault) {
      case SigmaFault::not_finite: return {"schedule.sigma_max", "float32 holds at most 3.4e38; lower it"};
      case SigmaFault::not_positive: return {"schedule.sigma_min", "it is below float32's smallest value; raise it"};
      case SigmaFault::not_increasing:
        return {"schedule.N", "float32 has fewer distinct values between sigma_min and sigma_max; lower it"};
    }
  }
  const bool cosine = type == ScheduleType::cosine;
  switch (fault) {
    case SigmaFault::not_finite:
      return {cosine ? "schedule.max_beta" : "schedule.beta_end",
              cosine ? "prod(1 - beta) reaches 0 in float32 (a beta rounds to 1); lower it"
                     : "prod(1 - beta) reaches 0 in float32 (betas near 1, or many of them); lower it or schedule.N"};
    case SigmaFault::not_positive:
      return {cosine ? "schedule.N" : "schedule.beta_start",
              cosine ? "1 - beta rounds to 1 in float32; lower it" : "1 - beta rounds to 1 in float32; raise it"};
    case SigmaFault::not_increasing:
      return {cosine ? "schedule.N" : "schedule.beta_start",
              cosine ? "float32 rounds neighbouring sigmas to the same value; lower it"
                     : "float32 rounds neighbouring sigmas to the same value; raise it or lower schedule.N"};
  }
  return {"schedule.type", ""};
}

}  // namespace

void validate_sigmas(const ScheduleConfig& config, const torch::Tensor& sigmas) {
  const auto sig = sigmas.to(torch::kCPU, torch::kFloat32).contiguous();
  const float* v = sig.data_ptr<float>();
  for (int64_t i = 0; i < sig.numel(); ++i) {
    std::optional<SigmaFault> fault;
    if (!std::isfinite(v[i])) fault = SigmaFault::not_finite;
    else if (!(v[i] > 0)) fault = SigmaFault::not_positive;
    else if (i > 0 && !(v[i] > v[i - 1])) fault = SigmaFault::not_increasing;
    if (!fault) continue;
    const auto [key, hint] = blame(config.type, *fault);
    const std::string what = *fault == SigmaFault::not_finite     ? "is not finite"
                             : *fault == SigmaFault::not_positive ? "is not > 0"
                                                                  : fmt::format("is not above sigma[{}] = {:.9g}", i - 1, v[i - 1]);
    fail("config: key '{}': the {} schedule's float32 sigma[{}] = {:.9g} {}: {}", key, name_of(config.type), i, v[i], what,
         hint);
  }
}

Schedule make_schedule(const ScheduleConfig& s) {
  if (!s.N) fail("make_schedule: the schedule config is not resolved");
  switch (s.type) {
    case ScheduleType::loglinear: return log_linear_schedule(*s.N, *s.sigma_min, *s.sigma_max);
    case ScheduleType::ddpm: return ddpm_schedule(*s.N, *s.beta_start, *s.beta_end);
    case ScheduleType::ldm: return ldm_schedule(*s.N, *s.beta_start, *s.beta_end);
    case ScheduleType::sigmoid: return sigmoid_schedule(*s.N, *s.beta_start, *s.beta_end);
    case ScheduleType::cosine: return cosine_schedule(*s.N, *s.max_beta);
  }
  fail("make_schedule: schedule type {} is not in its table", static_cast<int>(s.type));
}

namespace {

void require(bool ok, const char* key, const std::string& what) {
  if (!ok) fail("config: key '{}': {}", key, what);
}

template <typename T>
void not_for(const std::optional<T>& value, const char* key, ScheduleType type) {
  if (value) fail("config: key '{}' does not apply to schedule type '{}'", key, name_of(type));
}

}  // namespace

void resolve_schedule_config(ScheduleConfig& s) {
  const ScheduleType t = s.type;
  if (t == ScheduleType::loglinear) {
    not_for(s.beta_start, "schedule.beta_start", t);
    not_for(s.beta_end, "schedule.beta_end", t);
    not_for(s.max_beta, "schedule.max_beta", t);
    s.N = s.N.value_or(200);
    s.sigma_min = s.sigma_min.value_or(0.005);
    s.sigma_max = s.sigma_max.value_or(10.0);
    require(*s.sigma_min > 0, "schedule.sigma_min", fmt::format("must be > 0, got {}", *s.sigma_min));
    require(*s.sigma_min < *s.sigma_max, "schedule.sigma_min",
            fmt::format("must be < schedule.sigma_max ({}), got {}", *s.sigma_max, *s.sigma_min));
  } else {
    not_for(s.sigma_min, "schedule.sigma_min", t);
    not_for(s.sigma_max, "schedule.sigma_max", t);
    if (t != ScheduleType::cosine) not_for(s.max_beta, "schedule.max_beta", t);
    s.N = s.N.value_or(1000);
    const bool ldm = t == ScheduleType::ldm;
    s.beta_start = s.beta_start.value_or(ldm ? 0.00085 : 0.0001);
    s.beta_end = s.beta_end.value_or(ldm ? 0.012 : 0.02);
    if (t == ScheduleType::cosine) {
      // Cosine derives its betas from alpha-bar; beta_start/beta_end are accepted (as in
      // the reference) but unused.
      s.max_beta = s.max_beta.value_or(0.999);
      require(*s.max_beta > 0 && *s.max_beta < 1, "schedule.max_beta",
              fmt::format("must be in (0, 1), got {}", *s.max_beta));
    }
    require(*s.beta_start > 0 && *s.beta_start < 1, "schedule.beta_start",
            fmt::format("must be in (0, 1), got {}", *s.beta_start));
    require(*s.beta_end > 0 && *s.beta_end < 1, "schedule.beta_end",
            fmt::format("must be in (0, 1), got {}", *s.beta_end));
    require(*s.beta_start <= *s.beta_end, "schedule.beta_start",
            fmt::format("must be <= schedule.beta_end ({}), got {}", *s.beta_end, *s.beta_start));
  }
  require(*s.N >= 1, "schedule.N", fmt::format("must be >= 1, got {}", *s.N));
  validate_sigmas(s, make_schedule(s).sigmas());
}

}  // namespace difftrain
