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

// "model.type 'dit', model.depth 6, model.patch 2": the keys that shape the model, for errors.
std::string describe_model(const ModelConfig& config);

// How many parameters the model has, counted from the config without building it. A shape
// the model cannot take is an error naming `shape_source`, as make_model's.
long double parameter_count(const ModelConfig& config, const std::vector<int64_t>& sample_shape,
                            const std::string& shape_source = "the sample shape");

// About the most values per example a forward pass holds at once without autograd (the
// sampler's peak), for the memory checks before sampling and training.
double inference_activations(const ModelConfig& config, const std::vector<int64_t>& sample_shape,
                             const std::string& shape_source = "the sample shape");

// The model types, in the order the config's error messages list them.
std::vector<std::string> model_types();

}  // namespace difftrain
