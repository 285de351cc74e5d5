#include "difftrain/io/input_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

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

}  // namespace difftrain
