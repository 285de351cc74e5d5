#pragma once
// The Fréchet distance between two Gaussians fitted to feature sets: the quality figure
// (FID) when the features come from an image classifier.
#include <torch/torch.h>

namespace difftrain {

// A Gaussian in feature space: mean [d] and covariance [d, d], float64.
struct Gaussian {
  torch::Tensor mean, cov;
};

// |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1^1/2 S2 S1^1/2)), in float64. The matrix
// square roots come from symmetric eigendecompositions, with eigenvalues that rounding
// pushed a little below zero taken as zero (covariances are positive semi-definite).
// Shapes must agree and every value be finite; an error names what is wrong.
double frechet_distance(const torch::Tensor& mu1, const torch::Tensor& cov1, const torch::Tensor& mu2,
                        const torch::Tensor& cov2);
double frechet_distance(const Gaussian& a, const Gaussian& b);

}  // namespace difftrain
