#include "difftrain/flat_buffer.h"

#include "difftrain/error.h"

namespace difftrain {

std::vector<int64_t> flat_offsets(const std::vector<torch::Tensor>& tensors) {
  std::vector<int64_t> offsets;
  int64_t next = 0;
  for (const auto& t : tensors) offsets.push_back(next), next += t.numel();
  offsets.push_back(next);
  return offsets;
}

namespace {

// The buffer when `tensors` already are its consecutive views, else undefined.
torch::Tensor existing_buffer(const std::vector<torch::Tensor>& tensors, int64_t total) {
  const auto& first = tensors.front();
  if (!first.has_storage()) return {};
  const auto* storage = first.storage().unsafeGetStorageImpl();
  int64_t offset = first.storage_offset();
  for (const auto& t : tensors) {
    if (!t.has_storage() || t.storage().unsafeGetStorageImpl() != storage || t.storage_offset() != offset ||
        !t.is_contiguous())
      return {};
    offset += t.numel();
  }
  return torch::empty({0}, first.options()).set_(first.storage(), first.storage_offset(), {total}, {1});
}

}  // namespace

torch::Tensor flat_buffer(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) fail("flat buffer: no tensors");
  for (const auto& t : tensors)
    if (t.scalar_type() != tensors.front().scalar_type() || t.device() != tensors.front().device())
      fail("flat buffer: tensors of {} on {} and {} on {} cannot share a buffer",
           c10::toString(tensors.front().scalar_type()), tensors.front().device().str(), c10::toString(t.scalar_type()),
           t.device().str());
  const auto offsets = flat_offsets(tensors);
  if (auto buffer = existing_buffer(tensors, offsets.back()); buffer.defined()) return buffer;
  torch::NoGradGuard no_grad;
  auto buffer = torch::empty({offsets.back()}, tensors.front().options().requires_grad(false));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto view = buffer.narrow(0, offsets[i], tensors[i].numel()).view(tensors[i].sizes());
    view.copy_(tensors[i]);
    // set_data keeps the tensor object (and its autograd state): the module sees the move.
    auto t = tensors[i];
    t.set_data(view);
  }
  return buffer;
}

}  // namespace difftrain
