#include "difftrain/io/torch_save.h"

#include <regex>

#include <caffe2/serialize/inline_container.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/version.h>

#include "difftrain/error.h"

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

c10::IValue load_torch_file(const std::vector<char>& bytes, const std::string& path, const char* what) {
  try {
    return torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    // LibTorch says which in the first words of its message; the rest is a backtrace.
    const std::string message = e.what();
    static const std::regex version(R"(file with version (\d+), but the maximum supported version for reading is (\d+))");
    static const std::regex opcode(R"(Unknown opcode for unpickling at 0x([0-9a-fA-F]+))");
    std::smatch m;
    if (std::regex_search(message, m, version))
      fail("{}: written in PyTorch's file format version {}, and this LibTorch ({}) reads versions up to {}; use a "
           "difftrain built with a newer LibTorch (launch/setup.sh --torch cpu or cuda)",
           path, m[1].str(), TORCH_VERSION, m[2].str());
    if (std::regex_search(message, m, opcode))
      fail("{}: holds a pickle from PyTorch's own pickler (re-saved by Python's torch.save?) with opcode 0x{}, which "
           "this LibTorch ({}) cannot read; LibTorch 2.x reads it: use a difftrain built with launch/setup.sh --torch "
           "cpu or cuda, or the {} as difftrain wrote it",
           path, m[1].str(), TORCH_VERSION, what);
    fail("{}: not a readable {} (truncated or corrupt)", path, what);
  }
}

}  // namespace difftrain
