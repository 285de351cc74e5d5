#include "difftrain/sample.h"

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

torch::Tensor run_sample(const SampleOptions& o) {
  const Checkpoint c = load_checkpoint(o.checkpoint);
  const Config config = parse_config(c.config_yaml, o.checkpoint + " (config)");
  auto model = make_model(config.model, c.sample_shape, o.checkpoint + " (sample_shape)");
  load_state_dict(*model, o.use_ema ? c.ema : c.model, o.checkpoint + (o.use_ema ? " (ema)" : " (model)"));
  model->eval();

  const Schedule schedule = make_schedule(config.schedule);
  const int64_t n = o.n.value_or(config.sample.n);
  const int64_t steps = o.steps.value_or(config.sample.steps);
  const SamplerParams params{o.gam.value_or(config.sample.gam), o.mu.value_or(config.sample.mu)};
  if (n < 1) fail("sample: --n must be >= 1, got {}", n);
  if (!(params.mu >= 0 && params.mu < 1)) fail("sample: --mu must be in [0, 1), got {}", params.mu);

  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), c.sample_shape.begin(), c.sample_shape.end());
  auto gen = stream_generator(static_cast<uint64_t>(o.seed), 0, Stream::sample, 0);
  const auto parameterization = parse_parameterization(config.model.parameterization);
  EpsFn eps_hat = [&](const torch::Tensor& x, const torch::Tensor& sigma) {
    return predict_eps(*model, parameterization, x, sigma);
  };
  const auto samples = sample(eps_hat, schedule.sample_sigmas(steps), params, shape, gen);

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
