#include "difftrain/sample/sample.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/core/schedule.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "difftrain/memory.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/io/input_file.h"
#include "difftrain/models/registry.h"
#include "difftrain/plot/samples_png.h"

namespace difftrain {

double sampling_memory_bytes(int64_t n, const std::vector<int64_t>& sample_shape, const ModelConfig& model) {
  double values = 1;
  for (int64_t d : sample_shape) values *= static_cast<double>(d);
  // The loop holds x, the step's noise, eps, eps_prev and eps_av, and the update makes up
  // to three temporaries of the same size before x is replaced.
  const double loop_buffers = 8 * values;
  return static_cast<double>(n) * (loop_buffers + inference_activations(model, sample_shape)) * sizeof(float);
}

namespace {

namespace fs = std::filesystem;

// Samples written over a file that sampling or training reads would destroy it: --out and
// --png may not be the checkpoint, a file of its run's checkpoints/ directory, a shard of
// its training data, or each other. Checked before sampling, which can take long.
void refuse_outputs_over_inputs(const SampleOptions& o, const Config& config) {
  std::vector<std::pair<std::string, std::string>> inputs{{o.checkpoint, "the checkpoint"}};
  std::vector<fs::path> checkpoint_dirs{fs::path(config.run_dir) / "checkpoints"};
  const fs::path own_dir = resolved_path(o.checkpoint).parent_path();
  if (own_dir.filename() == "checkpoints") checkpoint_dirs.push_back(own_dir);
  for (const auto& dir : checkpoint_dirs) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      inputs.emplace_back(it->path().string(), "a checkpoint of the run");
  }
  try {
    for (const auto& shard : expand_shard_spec(config.data.path)) inputs.emplace_back(shard, "training data");
  } catch (const Error&) {  // the data has moved: nothing of it to overwrite
  }

  std::vector<std::pair<std::string, std::string>> outputs{{"--out", o.out}};
  if (!o.png.empty()) outputs.emplace_back("--png", o.png);
  if (outputs.size() == 2 && same_file(o.out, o.png))
    fail("sample: --out {} and --png {} name the same file; give each its own", o.out, o.png);
  for (const auto& [option, path] : outputs) {
    for (const auto& [input, what] : inputs)
      if (same_file(path, input))
        fail("sample: {} {} would overwrite {} ({}); write to another file", option, path, input, what);
  }
}

}  // namespace

std::vector<char> samples_picture(const torch::Tensor& samples, const torch::Tensor& labels, const Config& config) {
  if (samples.dim() != 2 && labels.defined()) {
    std::vector<torch::Tensor> rows;
    int64_t columns = 1;
    for (int64_t k = 0; k <= labels.max().item<int64_t>(); ++k) {
      const auto of_k = torch::nonzero(labels == k).reshape({-1});
      if (of_k.numel() == 0) continue;
      rows.push_back(samples.index_select(0, of_k.narrow(0, 0, std::min<int64_t>(of_k.numel(), 16))));
      columns = std::max(columns, rows.back().size(0));
    }
    for (auto& r : rows)  // a short row is padded with black (-1) tiles
      if (r.size(0) < columns) r = torch::cat({r, torch::full({columns - r.size(0)}, -1.0).view({-1, 1, 1, 1}).expand({columns - r.size(0), r.size(1), r.size(2), r.size(3)})});
    return image_grid_png(torch::cat(rows), columns);
  }
  if (samples.dim() != 2) return image_grid_png(samples.narrow(0, 0, std::min<int64_t>(samples.size(0), 256)));
  torch::Tensor data;
  try {  // the training data underneath, when it is still where the config says
    auto dataset = ShardedDataset::open(config.data.path, config.data.dataset);
    data = dataset.read_stored(0, std::min<int64_t>(dataset.size(), 100000)).to(torch::kFloat32);
  } catch (const Error&) {
  }
  return scatter_png(samples, data);
}

namespace {

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

SamplingModel load_sampling_model(const std::string& checkpoint, bool use_ema, bool untrained, torch::Device device) {
  const Checkpoint c = load_checkpoint(checkpoint);
  Config config = parse_config(c.config_yaml, checkpoint + " (config)");
  Schedule schedule = make_schedule(config.schedule);
  // A fresh run draws its initial weights from this stream (see Trainer).
  random_stream(config.seed, 0, Stream::init, 0).seed_default_generators();
  auto model = make_model(config.model, c.sample_shape, checkpoint + " (sample_shape)");
  if (!untrained)
    load_state_dict(*model, use_ema ? c.ema : c.model, checkpoint + (use_ema ? " (ema)" : " (model)"));
  model->eval();
  model->to(device);
  return {std::move(config), std::move(schedule), c.sample_shape, std::move(model)};
}

torch::Tensor generate(SamplingModel& m, int64_t n, const torch::Tensor& labels, const GenerateParams& params,
                       RandomStream& noise, const std::string& what) {
  return generate(*m.model, m.schedule, m.config.model.parameterization, m.sample_shape, n,
                  labels, params, noise, what);
}

torch::Tensor generate(Denoiser& model, const Schedule& schedule, Parameterization parameterization,
                       const std::vector<int64_t>& sample_shape, int64_t n, const torch::Tensor& labels,
                       const GenerateParams& params, RandomStream& noise, const std::string& what) {
  if (!(params.cfg_scale >= 0 && params.cfg_scale <= kMaxCfgScale))
    fail("{}: the guidance scale must be in [0, {}], got {}", what, kMaxCfgScale, params.cfg_scale);
  const int64_t num_classes = model.num_classes();
  if (num_classes > 0 && (!labels.defined() || labels.dim() != 1 || labels.size(0) != n))
    fail("{}: a conditional model needs one label per sample ({}), got {}", what, n,
         labels.defined() ? fmt::format("shape {}", labels.sizes()) : "none");
  if (num_classes == 0 && labels.defined()) fail("{}: the model is unconditional; it takes no labels", what);
  if (params.steps < 1 || params.steps > schedule.size())
    fail("{}: sampling steps must be in [1, schedule.N = {}], got {}", what, schedule.size(), params.steps);
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  const bool was_training = model.is_training();
  model.eval();  // no dropout while sampling
  // Sampling runs where the model's weights are, and draws its noise there.
  const auto params_of_model = model.parameters();
  const torch::Device device = params_of_model.empty() ? torch::Device(torch::kCPU) : params_of_model.front().device();
  if (noise.device() != device)
    fail("{}: the noise stream is on {}, the model on {}", what, noise.device().str(), device.str());
  const auto labels_here = labels.defined() ? labels.to(device) : labels;
  EpsFn eps_hat = [&](const torch::Tensor& x, const torch::Tensor& sigma) {
    return guided_eps(model, parameterization, x, sigma, labels_here, params.cfg_scale);
  };
  torch::Tensor samples;
  try {
    samples = sample(eps_hat, schedule.sample_sigmas(params.steps), params.sampler, shape, noise);
  } catch (...) {
    model.train(was_training);
    throw;
  }
  model.train(was_training);
  require_finite_samples(samples, what);
  return samples;
}

torch::Tensor run_sample(const SampleOptions& o) {
  // Config values were validated when the config was parsed; only options can be out of range.
  if (o.n && *o.n < 1) fail("sample: --n must be >= 1, got {}", *o.n);
  if (o.gam && !valid_gam(*o.gam)) fail("sample: --gam must be in [{}, {}], got {}", kMinGam, kMaxGam, *o.gam);
  if (o.mu && !(*o.mu >= 0 && *o.mu < 1)) fail("sample: --mu must be in [0, 1), got {}", *o.mu);
  if (o.cfg_scale && !(*o.cfg_scale >= 0 && *o.cfg_scale <= kMaxCfgScale))
    fail("sample: --cfg-scale must be in [0, {}], got {}", kMaxCfgScale, *o.cfg_scale);

  const auto device = choose_device(o.device, 0, backend_facts(), "sample: --device");
  SamplingModel m = load_sampling_model(o.checkpoint, o.use_ema, false, device);
  const Config& config = m.config;
  const Schedule& schedule = m.schedule;
  refuse_outputs_over_inputs(o, config);
  const int64_t n = o.n.value_or(config.sample.n);
  const int64_t steps = o.steps.value_or(config.sample.steps);
  const SamplerParams params{o.gam.value_or(config.sample.gam), o.mu.value_or(config.sample.mu)};
  if (steps < 1 || steps > schedule.size())
    fail("sample: {} must be in [1, schedule.N = {}], got {}",
         o.steps ? "--steps" : "sample.steps (from the checkpoint's config; pass --steps)", schedule.size(), steps);
  require_memory_for(o.n ? "--n" : "sample.n", n, m.sample_shape, config.model);
  const auto& example = m.sample_shape;
  const bool points = example.size() == 1 && example[0] == 2, images = example.size() == 3;
  if (!o.png.empty() && !points && !images)
    fail("sample: --png draws 2-d points or images; examples of this checkpoint have shape {}",
         c10::IntArrayRef(example));

  const int64_t num_classes = m.model->num_classes();
  const auto choice = parse_class_choice(o.label.value_or(config.sample.label), num_classes,
                                         o.label ? "sample: --class" : "sample.class (from the checkpoint's config)");
  if (o.cfg_scale) require_guidance_applies(*o.cfg_scale, num_classes, "sample: --cfg-scale");
  const torch::Tensor labels = num_classes > 0 ? class_labels(choice, num_classes, n) : torch::Tensor();
  GenerateParams gp{steps, params, o.cfg_scale.value_or(config.sample.cfg_scale)};
  auto noise = random_stream(static_cast<uint64_t>(o.seed), 0, Stream::sample, 0, device);
  const auto samples =
      generate(m, n, labels, gp, noise,
               fmt::format("sample: nothing written to {} (steps {}, gam {}, mu {}, cfg-scale {})", o.out, steps,
                           params.gam, params.mu, gp.cfg_scale))
          .cpu();

  // The samples and their picture land together or not at all; until both are whole,
  // earlier files of those names stay as they were.
  StagedFiles files;
  if (!o.png.empty()) files.stage(o.png, samples_picture(samples, labels, m.config));
  h5::stage_datasets(files, o.out, {{"samples", samples}});
  files.publish();
  return samples;
}

}  // namespace difftrain
