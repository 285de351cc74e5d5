#include "difftrain/sample.h"

#include <algorithm>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "difftrain/config.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/diffusion.h"
#include "difftrain/error.h"
#include "difftrain/models/registry.h"
#include "difftrain/plot.h"
#include "difftrain/schedule.h"
#include "difftrain/train/checkpoint.h"
#include "difftrain/train/random_streams.h"

namespace difftrain {

double sampling_memory_bytes(int64_t n, const std::vector<int64_t>& sample_shape, const ModelConfig& model) {
  double values = 1;
  for (int64_t d : sample_shape) values *= static_cast<double>(d);
  // The loop holds x, the step's noise, eps, eps_prev and eps_av, and the update makes up
  // to three temporaries of the same size before x is replaced.
  const double loop_buffers = 8 * values;
  // The MLP's forward keeps a layer's input and output alive together (no autograd graph
  // while sampling), so its peak is about twice its widest layer, the input [x, sigma
  // embedding] included.
  double widest = values + 2;
  for (int64_t w : model.hidden_dims) widest = std::max(widest, static_cast<double>(w));
  return static_cast<double>(n) * (loop_buffers + 2 * widest) * sizeof(float);
}

namespace {

// MemAvailable from /proc/meminfo; nothing where there is no such file.
std::optional<double> available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string name, unit;
  double kib = 0;
  while (in >> name >> kib >> unit)
    if (name == "MemAvailable:") return kib * 1024;
  return std::nullopt;
}

std::string gib(double bytes) { return fmt::format("{:.1f} GiB", bytes / (1024.0 * 1024 * 1024)); }

// Sampling allocates everything at once; without this check too large an --n ends in the
// kernel's OOM killer with no message at all.
void require_memory_for(const char* option, int64_t n, const std::vector<int64_t>& sample_shape,
                        const ModelConfig& model) {
  const double needed = sampling_memory_bytes(n, sample_shape, model);
  const auto available = available_memory_bytes();
  if (available && needed > *available)
    fail("sample: {} {} needs about {} of memory, but {} is available (MemAvailable); use a smaller --n "
         "(at most about {})",
         option, n, gib(needed), gib(*available), static_cast<int64_t>(*available / needed * static_cast<double>(n)));
}

}  // namespace

torch::Tensor run_sample(const SampleOptions& o) {
  // Config values were validated when the config was parsed; only options can be out of range.
  if (o.n && *o.n < 1) fail("sample: --n must be >= 1, got {}", *o.n);
  if (o.gam && !valid_gam(*o.gam)) fail("sample: --gam must be in [{}, {}], got {}", kMinGam, kMaxGam, *o.gam);
  if (o.mu && !(*o.mu >= 0 && *o.mu < 1)) fail("sample: --mu must be in [0, 1), got {}", *o.mu);

  const Checkpoint c = load_checkpoint(o.checkpoint);
  const Config config = parse_config(c.config_yaml, o.checkpoint + " (config)");
  const Schedule schedule = make_schedule(config.schedule);
  const int64_t n = o.n.value_or(config.sample.n);
  const int64_t steps = o.steps.value_or(config.sample.steps);
  const SamplerParams params{o.gam.value_or(config.sample.gam), o.mu.value_or(config.sample.mu)};
  if (steps < 1 || steps > schedule.size())
    fail("sample: {} must be in [1, schedule.N = {}], got {}",
         o.steps ? "--steps" : "sample.steps (from the checkpoint's config; pass --steps)", schedule.size(), steps);
  require_memory_for(o.n ? "--n" : "sample.n", n, c.sample_shape, config.model);

  auto model = make_model(config.model, c.sample_shape);
  load_state_dict(*model, o.use_ema ? c.ema : c.model, o.checkpoint + (o.use_ema ? " (ema)" : " (model)"));
  model->eval();

  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), c.sample_shape.begin(), c.sample_shape.end());
  auto gen = stream_generator(static_cast<uint64_t>(o.seed), 0, Stream::sample, 0);
  const auto parameterization = parse_parameterization(config.model.parameterization);
  EpsFn eps_hat = [&](const torch::Tensor& x, const torch::Tensor& sigma) {
    return predict_eps(*model, parameterization, x, sigma);
  };
  const auto samples = sample(eps_hat, schedule.sample_sigmas(steps), params, shape, gen);
  require_finite_samples(samples, fmt::format("sample: nothing written to {} (steps {}, gam {}, mu {})", o.out,
                                              steps, params.gam, params.mu));

  const bool points = samples.dim() == 2 && samples.size(1) == 2, images = samples.dim() == 4;
  if (!o.png.empty() && !points && !images)  // before anything is written
    fail("sample: --png draws 2-d points or images; these samples have shape {}", samples.sizes());
  h5::write_datasets(o.out, {{"samples", samples}});
  if (!o.png.empty() && points) {
    torch::Tensor data;
    try {  // the training data underneath, when it is still where the config says
      auto dataset = ShardedDataset::open(config.data.path, config.data.dataset);
      data = dataset.read_stored(0, std::min<int64_t>(dataset.size(), 100000)).to(torch::kFloat32);
    } catch (const Error&) {
    }
    write_scatter_png(o.png, samples, data);
  } else if (!o.png.empty()) {
    write_image_grid_png(o.png, samples.narrow(0, 0, std::min<int64_t>(n, 256)));
  }
  return samples;
}

}  // namespace difftrain
