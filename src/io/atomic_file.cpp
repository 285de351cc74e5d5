#include "difftrain/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "difftrain/error.h"

namespace difftrain {
namespace fs = std::filesystem;

namespace {

fs::path directory_of(const std::string& path) {
  const fs::path target(path);
  return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

// `.NAME.KIND.PID` beside the target: hidden, and recognisable as ours after a crash.
std::string sibling(const std::string& path, const char* kind) {
  return (directory_of(path) / fmt::format(".{}.{}.{}", fs::path(path).filename().string(), kind, ::getpid())).string();
}

void fsync_path(const std::string& path, const std::string& target) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open the written file to sync it: {}", target, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) fail("{}: cannot sync to disk: {}", target, std::strerror(saved));
}

// Some filesystems cannot sync a directory; the rename has happened either way.
void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

bool exists_as_entry(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

StagedFiles::~StagedFiles() {
  for (const auto& s : staged_) ::unlink(s.tmp.c_str());
}

void StagedFiles::stage(const std::string& path, const std::function<void(const std::string&)>& write) {
  for (const auto& s : staged_)
    if (s.target == path) fail("{}: staged twice in one write", path);
  const fs::path dir = directory_of(path);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory {}: {}", path, dir.string(), ec.message());
  const std::string tmp = sibling(path, "tmp");
  try {
    write(tmp);
    fsync_path(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  staged_.push_back({path, tmp});
}

void StagedFiles::stage(const std::string& path, const std::vector<char>& bytes) {
  stage(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("{}: cannot write: {}", path, std::strerror(errno));
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int saved = n < 0 ? errno : ENOSPC;
        ::close(fd);
        fail("{}: cannot write: {}", path, std::strerror(saved));
      }
      done += static_cast<std::size_t>(n);
    }
    if (::close(fd) != 0) fail("{}: cannot write: {}", path, std::strerror(errno));
  });
}

void StagedFiles::publish() {
  // With several files, a rename that fails after others succeeded must be undone: keep a
  // hard link to each previous target (no copy, no space) until all are in place.
  std::vector<std::string> backups(staged_.size());
  std::vector<bool> existed(staged_.size());
  if (staged_.size() > 1) {
    for (std::size_t i = 0; i < staged_.size(); ++i) {
      existed[i] = exists_as_entry(staged_[i].target);
      if (!existed[i]) continue;
      backups[i] = sibling(staged_[i].target, "bak");
      ::unlink(backups[i].c_str());
      if (::link(staged_[i].target.c_str(), backups[i].c_str()) != 0) backups[i].clear();  // cannot undo this one
    }
  }
  auto drop_backups = [&] {
    for (const auto& b : backups)
      if (!b.empty()) ::unlink(b.c_str());
  };
  for (std::size_t i = 0; i < staged_.size(); ++i) {
    if (std::rename(staged_[i].tmp.c_str(), staged_[i].target.c_str()) == 0) continue;
    const std::string reason = std::strerror(errno);
    for (std::size_t j = 0; j < i; ++j) {
      if (!backups[j].empty()) std::rename(backups[j].c_str(), staged_[j].target.c_str());
      else if (!existed[j]) ::unlink(staged_[j].target.c_str());
    }
    drop_backups();
    fail("{}: cannot rename into place: {}", staged_[i].target, reason);
  }
  drop_backups();
  std::set<fs::path> dirs;
  for (const auto& s : staged_) dirs.insert(directory_of(s.target));
  staged_.clear();
  for (const auto& dir : dirs) fsync_directory(dir);
}

void write_file_atomically(const std::string& path, const std::vector<char>& bytes) {
  StagedFiles file;
  file.stage(path, bytes);
  file.publish();
}

void write_file_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, std::vector<char>(text.begin(), text.end()));
}

}  // namespace difftrain
