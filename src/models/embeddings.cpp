#include "difftrain/models/embeddings.h"

#include "difftrain/error.h"

namespace difftrain {

torch::Tensor sigma_sincos_embedding(int64_t batch, const torch::Tensor& sigma, double scaling_factor) {
  auto s = sigma.numel() == 1 && sigma.dim() <= 1 ? sigma.reshape({1}).expand({batch}) : sigma.reshape({-1});
  if (s.size(0) != batch)
    fail("sigma embedding: expected one sigma or {} of them, got shape {}", batch, sigma.sizes());
  s = s.log().unsqueeze(1) * scaling_factor;
  return torch::cat({s.sin(), s.cos()}, 1);
}

}  // namespace difftrain
