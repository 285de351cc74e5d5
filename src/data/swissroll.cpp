#include "difftrain/data/swissroll.h"

namespace difftrain {

namespace {
torch::Tensor spiral(const torch::Tensor& t, double tmax) {
  return torch::stack({t * t.cos() / tmax, t * t.sin() / tmax}, 1);
}
}  // namespace

torch::Tensor swissroll_points(int64_t n, double tmin, double tmax) {
  return spiral(tmin + torch::linspace(0, 1, n, torch::kFloat32) * tmax, tmax);
}

torch::Tensor swissroll_curve_distance(const torch::Tensor& points, double tmin, double tmax) {
  // 20001 points along the curve: neighbours are < 1e-3 apart, far below what we measure.
  const auto curve = spiral(tmin + torch::linspace(0, 1, 20001, torch::kFloat64) * tmax, tmax);
  const auto p = points.to(torch::kFloat64);
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < p.size(0); i += 512)
    parts.push_back(std::get<0>(torch::cdist(p.narrow(0, i, std::min<int64_t>(512, p.size(0) - i)), curve).min(1)));
  return torch::cat(parts);
}

}  // namespace difftrain
