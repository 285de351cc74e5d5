#pragma once
// Every file difftrain writes lands whole or not at all: it is written to a temporary
// name beside the target, fsynced, renamed over the target, and the directory fsynced.
// Every write, flush, close and sync is checked; a failure (a full disk, say) is an Error
// naming the target, the temporary is removed and the previous file stays as it was.
#include <functional>
#include <string>
#include <vector>

namespace difftrain {

void write_file_atomically(const std::string& path, const std::vector<char>& bytes);
void write_file_atomically(const std::string& path, const std::string& text);

// Several files that land together (samples and their picture): each is written and synced
// to its own temporary first, and only when all are whole does publish() rename them into
// place. Whatever fails, before or during publish(), leaves every target as it was: a
// target already replaced when a later rename fails is put back from a hard-link backup.
// Temporaries that were staged but never published are removed by the destructor.
class StagedFiles {
 public:
  StagedFiles() = default;
  ~StagedFiles();
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;

  void stage(const std::string& path, const std::function<void(const std::string& tmp)>& write);
  void stage(const std::string& path, const std::vector<char>& bytes);
  void publish();

 private:
  struct Staged {
    std::string target, tmp;
  };
  std::vector<Staged> staged_;
};

}  // namespace difftrain
