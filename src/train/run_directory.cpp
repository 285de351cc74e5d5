#include "difftrain/train/run_directory.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"

namespace difftrain {
namespace fs = std::filesystem;

RunDirectory::RunDirectory(const Config& config, const TrainOptions& options, const std::vector<int64_t>& sample_shape,
                           int world_size)
    : config_(config), options_(options) {
  lock_ = std::make_unique<RunDirLock>(config_.run_dir);
  try {
    auto point = find_resume_point(config_.run_dir, options_.resume, options_.fresh);
    if (!point) return;
    const Checkpoint& c = point->checkpoint;
    changes_ = check_resume_config(*point, config_, sample_shape);
    if (c.step > config_.train.steps)
      fail("{}: is at step {}, beyond train.steps={}; raise train.steps to train longer, or use --fresh", point->path,
           c.step, config_.train.steps);
    // Said on every resume (find_resume_point already said it for a fallback): under a
    // scheduler's requeue this line shows where the new allocation took over.
    std::vector<std::string> lines;
    for (const auto& ch : changes_) lines.push_back(fmt::format("{} {} -> {}", ch.key, ch.before, ch.after));
    const bool fell_back = options_.resume.empty() && fs::path(point->path).filename() != "latest.pt";
    if (!fell_back || !lines.empty())
      fmt::print(stderr, "difftrain: note: resuming {} at step {}{}\n", point->path, c.step,
                 lines.empty() ? std::string() : fmt::format(" with changed settings: {}", fmt::join(lines, ", ")));
    if (c.world_size != world_size)
      fmt::print(stderr,
                 "difftrain: note: {} was written by {} rank(s), resuming on {}: training continues, but not bit for "
                 "bit as an uninterrupted run would\n",
                 point->path, c.world_size, world_size);
    if (c.stream_scheme != kStreamScheme)
      fmt::print(stderr,
                 "difftrain: note: {} drew its random numbers as '{}', this build draws them as '{}': training "
                 "continues, but not bit for bit as an uninterrupted run would\n",
                 point->path, c.stream_scheme, kStreamScheme);
    // Retention may prune the step files this run's lineage wrote here, and only those.
    std::error_code ec;
    const auto here = fs::weakly_canonical(fs::path(config_.run_dir) / "checkpoints", ec);
    if (fs::weakly_canonical(point->path, ec).parent_path() == here) retained_ = c.retained_steps;
    resumed_ = std::move(point);
  } catch (...) {
    abandon();
    throw;
  }
}

RunDirectory::~RunDirectory() = default;

void RunDirectory::abandon() {
  if (lock_) lock_->release_and_remove_if_new(), lock_.reset();
}

void RunDirectory::prepare() {
  const fs::path run(config_.run_dir), checkpoints = run / "checkpoints";
  fs::create_directories(checkpoints);
  for (const auto& entry : fs::directory_iterator(checkpoints)) {
    const std::string name = entry.path().filename().string();
    const bool stale_temp = name.rfind('.', 0) == 0 && name.find(".tmp.") != std::string::npos;
    if (stale_temp || (options_.fresh && entry.path().extension() == ".pt")) fs::remove(entry.path());
  }
  const fs::path metrics = run / "metrics.jsonl";
  if (options_.fresh || !resumed_) {
    fs::remove(metrics);
  } else if (fs::exists(metrics)) {
    keep_metrics_through(metrics.string(), resumed_->checkpoint.step);
  }
  write_file_atomically((run / "config.yaml").string(), to_yaml(config_));
  metrics_ = std::make_unique<MetricsLog>(config_.run_dir);
  if (!resumed_) return;
  nlohmann::ordered_json changed = nlohmann::ordered_json::object();
  for (const auto& c : changes_) changed[c.key] = {{"from", c.before}, {"to", c.after}};
  metrics_->write(nlohmann::ordered_json{{"step", resumed_->checkpoint.step},
                                         {"event", "resume"},
                                         {"checkpoint", resumed_->path},
                                         {"changed", changed}});
}

void RunDirectory::save(Checkpoint c) {
  std::vector<int64_t> retained = retained_, pruned;
  if (std::find(retained.begin(), retained.end(), c.step) == retained.end()) retained.push_back(c.step);
  std::sort(retained.begin(), retained.end());
  const auto keep = static_cast<std::size_t>(config_.train.keep_checkpoints);
  while (keep > 0 && retained.size() > keep) pruned.push_back(retained.front()), retained.erase(retained.begin());
  // The checkpoint lists the files being pruned too: a run killed after writing it but
  // before removing them leaves them to the run that resumes from it.
  c.retained_steps = retained;
  c.retained_steps.insert(c.retained_steps.begin(), pruned.begin(), pruned.end());
  const std::string step_file = checkpoint_path(config_.run_dir, c.step);
  save_checkpoint({step_file, latest_checkpoint_path(config_.run_dir)}, c);
  load_checkpoint(step_file);
  retained_ = retained;
  for (int64_t old : pruned) fs::remove(checkpoint_path(config_.run_dir, old));
}

}  // namespace difftrain
