#pragma once
// `difftrain sample`: a checkpoint's model -> samples.h5 (and a picture).
#include <optional>
#include <string>

#include <torch/torch.h>

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

// Returns the samples [n, ...] after writing them.
torch::Tensor run_sample(const SampleOptions& options);

}  // namespace difftrain
