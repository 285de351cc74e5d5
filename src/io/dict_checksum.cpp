#include "difftrain/io/dict_checksum.h"

#include <torch/torch.h>
#include <xxhash.h>

#include "difftrain/error.h"

namespace difftrain {

namespace {

constexpr const char* kAlgorithm = "XXH3-64 of every other entry, in order";

// A hash of a checkpoint's contents as values, not as pickle bytes: every tensor's dtype,
// shape and data, every number and string, in the dict's order. A flipped bit anywhere in
// the values changes it; Python re-pickling the same values keeps it.
class ContentHash {
 public:
  ContentHash() : state_(XXH3_createState()) { XXH3_64bits_reset(state_); }
  ~ContentHash() { XXH3_freeState(state_); }
  ContentHash(const ContentHash&) = delete;
  ContentHash& operator=(const ContentHash&) = delete;

  void add(const c10::IValue& v, const std::string& where) {
    if (v.isTensor()) {
      const auto t = v.toTensor().cpu().contiguous();
      tag('T');
      bytes(static_cast<int64_t>(t.scalar_type()));
      bytes(static_cast<int64_t>(t.dim()));
      for (auto d : t.sizes()) bytes(d);
      XXH3_64bits_update(state_, t.data_ptr(), t.numel() * t.element_size());
    } else if (v.isInt()) {
      tag('I'), bytes(v.toInt());
    } else if (v.isDouble()) {
      tag('D'), bytes(v.toDouble());
    } else if (v.isBool()) {
      tag('B'), bytes(v.toBool());
    } else if (v.isString()) {
      tag('S'), text(v.toStringRef());
    } else if (v.isNone()) {
      tag('N');
    } else if (v.isList()) {
      const auto list = v.toListRef();
      tag('L'), bytes(static_cast<int64_t>(list.size()));
      for (const auto& item : list) add(item, where);
    } else if (v.isTuple()) {
      const auto& items = v.toTupleRef().elements();
      tag('U'), bytes(static_cast<int64_t>(items.size()));
      for (const auto& item : items) add(item, where);
    } else if (v.isGenericDict()) {
      const auto dict = v.toGenericDict();
      tag('M'), bytes(static_cast<int64_t>(dict.size()));
      for (const auto& item : dict) add(item.key(), where), add(item.value(), where);
    } else {
      fail("{}: cannot checksum a value of type {}", where, v.tagKind());
    }
  }
  int64_t value() const { return static_cast<int64_t>(XXH3_64bits_digest(state_)); }

 private:
  XXH3_state_t* state_;
  void tag(char t) { XXH3_64bits_update(state_, &t, 1); }
  template <typename T>
  void bytes(T v) { XXH3_64bits_update(state_, &v, sizeof v); }
  void text(const std::string& s) { bytes(static_cast<int64_t>(s.size())), XXH3_64bits_update(state_, s.data(), s.size()); }
};

int64_t content_checksum(const c10::impl::GenericDict& d, const std::string& where) {
  ContentHash hash;
  for (const auto& item : d)
    if (item.key().toStringRef() != "checksum") hash.add(item.key(), where), hash.add(item.value(), where);
  return hash.value();
}

}  // namespace

void insert_checksum(c10::impl::GenericDict& d, const std::string& where) {
  c10::impl::GenericDict checksum(c10::StringType::get(), c10::AnyType::get());
  checksum.insert("algorithm", std::string(kAlgorithm));
  checksum.insert("value", content_checksum(d, where));
  d.insert("checksum", checksum);
}

bool verify_checksum(const c10::impl::GenericDict& d, const std::string& where) {
  const auto it = d.find("checksum");
  if (it == d.end()) return false;
  int64_t stored = 0;
  try {
    stored = it->value().toGenericDict().at("value").toInt();
  } catch (const c10::Error&) {
    fail("{}: the checksum entry is damaged", where);
  }
  if (content_checksum(d, where) != stored) fail("{}: checksum mismatch: the file is damaged", where);
  return true;
}

}  // namespace difftrain
