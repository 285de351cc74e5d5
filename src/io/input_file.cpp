#include "difftrain/io/input_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "difftrain/error.h"

namespace difftrain {

bool input_exists(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0) return true;
  const int error = errno;
  if (error == ENOENT || error == ENOTDIR) return false;
  if (error == ELOOP) fail("{}: symbolic link loop", abbreviate(path, 4096));
  fail("{}: {}", abbreviate(path, 4096), std::strerror(error));
}

std::filesystem::path resolved_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto resolved = fs::weakly_canonical(fs::absolute(path), ec);
  return ec ? fs::absolute(path).lexically_normal() : resolved;
}

bool same_file(const std::string& a, const std::string& b) {
  if (resolved_path(a) == resolved_path(b)) return true;
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void refuse_output_inside_input(const std::string& input_dir, const std::string& output_dir, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec_in, ec_out;
  const fs::path in = fs::weakly_canonical(input_dir, ec_in), out = fs::weakly_canonical(output_dir, ec_out);
  if (ec_in || ec_out) return;  // the read or the write names the path that cannot be resolved
  const auto [in_end, out_end] = std::mismatch(in.begin(), in.end(), out.begin(), out.end());
  if (in_end != in.end()) return;  // `out` is not below `in`
  fail("{}: --out {} {} the input {}{}; write the shards to a directory outside it", what, output_dir,
       out_end == out.end() ? "is" : "lies inside", input_dir,
       out.string() == output_dir && in.string() == input_dir ? "" : fmt::format(" ({} in {})", out.string(), in.string()));
}

}  // namespace difftrain
