#pragma once
// The names of a labelled dataset's classes (name i for label value i), stored in every
// shard as the root attribute `class_names`, a list of UTF-8 strings (h5py:
// f.attrs["class_names"]).
#include <optional>
#include <string>
#include <vector>

namespace difftrain {

inline constexpr const char* kClassNamesAttribute = "class_names";

// The class names shared by the files `paths`, or nothing when any of them has none.
// Files that name their classes differently would give one label two meanings: an error
// naming both files.
std::optional<std::vector<std::string>> read_class_names(const std::vector<std::string>& paths);

}  // namespace difftrain
