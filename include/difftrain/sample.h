#pragma once
// `difftrain sample`: a checkpoint's model -> samples.h5 (and a picture).
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/config.h"

namespace difftrain {

struct SampleOptions {
  std::string checkpoint;
  std::string out;                 // HDF5 file: dataset "samples", float32 [n, ...]
  std::optional<int64_t> n, steps;  // default: the checkpoint config's sample section
  std::optional<double> gam, mu;
  int64_t seed = 0;
  std::string png;       // optional picture: samples over the data (2-d) or an image grid
  bool use_ema = true;   // sample from the EMA weights (false: the raw model weights)
};

// Returns the samples [n, ...] after writing them. Refuses before allocating when n
// examples would need more memory than is available, and writes nothing when any sample
// is NaN or Inf.
torch::Tensor run_sample(const SampleOptions& options);

// About the most memory the sampler holds at once for n examples of `sample_shape` with
// this model: the loop's buffers plus the model's activations, in bytes.
double sampling_memory_bytes(int64_t n, const std::vector<int64_t>& sample_shape, const ModelConfig& model);

}  // namespace difftrain
