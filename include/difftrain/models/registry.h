#pragma once
// Config -> model. The one place that knows every model type: its keys, their defaults
// and ranges, and how to build it.
#include <memory>
#include <string>
#include <vector>

#include "difftrain/models/denoiser.h"
#include "difftrain/models/model_config.h"

namespace difftrain {

// `sample_shape` is the shape of one data example (the dataset's shape without its first
// dimension); the model is built for it. `shape_source` says where that shape came from
// (a data file and dataset, a checkpoint), for the error when the model cannot take it.
// A model too big for this machine's memory, or one LibTorch cannot build, is an error
// naming the model.* keys.
std::shared_ptr<Denoiser> make_model(const ModelConfig& config, const std::vector<int64_t>& sample_shape,
                                     const std::string& shape_source = "the data");

// About the most values per example a forward pass holds at once without autograd (the
// sampler's peak), for the memory check before sampling.
double inference_activations(const ModelConfig& config, const std::vector<int64_t>& sample_shape);

// The model types, in the order the config's error messages list them.
std::vector<std::string> model_types();

}  // namespace difftrain
