#include "difftrain/data/swissroll.h"

namespace difftrain {

torch::Tensor swissroll_points(int64_t n, double tmin, double tmax) {
  const auto t = tmin + torch::linspace(0, 1, n, torch::kFloat32) * tmax;
  return torch::stack({t * t.cos() / tmax, t * t.sin() / tmax}, 1);
}

}  // namespace difftrain
