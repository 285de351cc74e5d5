#include "difftrain/error.h"

#include <algorithm>

#include <c10/util/Exception.h>

namespace difftrain {

std::string one_line(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = torch_error ? torch_error->what_without_backtrace() : e.what();
  const auto newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

std::string abbreviate(std::string_view text, std::size_t keep) {
  std::size_t end = std::min(keep, text.size());
  // Never split a multi-byte character: back up to the start of the one at the cut.
  if (end < text.size())
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  std::string out;
  for (const char ch : text.substr(0, end)) {
    if (ch == '\n') out += "\\n";
    else if (ch == '\r') out += "\\r";
    else out += ch;
  }
  if (end < text.size()) out += fmt::format("… ({} bytes)", text.size());
  return out;
}

}  // namespace difftrain
