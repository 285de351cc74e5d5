#pragma once
// Building blocks the image models share, named as the reference library's PyTorch modules
// (Attention, SigmaEmbedderSinCos, CondEmbedderLabel, CondSequential), so that their
// parameters carry the same state-dict names.
#include <memory>
#include <vector>

#include <torch/torch.h>

namespace difftrain {

// softmax(q k^T / sqrt(head_dim)) v over q, k, v of shape [B, heads, N, head_dim], written
// out: LibTorch before 2.0 has no fused kernel.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
// The same, through LibTorch's fused kernel where it has one (2.0 and later).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// Multi-head self-attention over [B, N, heads * head_dim]: `qkv` projects to the queries,
// keys and values laid out as (qkv, head, head_dim) along the last axis, `proj` mixes the
// heads' outputs.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t head_dim, int64_t num_heads, bool qkv_bias);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t head_dim_, num_heads_;
};
TORCH_MODULE(Attention);

// sigma -> [B, dim]: an MLP (Linear, SiLU, Linear) on [sin, cos](0.5 log sigma).
class SigmaEmbedderImpl : public torch::nn::Module {
 public:
  explicit SigmaEmbedderImpl(int64_t dim);
  torch::Tensor forward(int64_t batch, const torch::Tensor& sigma);

  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(SigmaEmbedder);

// labels [B] in [0, num_classes] -> [B, dim]: a table of num_classes + 1 rows (the last is
// "no label"), then SiLU and Linear. No label dropout here: the trainer drops labels with
// its own random stream.
class LabelEmbedderImpl : public torch::nn::Module {
 public:
  LabelEmbedderImpl(int64_t dim, int64_t num_classes);
  torch::Tensor forward(const torch::Tensor& labels);

  torch::nn::Embedding embeddings{nullptr};
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(LabelEmbedder);

// A layer that also takes the conditioning vector (sigma and label embedding).
class CondModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond) = 0;
};

// Conditioned layers applied in turn, registered as "0", "1", ...
class CondSequentialImpl : public torch::nn::Module {
 public:
  void push_back(std::shared_ptr<CondModule> layer);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cond);
  std::size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<CondModule>> layers_;
};
TORCH_MODULE(CondSequential);

// The labels a model of `num_classes` classes takes for a batch of `batch`: int64 [batch]
// for a conditional model, none for an unconditional one; `model` names it in the error.
void check_labels(const char* model, int64_t num_classes, int64_t batch, const torch::Tensor& labels);

// The reference's Scaled wrapper (`model.scaled_input`): images [B, C, H, W] times
// 1/sqrt(1 + sigma^2), so the network sees inputs of about unit variance at every sigma.
// sigma is a scalar or one value per example.
torch::Tensor scale_input(const torch::Tensor& x, const torch::Tensor& sigma);

}  // namespace difftrain
