#pragma once
// The toy data set of the reference library: points on a 2-d spiral.
#include <torch/torch.h>

namespace difftrain {

// smalldiffusion's Swissroll(tmin, tmax, N): t = tmin + linspace(0, 1, N) * tmax and
// points (t cos t, t sin t) / tmax. The toy recipe uses tmin = pi/2, tmax = 5 pi, N = 100.
torch::Tensor swissroll_points(int64_t n = 100, double tmin = M_PI / 2, double tmax = 5 * M_PI);

}  // namespace difftrain
