#pragma once
// Where a run continues from, and whether the config it continues under may continue it.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/io/checkpoint.h"

namespace difftrain {

struct ResumePoint {
  std::string path;
  Checkpoint checkpoint;
};

// The checkpoint a run resumes from: `explicit_path` (--resume) when given, which must load;
// otherwise RUN/checkpoints/latest.pt, or, when that is missing or damaged, the newest step
// file that loads and verifies (a note on stderr says which and why). Nothing for a new
// run, or with `fresh`. An Error when checkpoints exist but none loads.
std::optional<ResumePoint> find_resume_point(const std::string& run_dir, const std::string& explicit_path, bool fresh);

// A setting that differs between the checkpoint's config and the resuming one.
struct ChangedSetting {
  std::string key, before, after;
};

// Settings that change the math of training (model, schedule, data, seed, optimizer and
// EMA hyper-parameters) must match: an Error names the key and both values. Those that
// only say how long, how fast or how often may change; they are returned. The example shape
// of the data must match too.
std::vector<ChangedSetting> check_resume_config(const ResumePoint& from, const Config& config,
                                                const std::vector<int64_t>& sample_shape);

}  // namespace difftrain
