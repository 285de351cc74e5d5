#pragma once
// A model's parameters as views of one contiguous buffer. The optimizer, the EMA, the
// gradient norm and the gradient all-reduce then each become a few operations on whole
// buffers instead of a loop over a hundred small tensors, which is where a small model's
// step spends its time (a dispatch per tensor per operation). Modules keep holding the same
// tensors, with the same names, shapes and autograd identity: only their storage moves, so
// state dicts and checkpoints do not change.
#include <vector>

#include <torch/torch.h>

namespace difftrain {

// Moves `tensors` into one new contiguous buffer, each becoming a consecutive view of it, in
// order, and returns the buffer (nothing moves when they already are such views). They must
// share a dtype and a device. The trainer's set-up does this, visibly, once for the model
// and once for its EMA copy, after moving them to their device (`to()` would give each
// parameter its own storage again); the optimizer, the EMA and the gradient buckets then
// only look at the buffer through flat_view.
torch::Tensor flatten_storage(const std::vector<torch::Tensor>& tensors);

// The buffer `tensors` are consecutive views of, in order. Never moves anything: tensors
// that are not such views are an Error naming `user` (flatten_storage them first).
torch::Tensor flat_view(const std::vector<torch::Tensor>& tensors, const char* user);

// Offsets of `tensors` laid out one after the other: offset i is the sum of the sizes before i.
std::vector<int64_t> flat_offsets(const std::vector<torch::Tensor>& tensors);

// `to` = `from` for a few values (a step's flags and sums beside its gradients): between
// contiguous float32 host tensors a plain memcpy, as ATen's copy_ costs tens of
// microseconds there (measured with tests/bench/bench_grad_sync.cpp), as much as a small
// model's whole all-reduce. Nothing to do when both are the same values.
void copy_few(const torch::Tensor& from, const torch::Tensor& to);

}  // namespace difftrain
