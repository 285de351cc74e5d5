#include "difftrain/data/class_names.h"

#include "difftrain/data/hdf5_file.h"
#include "difftrain/error.h"

namespace difftrain {

std::optional<std::vector<std::string>> read_class_names(const std::vector<std::string>& paths) {
  std::optional<std::vector<std::string>> names;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    auto these = h5::read_string_list(paths[i], kClassNamesAttribute);
    if (!these) return std::nullopt;
    if (i > 0 && *these != *names)
      fail("{}: attribute '{}' [{}] differs from that of {} [{}]; their labels mean different classes", paths[i],
           kClassNamesAttribute, abbreviate(fmt::format("{}", fmt::join(*these, ", "))), paths[0],
           abbreviate(fmt::format("{}", fmt::join(*names, ", "))));
    names = std::move(these);
  }
  return names;
}

}  // namespace difftrain
