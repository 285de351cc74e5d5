#include <algorithm>
#include <charconv>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/command.h"
#include "difftrain/error.h"

namespace difftrain::cli {

void report(const std::string& message) { fmt::print(stderr, "difftrain: error: {}\n", message); }

void split_config_args(const std::vector<std::string>& args, std::string& config, std::vector<std::string>& overrides) {
  for (const auto& a : args) {
    if (a.find('=') == std::string::npos && config.empty() && overrides.empty()) config = a;
    else if (a.find('=') == std::string::npos) fail("'{}': expected key.sub=value (only one config file)", a);
    else overrides.push_back(a);
  }
}

namespace {

// Edits (insertions, deletions, substitutions, swaps of neighbours) from a to b.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

}  // namespace

std::string unknown_command_message(const std::string& word, const std::vector<std::string>& commands) {
  std::string nearest;
  std::size_t best = 3;  // farther than two edits is no longer a slip of the keyboard
  if (word.size() < 64)
    for (const auto& c : commands)
      if (const auto d = edit_distance(word, c); d < best) best = d, nearest = c;
  return fmt::format("unknown command '{}' ({}commands: {})", abbreviate(word),
                     nearest.empty() ? "" : fmt::format("did you mean '{}'?; ", nearest), fmt::join(commands, ", "));
}

CLI::Validator integer_in(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (error != std::errc() || stop != end || value < lo || value > hi)
          return fmt::format("must be an integer in [{}, {}], got '{}'", lo, hi, abbreviate(text));
        return "";
      },
      fmt::format("INT in [{}, {}]", lo, hi));
}

int exit_after_failure(std::exception_ptr failure, Communicator& comm) {
  try {
    std::rethrow_exception(failure);
  } catch (const AgreedError& e) {
    if (comm.rank() == 0) report(e.what());
  } catch (const PeerError&) {
  } catch (const RankError& e) {
    report(e.what());
  } catch (const std::exception& e) {
    if (comm.size() == 1) {
      report(one_line(e));
      return 1;
    }
    report(fmt::format("rank {}: {}", comm.rank(), one_line(e)));
    comm.abort(1);
  }
  return 1;
}

}  // namespace difftrain::cli
