#include "difftrain/flat_buffer.h"

#include <cstring>

#include "difftrain/error.h"

namespace difftrain {

void copy_few(const torch::Tensor& from, const torch::Tensor& to) {
  if (from.numel() != to.numel()) fail("copy: {} values into {}", from.numel(), to.numel());
  if (from.data_ptr() == to.data_ptr() && from.dtype() == to.dtype() && from.device() == to.device()) return;
  if (from.is_cpu() && to.is_cpu() && from.is_contiguous() && to.is_contiguous() &&
      from.scalar_type() == torch::kFloat32 && to.scalar_type() == torch::kFloat32)
    std::memcpy(to.data_ptr<float>(), from.data_ptr<float>(), sizeof(float) * static_cast<std::size_t>(to.numel()));
  else
    to.copy_(from.reshape(to.sizes()));
}

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

torch::Tensor flat_view(const std::vector<torch::Tensor>& tensors, const char* user) {
  if (tensors.empty()) fail("{}: no tensors", user);
  auto buffer = existing_buffer(tensors, flat_offsets(tensors).back());
  if (!buffer.defined())
    fail("{}: the {} tensors are not views of one flat buffer (flatten_storage them first)", user, tensors.size());
  return buffer;
}

torch::Tensor flatten_storage(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) fail("flatten_storage: no tensors");
  for (const auto& t : tensors)
    if (t.scalar_type() != tensors.front().scalar_type() || t.device() != tensors.front().device())
      fail("flatten_storage: tensors of {} on {} and {} on {} cannot share a buffer",
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
