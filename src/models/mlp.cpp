#include "difftrain/models/mlp.h"

#include "difftrain/error.h"
#include "difftrain/models/embeddings.h"

namespace difftrain {

namespace {
constexpr int64_t kSigmaDim = 2;
}

TimeInputMLPImpl::TimeInputMLPImpl(int64_t dim, std::vector<int64_t> hidden_dims) : dim_(dim) {
  if (dim < 1 || hidden_dims.empty()) fail("mlp: needs dim >= 1 and at least one hidden layer");
  net = torch::nn::Sequential();
  int64_t in = dim + kSigmaDim;
  for (int64_t out : hidden_dims) {
    net->push_back(torch::nn::Linear(in, out));
    net->push_back(torch::nn::GELU());
    in = out;
  }
  net->push_back(torch::nn::Linear(in, dim));
  register_module("net", net);
}

torch::Tensor TimeInputMLPImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma) {
  if (x.dim() != 2 || x.size(1) != dim_)
    fail("mlp: expected input of shape [B, {}], got {}", dim_, x.sizes());
  return net->forward(torch::cat({x, sigma_sincos_embedding(x.size(0), sigma)}, 1));
}

}  // namespace difftrain
