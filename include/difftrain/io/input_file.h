#pragma once
// Files the user names as input (config, data shards, checkpoints): whether one is there,
// told apart from the reasons it cannot be looked at. std::filesystem::exists is false
// for a symbolic link loop too, which would then be reported as a missing file.
#include <string>

namespace difftrain {

// True when `path` names something (following symbolic links); false when it or a
// directory on its way does not exist. Any other reason it cannot be looked at is an error
// naming the path: "PATH: symbolic link loop", or the system's words for the failure.
bool input_exists(const std::string& path);

}  // namespace difftrain
