#include "difftrain/io/torch_save.h"

#include <caffe2/serialize/inline_container.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

namespace difftrain {

namespace {

// The same value with every list and dict untyped (element type Any), recursively.
c10::IValue untyped(const c10::IValue& v) {
  if (v.isList()) {
    c10::impl::GenericList list(c10::AnyType::get());
    for (const auto& item : v.toListRef()) list.push_back(untyped(item));
    return list;
  }
  if (v.isGenericDict()) {
    c10::impl::GenericDict dict(c10::AnyType::get(), c10::AnyType::get());
    for (const auto& entry : v.toGenericDict()) dict.insert(untyped(entry.key()), untyped(entry.value()));
    return dict;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& item : v.toTupleRef().elements()) items.push_back(untyped(item));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  return v;
}

}  // namespace

std::vector<char> torch_save_bytes(const c10::IValue& value) {
  std::vector<char> pickle;
  torch::jit::Pickler pickler([&](const char* bytes, size_t n) { pickle.insert(pickle.end(), bytes, bytes + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
                              /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(untyped(value));
  pickler.stop();
  std::vector<char> file;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
    const auto* begin = static_cast<const char*>(bytes);
    file.insert(file.end(), begin, begin + n);
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return file;
}

std::vector<int64_t> int_list(const c10::IValue& value) {
  TORCH_CHECK(value.isList(), "not a list");
  std::vector<int64_t> out;
  for (const auto& item : value.toListRef()) out.push_back(item.toInt());
  return out;
}

}  // namespace difftrain
