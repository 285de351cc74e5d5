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

// Refuses (an Error naming both) an output directory that is the input directory or lies
// inside it, compared as real paths (symbolic links resolved): files written there would
// join the tree being read and break every later read of it. `what` names the command.
void refuse_output_inside_input(const std::string& input_dir, const std::string& output_dir, const std::string& what);

}  // namespace difftrain
