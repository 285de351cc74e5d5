#include "difftrain/train/loss_by_sigma.h"

#include <algorithm>
#include <cmath>

#include "difftrain/error.h"

namespace difftrain {

LossBySigma::LossBySigma(double sigma_min, double sigma_max, int64_t bins) : sum_(bins, 0.0), count_(bins, 0.0) {
  if (bins < 1 || !(sigma_min > 0) || !(sigma_max > sigma_min))
    fail("loss by sigma: needs bins >= 1 and 0 < sigma_min < sigma_max, got {} bins over [{}, {}]", bins, sigma_min,
         sigma_max);
  const double lo = std::log(sigma_min), hi = std::log(sigma_max);
  for (int64_t i = 0; i <= bins; ++i) edges_.push_back(lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(bins));
}

torch::Tensor LossBySigma::bin(const torch::Tensor& loss, const torch::Tensor& sigma) const {
  auto out = torch::zeros({2 * bins()}, loss.options().dtype(torch::kFloat64));
  bin_into(loss, sigma, out);
  return out;
}

namespace {
template <typename T>
void add_bins(const torch::Tensor& loss, const torch::Tensor& sigma, T* sums, int64_t k, double lo, double width) {
  // A loop over the batch: a dozen tensor operations on a hundred values cost more.
  const auto l = loss.detach().reshape({-1}).to(torch::kFloat64).contiguous();
  const auto s = sigma.detach().reshape({-1}).to(torch::kFloat64).contiguous();
  const double *lv = l.data_ptr<double>(), *sv = s.data_ptr<double>();
  for (int64_t i = 0; i < l.numel(); ++i) {
    double at = std::floor((std::log(sv[i]) - lo) / width);
    if (!(at >= 0)) at = 0;  // NaN too: the tensor path's clamp sends it to the first bin
    const auto bin = static_cast<int64_t>(std::clamp(at, 0.0, static_cast<double>(k - 1)));
    sums[bin] += static_cast<T>(lv[i]), sums[k + bin] += 1;
  }
}
}  // namespace

void LossBySigma::bin_into(const torch::Tensor& loss, const torch::Tensor& sigma, torch::Tensor out) const {
  torch::NoGradGuard no_grad;
  const int64_t k = bins();
  const double lo = edges_.front(), width = (edges_.back() - lo) / static_cast<double>(k);
  if (out.numel() != 2 * k || !out.is_contiguous() || out.device() != loss.device())
    fail("loss by sigma: expected a contiguous [{}] tensor on {}, got {} on {}", 2 * k, loss.device().str(),
         out.sizes(), out.device().str());
  if (loss.is_cpu()) {
    if (out.scalar_type() == torch::kFloat32)
      add_bins(loss, sigma, out.data_ptr<float>(), k, lo, width);
    else if (out.scalar_type() == torch::kFloat64)
      add_bins(loss, sigma, out.data_ptr<double>(), k, lo, width);
    else
      fail("loss by sigma: sums must be float32 or float64");
    return;
  }
  // Where the loss is: no copy to the host in the step (which a captured step could not make).
  const auto l = loss.detach().reshape({-1}).to(out.scalar_type());
  const auto s = sigma.detach().reshape({-1}).to(l.device(), torch::kFloat64);
  const auto index = ((s.log() - lo) / width).floor().clamp(0, static_cast<double>(k - 1)).to(torch::kInt64);
  out.narrow(0, 0, k).index_add_(0, index, l);
  out.narrow(0, k, k).index_add_(0, index, torch::ones_like(l));
}

void LossBySigma::add(const torch::Tensor& sums_and_counts) {
  const auto t = sums_and_counts.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t k = bins();
  if (t.numel() != 2 * k) fail("loss by sigma: expected {} values, got {}", 2 * k, t.numel());
  const double* v = t.data_ptr<double>();
  for (int64_t i = 0; i < k; ++i) sum_[i] += v[i], count_[i] += v[k + i];
}

void LossBySigma::clear() {
  std::fill(sum_.begin(), sum_.end(), 0.0);
  std::fill(count_.begin(), count_.end(), 0.0);
}

}  // namespace difftrain
