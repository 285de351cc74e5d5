#pragma once
// `difftrain sample`: a checkpoint's model -> samples.h5 (and a picture).
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/schedule.h"
#include "difftrain/models/denoiser.h"

namespace difftrain {

// A checkpoint's model, ready to sample: its config, schedule and weights.
struct SamplingModel {
  Config config;
  Schedule schedule;
  std::vector<int64_t> sample_shape;
  std::shared_ptr<Denoiser> model;  // in eval mode
};
// `use_ema`: the EMA weights (else the raw model's). `untrained`: the weights a fresh run of
// this config starts from instead of the checkpoint's (the "ceiling" of a quality figure).
// The model on `device` (LibTorch builds it on the CPU, with the init stream's weights).
SamplingModel load_sampling_model(const std::string& checkpoint, bool use_ema = true, bool untrained = false,
                                  torch::Device device = torch::kCPU);

struct GenerateParams {
  int64_t steps = 20;
  SamplerParams sampler;
  double cfg_scale = 0;  // guidance scale (conditional models)
};
// n samples [n, *sample_shape] from `noise`, which must be on the model's device;
// `labels` [n] int64 for a conditional model (undefined for an unconditional one).
// Non-finite samples are an error naming `what`.
torch::Tensor generate(Denoiser& model, const Schedule& schedule, Parameterization parameterization,
                       const std::vector<int64_t>& sample_shape, int64_t n, const torch::Tensor& labels,
                       const GenerateParams& params, RandomStream& noise, const std::string& what = "sample");
torch::Tensor generate(SamplingModel& m, int64_t n, const torch::Tensor& labels, const GenerateParams& params,
                       RandomStream& noise, const std::string& what = "sample");

// A picture of samples: 2-d points over the config's training data (when it is still
// there), or an image grid (the first 256 images, or for labelled samples up to 16 of
// each class, one class per row). PNG bytes.
std::vector<char> samples_picture(const torch::Tensor& samples, const torch::Tensor& labels, const Config& config);

struct SampleOptions {
  std::string checkpoint;
  std::string out;                 // HDF5 file: dataset "samples", float32 [n, ...]
  std::optional<int64_t> n, steps;  // default: the checkpoint config's sample section
  std::optional<double> gam, mu, cfg_scale;  // default: sample.cfg_scale
  std::optional<std::string> label;         // --class K|all; default: sample.class
  int64_t seed = 0;
  std::string png;       // optional picture: samples over the data (2-d) or an image grid
  bool use_ema = true;   // sample from the EMA weights (false: the raw model weights)
  std::string device = "auto";  // --device: auto (a GPU when there is one), cpu, cuda, cuda:K
};

// Returns the samples [n, ...] after writing them. Refuses before allocating when n
// examples would need more memory than is available, and writes nothing when any sample
// is NaN or Inf.
torch::Tensor run_sample(const SampleOptions& options);

// About the most memory the sampler holds at once for n examples of `sample_shape` with
// this model: the loop's buffers plus the model's activations, in bytes.
double sampling_memory_bytes(int64_t n, const std::vector<int64_t>& sample_shape, const ModelConfig& model);

}  // namespace difftrain
