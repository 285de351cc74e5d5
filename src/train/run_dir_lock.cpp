#include "difftrain/train/run_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "difftrain/error.h"

namespace difftrain {

namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown host";
  return name;
}

constexpr const char* kNoHolder = "a process that has not written its name yet";

std::string read_holder(int fd) {
  char text[512] = {};
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  std::string holder(text, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
  return holder.empty() ? kNoHolder : holder;
}

// An open-file-description lock (per open file, not per process, so a second lock in the
// same process conflicts too; NFS maps it to a POSIX lock). Older kernels lack it: flock.
// Returns 0, or the errno of the failure.
int try_lock(int fd) {
  struct flock whole {};
  whole.l_type = F_WRLCK;
  whole.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &whole) == 0) return 0;
  if (errno != EINVAL) return errno;
  return ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& run_dir) : run_dir_(run_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  created_dir_ = fs::create_directories(run_dir, ec);
  if (ec) fail("{}: cannot create the run directory: {}", run_dir, ec.message());
  const std::string path = run_dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open the run directory's lock file: {}", path, std::strerror(errno));
  const int error = try_lock(fd_);
  if (error == EAGAIN || error == EACCES || error == EWOULDBLOCK) {
    const std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    fail("{}: another training run is using this run directory ({}); wait for it to end, or choose another run_dir",
         run_dir, holder);
  }
  if (error != 0) {
    // A filesystem without locks (some network mounts): train on, but say so.
    fmt::print(stderr, "difftrain: note: {}: cannot lock ({}); make sure no other run uses this run directory\n",
               path, std::strerror(error));
    return;
  }
  // The lock itself went with its holder (the kernel drops it when the process ends); a
  // holder's record still in the file says that holder ended without releasing it.
  if (const std::string previous = read_holder(fd_); previous != kNoHolder)
    fmt::print(stderr,
               "difftrain: note: {}: the last run here ({}) ended without releasing the run directory (killed?); its "
               "lock is stale, taking it over\n",
               path, previous);
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  const std::string holder =
      fmt::format("pid {} on host {}, started {:%Y-%m-%d %H:%M:%S}\n", ::getpid(), host_name(), local);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, holder.data(), holder.size(), 0) != static_cast<ssize_t>(holder.size()))
    fmt::print(stderr, "difftrain: note: {}: cannot record the lock holder: {}\n", path, std::strerror(errno));
}

void RunDirLock::release_and_remove_if_new() {
  if (!created_dir_) return;
  std::error_code ec;
  std::filesystem::remove(run_dir_ + "/.lock", ec);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::filesystem::remove(run_dir_, ec);  // only if empty
}

RunDirLock::~RunDirLock() {
  if (fd_ < 0) return;
  // An empty record: the next run knows this one ended cleanly. Closing releases the lock.
  // If the truncation fails the record stays, and the next run only notes a stale lock.
  if (::ftruncate(fd_, 0) != 0) fmt::print(stderr, "difftrain: note: {}/.lock: cannot clear: {}\n", run_dir_, std::strerror(errno));
  ::close(fd_);
}

}  // namespace difftrain
