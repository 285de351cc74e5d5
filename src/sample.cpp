#include "difftrain/sample.h"

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "difftrain/atomic_file.h"
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

namespace {

namespace fs = std::filesystem;

// A file as the system sees it: its resolved path and, when it exists, its device and
// inode, so that a symlink or a hard link to a file counts as that file.
struct FileIdentity {
  fs::path resolved;
  std::optional<std::pair<dev_t, ino_t>> inode;
};

FileIdentity identify(const std::string& path) {
  std::error_code ec;
  FileIdentity id{fs::weakly_canonical(fs::absolute(path), ec), std::nullopt};
  if (ec) id.resolved = fs::absolute(path).lexically_normal();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) id.inode = std::make_pair(st.st_dev, st.st_ino);
  return id;
}

bool same_file(const FileIdentity& a, const FileIdentity& b) {
  return a.resolved == b.resolved || (a.inode && b.inode && *a.inode == *b.inode);
}

// Samples written over a file that sampling or training reads would destroy it: --out and
// --png may not be the checkpoint, a file of its run's checkpoints/ directory, a shard of
// its training data, or each other. Checked before sampling, which can take long.
void refuse_outputs_over_inputs(const SampleOptions& o, const Config& config) {
  std::vector<std::pair<std::string, std::string>> inputs{{o.checkpoint, "the checkpoint"}};
  std::vector<fs::path> checkpoint_dirs{fs::path(config.run_dir) / "checkpoints"};
  const fs::path own_dir = identify(o.checkpoint).resolved.parent_path();
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
  if (outputs.size() == 2 && same_file(identify(o.out), identify(o.png)))
    fail("sample: --out {} and --png {} name the same file; give each its own", o.out, o.png);
  for (const auto& [option, path] : outputs) {
    const auto output = identify(path);
    for (const auto& [input, what] : inputs)
      if (same_file(output, identify(input)))
        fail("sample: {} {} would overwrite {} ({}); write to another file", option, path, input, what);
  }
}

// Samples over the training data (2-d points), or a grid of the first images.
std::vector<char> picture(const torch::Tensor& samples, const Config& config) {
  if (samples.dim() != 2) return image_grid_png(samples.narrow(0, 0, std::min<int64_t>(samples.size(0), 256)));
  torch::Tensor data;
  try {  // the training data underneath, when it is still where the config says
    auto dataset = ShardedDataset::open(config.data.path, config.data.dataset);
    data = dataset.read_stored(0, std::min<int64_t>(dataset.size(), 100000)).to(torch::kFloat32);
  } catch (const Error&) {
  }
  return scatter_png(samples, data);
}

}  // namespace

torch::Tensor run_sample(const SampleOptions& o) {
  const Checkpoint c = load_checkpoint(o.checkpoint);
  const Config config = parse_config(c.config_yaml, o.checkpoint + " (config)");
  refuse_outputs_over_inputs(o, config);
  auto model = make_model(config.model, c.sample_shape);
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
  // The samples and their picture land together or not at all; until both are whole,
  // earlier files of those names stay as they were.
  StagedFiles files;
  if (!o.png.empty()) files.stage(o.png, picture(samples, config));
  h5::stage_datasets(files, o.out, {{"samples", samples}});
  files.publish();
  return samples;
}

}  // namespace difftrain
