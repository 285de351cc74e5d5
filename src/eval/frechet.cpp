#include "difftrain/eval/frechet.h"

#include <algorithm>

#include "difftrain/error.h"

namespace difftrain {

namespace {

void check_gaussian(const torch::Tensor& mu, const torch::Tensor& cov, const char* name) {
  if (!mu.defined() || !cov.defined()) fail("frechet distance: {} is missing its mean or covariance", name);
  if (mu.dim() != 1 || cov.dim() != 2 || cov.size(0) != mu.size(0) || cov.size(1) != mu.size(0))
    fail("frechet distance: {} has mean of shape {} and covariance of shape {}; expected [d] and [d, d]", name,
         mu.sizes(), cov.sizes());
  if (!torch::isfinite(mu).all().item<bool>() || !torch::isfinite(cov).all().item<bool>())
    fail("frechet distance: {} holds a NaN or Inf", name);
}

// The eigenvalues of a symmetric matrix, and its eigenvectors; rounding's small negative
// eigenvalues become 0.
std::tuple<torch::Tensor, torch::Tensor> symmetric_eigen(const torch::Tensor& m) {
  auto [values, vectors] = at::linalg_eigh((m + m.transpose(0, 1)) / 2, "L");
  return {values.clamp_min(0), vectors};
}

}  // namespace

double frechet_distance(const torch::Tensor& mu1, const torch::Tensor& cov1, const torch::Tensor& mu2,
                        const torch::Tensor& cov2) {
  check_gaussian(mu1, cov1, "the first set");
  check_gaussian(mu2, cov2, "the second set");
  if (mu1.size(0) != mu2.size(0))
    fail("frechet distance: the sets have {} and {} features; they must have the same", mu1.size(0), mu2.size(0));
  const auto m1 = mu1.to(torch::kFloat64), m2 = mu2.to(torch::kFloat64);
  const auto s1 = cov1.to(torch::kFloat64), s2 = cov2.to(torch::kFloat64);
  // tr(sqrt(S1 S2)) through the symmetric S1^1/2 S2 S1^1/2, which has the same eigenvalues
  // as S1 S2 but, unlike it, a symmetric eigendecomposition.
  const auto [values1, vectors1] = symmetric_eigen(s1);
  const auto root1 = vectors1.matmul(torch::diag(values1.sqrt())).matmul(vectors1.transpose(0, 1));
  const auto values = std::get<0>(symmetric_eigen(root1.matmul(s2).matmul(root1)));
  const double cross = values.sqrt().sum().item<double>();
  const double distance = (m1 - m2).pow(2).sum().item<double>() + s1.trace().item<double>() +
                          s2.trace().item<double>() - 2 * cross;
  // Equal Gaussians come out a rounding error below zero.
  return std::max(distance, 0.0);
}

double frechet_distance(const Gaussian& a, const Gaussian& b) { return frechet_distance(a.mean, a.cov, b.mean, b.cov); }

}  // namespace difftrain
