#include "difftrain/models/layers.h"

#include <cmath>
#include <string>

#include <torch/version.h>

#include "difftrain/error.h"
#include "difftrain/models/embeddings.h"

namespace difftrain {

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  return torch::matmul(torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1), v);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  return attention_reference(q, k, v);
#endif
}

AttentionImpl::AttentionImpl(int64_t head_dim, int64_t num_heads, bool qkv_bias)
    : head_dim_(head_dim), num_heads_(num_heads) {
  const int64_t dim = head_dim * num_heads;
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), tokens = x.size(1);
  // [B, N, (qkv h k)] -> [qkv, B, h, N, k]
  const auto qkv_heads = qkv->forward(x).reshape({batch, tokens, 3, num_heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  const auto out = attention(qkv_heads[0], qkv_heads[1], qkv_heads[2]);  // [B, h, N, k]
  return proj->forward(out.permute({0, 2, 1, 3}).reshape({batch, tokens, num_heads_ * head_dim_}));
}

SigmaEmbedderImpl::SigmaEmbedderImpl(int64_t dim) {
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(2, dim), torch::nn::SiLU(),
                                                     torch::nn::Linear(dim, dim)));
}

torch::Tensor SigmaEmbedderImpl::forward(int64_t batch, const torch::Tensor& sigma) {
  return mlp->forward(sigma_sincos_embedding(batch, sigma));
}

LabelEmbedderImpl::LabelEmbedderImpl(int64_t dim, int64_t num_classes) {
  embeddings = register_module("embeddings", torch::nn::Embedding(num_classes + 1, dim));
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, dim)));
}

torch::Tensor LabelEmbedderImpl::forward(const torch::Tensor& labels) {
  return mlp->forward(embeddings->forward(labels));
}

void CondSequentialImpl::push_back(std::shared_ptr<CondModule> layer) {
  layers_.push_back(register_module(std::to_string(layers_.size()), std::move(layer)));
}

torch::Tensor CondSequentialImpl::forward(torch::Tensor x, const torch::Tensor& cond) {
  for (const auto& layer : layers_) x = layer->forward(x, cond);
  return x;
}

torch::Tensor scale_input(const torch::Tensor& x, const torch::Tensor& sigma) {
  return x * (1 + (sigma.dim() == 0 ? sigma : sigma.reshape({-1, 1, 1, 1})).square()).rsqrt();
}

void check_labels(const char* model, int64_t num_classes, int64_t batch, const torch::Tensor& labels) {
  if (num_classes == 0) {
    if (labels.defined()) fail("{}: the model is unconditional (model.num_classes 0); it takes no labels", model);
    return;
  }
  if (!labels.defined())
    fail("{}: the model is class-conditional (model.num_classes {}); it needs one label per example", model,
         num_classes);
  if (labels.dim() != 1 || labels.size(0) != batch || labels.scalar_type() != torch::kLong)
    fail("{}: expected int64 labels of shape [{}], got {} {}", model, batch, c10::toString(labels.scalar_type()),
         labels.sizes());
}

}  // namespace difftrain
