#include "difftrain/train/sample_grid.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/sample/sample.h"

namespace difftrain {

void write_sample_grid(Denoiser& model, const Schedule& schedule, const Config& config,
                       const std::vector<int64_t>& sample_shape, torch::Device device, int64_t step) {
  namespace fs = std::filesystem;
  const int64_t classes = model.num_classes();
  const int64_t n = classes > 0 ? classes * 8 : 64;
  const auto labels = classes > 0 ? class_labels(std::nullopt, classes, n) : torch::Tensor();
  auto noise = random_stream(config.seed, 0, Stream::sample, 0, device);
  const GenerateParams params{std::min(config.sample.steps, schedule.size()),
                              {config.sample.gam, config.sample.mu},
                              config.sample.cfg_scale};
  const auto path = fs::path(config.run_dir) / "samples" / fmt::format("step-{:07d}.png", step);
  const auto samples = generate(model, schedule, config.model.parameterization, sample_shape,
                                n, labels, params, noise, fmt::format("step {}: sample grid {}", step, path.string()));
  fs::create_directories(path.parent_path());
  write_file_atomically(path.string(), samples_picture(samples.cpu(), labels, config));
}

}  // namespace difftrain
