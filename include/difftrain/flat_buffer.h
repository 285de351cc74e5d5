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

// The one contiguous buffer that `tensors` are consecutive views of, in order. When they are
// not yet (the first call for a model), their values move into a new buffer first and each
// becomes a view of it. They must share a dtype and a device. Call it after moving the model
// to its device (`to()` would give each parameter its own storage again).
torch::Tensor flat_buffer(const std::vector<torch::Tensor>& tensors);

// Offsets of `tensors` laid out one after the other: offset i is the sum of the sizes before i.
std::vector<int64_t> flat_offsets(const std::vector<torch::Tensor>& tensors);

// `to` = `from` for a few values (a step's flags and sums beside its gradients): between
// contiguous float32 host tensors a plain memcpy, as ATen's copy_ costs tens of
// microseconds there (measured with tests/bench/bench_grad_sync.cpp), as much as a small
// model's whole all-reduce. Nothing to do when both are the same values.
void copy_few(const torch::Tensor& from, const torch::Tensor& to);

}  // namespace difftrain
