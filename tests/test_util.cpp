#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace difftrain::test {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "difftrain-test-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run_command(const std::string& command) {
  CommandResult result{-1, ""};
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  std::size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace difftrain::test

namespace difftrain {

torch::Tensor swissroll_curve_distance(const torch::Tensor& points, double tmin, double tmax) {
  // 20001 points along the curve: neighbours are < 1e-3 apart, far below what the tests measure.
  const auto t = tmin + torch::linspace(0, 1, 20001, torch::kFloat64) * tmax;
  const auto curve = torch::stack({t * t.cos() / tmax, t * t.sin() / tmax}, 1);
  const auto p = points.to(torch::kFloat64);
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < p.size(0); i += 512)
    parts.push_back(std::get<0>(torch::cdist(p.narrow(0, i, std::min<int64_t>(512, p.size(0) - i)), curve).min(1)));
  return torch::cat(parts);
}

}  // namespace difftrain
