#pragma once
// Every file difftrain writes lands whole or not at all: it is written to a temporary
// name beside the target, fsynced, renamed over the target, and the directory fsynced.
#include <functional>
#include <string>
#include <vector>

namespace difftrain {

// `write` receives the temporary path to fill (and close) before it returns. If it throws,
// the temporary is removed and the target is untouched.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write);

void write_file_atomically(const std::string& path, const std::vector<char>& bytes);
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace difftrain
