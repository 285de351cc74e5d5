#pragma once
// Helpers shared by the tests: scratch directories and small HDF5 files.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include <torch/torch.h>

#include "difftrain/core/diffusion.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"

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

// `module` (a holder or a shared_ptr) with its parameters made views of one flat buffer, as
// the trainer's set-up does before an optimizer or EMA may use them.
template <typename Module>
Module flattened(Module module) {
  difftrain::flatten_storage(module->parameters());
  return module;
}

}  // namespace difftrain::test

namespace difftrain {

// The batch mean of training_loss_per_example: the loss of the reference's training loop.
inline torch::Tensor training_loss(Denoiser& model, Parameterization p, const TrainSample& s) {
  return training_loss_per_example(model, p, s).mean();
}

// Euclidean distance from each of `points` [n, 2] to the continuous spiral the swissroll's
// points lie on (t from tmin to tmin + tmax, as swissroll_points), on a fine grid of t: [n].
torch::Tensor swissroll_curve_distance(const torch::Tensor& points, double tmin = M_PI / 2, double tmax = 5 * M_PI);

}  // namespace difftrain

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE(std::string(message).find(text), std::string::npos) << "message: " << (message) << "\nlacks: " << (text)
