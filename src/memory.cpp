#include "difftrain/memory.h"

#include <unistd.h>

#include <fstream>

#include <fmt/format.h>

namespace difftrain {

long double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<long double>(pages) * page : 0;
}

std::optional<double> available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string name, unit;
  double kib = 0;
  while (in >> name >> kib >> unit)
    if (name == "MemAvailable:") return kib * 1024;
  return std::nullopt;
}

std::string human_bytes(long double bytes) {
  static const char* units[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000 && u < 6) bytes /= 1000, ++u;
  return u == 0 ? fmt::format("{} bytes", static_cast<int64_t>(bytes))
                : fmt::format("{:.1f} {}", static_cast<double>(bytes), units[u]);
}

}  // namespace difftrain
