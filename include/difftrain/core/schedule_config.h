#pragma once
// The `schedule` section of the config: which schedule, and its parameters. Which keys apply,
// and their defaults, depend on `type`; resolve_schedule_config (core/schedule.cpp) holds the
// one set of defaults and checks every value.
#include <array>
#include <cstdint>
#include <optional>

#include "difftrain/names.h"

namespace difftrain {

enum class ScheduleType { loglinear, ddpm, ldm, sigmoid, cosine };
constexpr std::array<Named<ScheduleType>, 5> names_of(ScheduleType) {
  return {{{ScheduleType::loglinear, "loglinear"},
           {ScheduleType::ddpm, "ddpm"},
           {ScheduleType::ldm, "ldm"},
           {ScheduleType::sigmoid, "sigmoid"},
           {ScheduleType::cosine, "cosine"}}};
}

struct ScheduleConfig {
  ScheduleType type = ScheduleType::loglinear;
  std::optional<int64_t> N;
  std::optional<double> sigma_min, sigma_max;            // loglinear
  std::optional<double> beta_start, beta_end, max_beta;  // ddpm, ldm, sigmoid, cosine (max_beta)
};

// Fills the type's defaults (log-linear: N 200, sigma 0.005 to 10, the toy recipe's; the
// beta schedules: N 1000 and the reference's betas), refuses a key that does not apply to
// the type, and checks that float32 can hold the schedule. An Error names the key at fault.
void resolve_schedule_config(ScheduleConfig& s);

}  // namespace difftrain
