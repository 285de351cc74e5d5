#pragma once
// Helpers shared by the tests: scratch directories and small HDF5 files.
#include <gtest/gtest.h>

#include <string>

#include <torch/torch.h>

#include "difftrain/error.h"

namespace difftrain::test {

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs a shell command; returns its exit status and (stdout+stderr) text.
struct CommandResult {
  int status;
  std::string output;
};
CommandResult run_command(const std::string& command);

// The message of the difftrain::Error that `f` throws; a test failure if it throws
// anything else or nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const difftrain::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-difftrain error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

}  // namespace difftrain::test

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE(std::string(message).find(text), std::string::npos) << "message: " << (message) << "\nlacks: " << (text)
