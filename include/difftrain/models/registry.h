#pragma once
// Config -> model. The one place that knows every model type.
#include <memory>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/models/denoiser.h"

namespace difftrain {

// `sample_shape` is the shape of one data example (the dataset's shape without its first
// dimension); the model is built for it.
std::shared_ptr<Denoiser> make_model(const ModelConfig& config, const std::vector<int64_t>& sample_shape);

}  // namespace difftrain
