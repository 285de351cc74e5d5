#include "difftrain/eval/feature_moments.h"

#include "difftrain/error.h"

namespace difftrain {

FeatureMoments::FeatureMoments(int64_t dim)
    : sum_(torch::zeros({dim}, torch::kFloat64)), outer_(torch::zeros({dim, dim}, torch::kFloat64)) {
  if (dim < 1) fail("feature moments: need at least one feature, got {}", dim);
}

void FeatureMoments::add(const torch::Tensor& features) {
  if (features.dim() != 2 || features.size(1) != dim())
    fail("feature moments: expected features of shape [b, {}], got {}", dim(), features.sizes());
  const auto f = features.detach().to(torch::kCPU, torch::kFloat64);
  count_ += f.size(0);
  sum_ += f.sum(0);
  outer_ += f.transpose(0, 1).matmul(f);
}

void FeatureMoments::allreduce(Communicator& comm) {
  // One message: [count, sum, outer]; counts stay exact in float64 up to 2^53.
  auto packed = torch::cat({torch::tensor({static_cast<double>(count_)}, torch::kFloat64), sum_, outer_.reshape({-1})})
                    .to(comm.device());
  comm.allreduce_sum(packed);
  packed = packed.cpu();
  count_ = static_cast<int64_t>(packed[0].item<double>());
  sum_ = packed.narrow(0, 1, dim()).clone();
  outer_ = packed.narrow(0, 1 + dim(), dim() * dim()).reshape({dim(), dim()}).clone();
}

Gaussian FeatureMoments::gaussian() const {
  if (count_ < 2) fail("feature moments: a covariance needs at least 2 feature vectors, got {}", count_);
  const double n = static_cast<double>(count_);
  const auto mean = sum_ / n;
  const auto cov = (outer_ - n * torch::outer(mean, mean)) / (n - 1);
  return {mean, (cov + cov.transpose(0, 1)) / 2};
}

Gaussian fit_gaussian(const torch::Tensor& features) {
  if (features.dim() != 2) fail("fit_gaussian: expected features [n, d], got {}", features.sizes());
  FeatureMoments m(features.size(1));
  m.add(features);
  return m.gaussian();
}

}  // namespace difftrain
