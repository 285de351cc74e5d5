#pragma once
// One exception type for every user-facing failure: its message is the single line the
// user sees, and it names the file, key, rank or shape at fault.
#include <stdexcept>
#include <string>
#include <string_view>

#include <c10/util/ArrayRef.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace difftrain {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Raised by every rank at once, at the same point (all reached the same verdict from the
// same reduced values): rank 0 reports it and every rank exits, with no abort needed.
class AgreedError : public Error {
 public:
  using Error::Error;
};

// A rank-local failure during training that was shared with every rank through the step's
// all-reduce: the failing rank throws RankError (and reports it), the others PeerError
// (and stay quiet); all exit 1 together, no abort needed.
class RankError : public Error {
 public:
  using Error::Error;
};
class PeerError : public Error {
 public:
  using Error::Error;
};

// The one line to show for any exception: LibTorch's errors carry a backtrace and several
// lines; only the first line of the message is kept.
std::string one_line(const std::exception& e);

// A user-given value or name as it may be echoed in an error line: at most `keep`
// characters (cut at a UTF-8 boundary) and then "… (N bytes)", and line breaks shown as
// \n, so a 50 MB value or a multi-line string still gives one short line.
std::string abbreviate(std::string_view text, std::size_t keep = 60);

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace difftrain

// Tensor shapes print as [2, 3] in messages.
template <>
struct fmt::formatter<c10::IntArrayRef> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(c10::IntArrayRef shape, FormatContext& ctx) const {
    return fmt::format_to(ctx.out(), "[{}]", fmt::join(shape.begin(), shape.end(), ", "));
  }
};
