#pragma once
// A setting that picks one of a few named values (a schedule type, a backend, a precision)
// is an enum, and its names are one table declared beside the enum:
//
//   enum class Precision { fp32, bf16 };
//   constexpr std::array<Named<Precision>, 2> names_of(Precision) { return {{{Precision::fp32, "fp32"}, ...}}; }
//
// Reading the config, writing it back, help texts and the error that lists the valid names
// all use that table, found by argument-dependent lookup.
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "difftrain/error.h"

namespace difftrain {

template <typename E>
struct Named {
  E value;
  const char* name;
};

template <typename E>
const char* name_of(E value) {
  for (const auto& entry : names_of(E{}))
    if (entry.value == value) return entry.name;
  fail("name_of: value {} is not in its table", static_cast<int>(value));
}

// "a, b, c", in the table's order.
template <typename E>
std::string name_list() {
  std::string out;
  for (const auto& entry : names_of(E{})) out += (out.empty() ? "" : ", ") + std::string(entry.name);
  return out;
}

// The value called `text`; otherwise an Error "WHERE: expected one of a, b, c; got 'text'".
template <typename E>
E parse_name(std::string_view text, const std::string& where) {
  for (const auto& entry : names_of(E{}))
    if (text == entry.name) return entry.value;
  fail("{}: expected one of {}; got '{}'", where, name_list<E>(), abbreviate(std::string(text)));
}

}  // namespace difftrain
