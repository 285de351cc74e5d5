#pragma once
// Noise-level embeddings shared by the models.
#include <torch/torch.h>

namespace difftrain {

// [sin(s * log sigma), cos(s * log sigma)], shape [batch, 2]. sigma may be 0-d (the same
// level for the whole batch) or hold one value per example ([B] or [B, 1, ..., 1]).
torch::Tensor sigma_sincos_embedding(int64_t batch, const torch::Tensor& sigma,
                                     double scaling_factor = 0.5);

}  // namespace difftrain
