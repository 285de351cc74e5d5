#pragma once
// Files the user names as input (config, data shards, checkpoints): whether one is there,
// told apart from the reasons it cannot be looked at. std::filesystem::exists is false
// for a symbolic link loop too, which would then be reported as a missing file.
#include <filesystem>
#include <string>

namespace difftrain {

// True when `path` names something (following symbolic links); false when it or a
// directory on its way does not exist. Any other reason it cannot be looked at is an error
// naming the path: "PATH: symbolic link loop", or the system's words for the failure.
bool input_exists(const std::string& path);

// `path` made absolute, symbolic links resolved as far as they exist.
std::filesystem::path resolved_path(const std::string& path);

// Whether two paths name the same file: the same resolved path, or (when both exist) the
// same device and inode, so that a symbolic or hard link to a file counts as that file.
bool same_file(const std::string& a, const std::string& b);

// Refuses (an Error naming both) an output directory that is the input directory or lies
// inside it, compared as real paths (symbolic links resolved): files written there would
// join the tree being read and break every later read of it. `what` names the command.
void refuse_output_inside_input(const std::string& input_dir, const std::string& output_dir, const std::string& what);

}  // namespace difftrain
