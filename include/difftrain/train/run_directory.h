#pragma once
// Rank 0's side of a run directory, in the order training meets it: the lock; the
// checkpoint to resume from, checked against the config; the directory made ready, with
// its metrics log; then checkpoint files and their retention. Other ranks never touch it.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/train/metrics.h"
#include "difftrain/train/resume.h"
#include "difftrain/train/run_dir_lock.h"

namespace difftrain {

struct TrainOptions {
  bool fresh = false;  // ignore (and remove) the run directory's checkpoints and metrics
  std::string resume;  // resume from this checkpoint instead of RUN/checkpoints/latest.pt
};

class RunDirectory {
 public:
  // Locks RUN (another run may be writing it) and finds the checkpoint to resume from,
  // checked against `config` and `sample_shape`; prints a note for each setting that
  // changed and for a different rank count. Changes nothing in the directory yet.
  RunDirectory(const Config& config, const TrainOptions& options, const std::vector<int64_t>& sample_shape,
               int world_size);
  ~RunDirectory();

  // The checkpoint to resume from; null for a fresh run, and after forget_resume_point().
  const ResumePoint* resume_point() const { return resumed_ ? &*resumed_ : nullptr; }
  void forget_resume_point() { resumed_.reset(); }

  // Removes stale temporary files (and, for --fresh, the old checkpoints and metrics),
  // trims metrics.jsonl to the resume point (the steps after it will be trained again),
  // writes config.yaml, opens metrics.jsonl and records the resume in it.
  void prepare();
  MetricsLog& metrics() { return *metrics_; }

  // Writes `c` as checkpoints/step-N.pt and latest.pt and reads it back; only then are the
  // oldest of this run's own step files beyond train.keep_checkpoints removed.
  void save(Checkpoint c);

  // After a failed set-up: releases the lock, and removes the directory if this run made it.
  void abandon();

 private:
  Config config_;
  TrainOptions options_;
  std::unique_ptr<RunDirLock> lock_;
  std::optional<ResumePoint> resumed_;
  std::vector<ChangedSetting> changes_;
  std::vector<int64_t> retained_;  // this run's step files that retention may prune
  std::unique_ptr<MetricsLog> metrics_;
};

}  // namespace difftrain
