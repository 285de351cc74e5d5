#pragma once
// The pictures a run draws while it trains (train.sample_every): a grid of the model's
// samples in RUN/samples/step-NNNNNNN.png.
#include <cstdint>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/core/schedule.h"
#include "difftrain/models/denoiser.h"

namespace difftrain {

// 8 samples per class (conditional models, cfg as configured) or 64, drawn with the sample.*
// settings from the same noise at every grid, so that successive pictures show the model change.
void write_sample_grid(Denoiser& model, const Schedule& schedule, const Config& config,
                       const std::vector<int64_t>& sample_shape, torch::Device device, int64_t step);

}  // namespace difftrain
