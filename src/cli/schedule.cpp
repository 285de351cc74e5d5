// `difftrain schedule`: a noise schedule (and the sampler's steps) as JSON.
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/command.h"
#include "difftrain/config.h"
#include "difftrain/core/schedule.h"
#include "difftrain/error.h"

namespace difftrain::cli {

namespace {

// JSON has no NaN or Inf: a schedule holding one is refused (validate_sigmas has already
// refused such a config) rather than printed as bare `inf`. Every finite float32 prints as
// its 9-significant-digit decimal, a valid JSON number that reads back to the same float32.
// (nlohmann's own number printer would not keep that form: it prints the double it is given
// in up to 17 digits, and a float in its shortest form.)
std::string json_array(const torch::Tensor& t, const char* name) {
  const auto c = t.to(torch::kFloat32).contiguous();
  std::vector<std::string> values;
  for (int64_t i = 0; i < c.numel(); ++i) {
    const float v = c.data_ptr<float>()[i];
    if (!std::isfinite(v)) fail("schedule: {}[{}] = {} is not finite, which JSON cannot hold", name, i, v);
    values.push_back(fmt::format("{:.9g}", v));
  }
  return fmt::format("[{}]", fmt::join(values, ", "));
}

int cmd_schedule(const std::vector<std::string>& args, std::optional<int64_t> steps) {
  std::string config_path;
  std::vector<std::string> overrides;
  split_config_args(args, config_path, overrides);
  const Config config = load_config(config_path, overrides);
  const Schedule schedule = make_schedule(config.schedule);
  std::string out = fmt::format("{{\"type\": \"{}\", \"sigmas\": {}", name_of(schedule.type()),
                                json_array(schedule.sigmas(), "sigmas"));
  if (steps) out += fmt::format(", \"sample_sigmas\": {}", json_array(schedule.sample_sigmas(*steps), "sample_sigmas"));
  fmt::print("{}}}\n", out);
  return 0;
}

}  // namespace

Command add_schedule(CLI::App& app) {
  auto args = std::make_shared<std::vector<std::string>>();
  auto steps = std::make_shared<std::optional<int64_t>>();
  auto* cmd = app.add_subcommand("schedule", "Print a noise schedule as JSON");
  cmd->add_option("CONFIG_AND_OVERRIDES", *args, "[CONFIG.yaml] [schedule.key=value ...]");
  cmd->add_option("--steps", *steps, "Also print the sampler's steps+1 sigmas")
      ->check(integer_in(std::numeric_limits<int64_t>::min()));
  cmd->footer(
      fmt::format("\nSchedule keys: type ({}), N, sigma_min and sigma_max (loglinear),\n"
                  "beta_start and beta_end (ddpm, ldm, sigmoid; cosine accepts and ignores them), max_beta (cosine). "
                  "Prints {{\"type\", \"sigmas\", \"sample_sigmas\"}}\nwith every float32 value in 9 significant digits.",
                  name_list<ScheduleType>()));
  return {cmd, [args, steps] { return cmd_schedule(*args, *steps); }};
}

}  // namespace difftrain::cli
