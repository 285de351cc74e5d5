#include "difftrain/train/resume.h"

#include <algorithm>
#include <filesystem>
#include <regex>

#include <fmt/format.h>

#include "difftrain/error.h"
#include "difftrain/io/input_file.h"

namespace difftrain {
namespace fs = std::filesystem;

namespace {

// RUN/checkpoints/step-NNNNNNN.pt, newest first.
std::vector<std::string> step_files_newest_first(const std::string& run_dir) {
  static const std::regex step_file(R"(step-\d+\.pt)");
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec))
    if (std::regex_match(entry.path().filename().string(), step_file)) files.push_back(entry.path().string());
  std::sort(files.rbegin(), files.rend());  // zero-padded: name order is step order
  return files;
}

}  // namespace

std::optional<ResumePoint> find_resume_point(const std::string& run_dir, const std::string& explicit_path, bool fresh) {
  if (fresh) return std::nullopt;
  if (!explicit_path.empty()) {
    if (!input_exists(explicit_path)) fail("{}: no such checkpoint (--resume)", explicit_path);
    return ResumePoint{explicit_path, load_checkpoint(explicit_path)};
  }
  const std::string latest = latest_checkpoint_path(run_dir);
  std::vector<std::string> candidates;
  if (input_exists(latest)) candidates.push_back(latest);
  const auto steps = step_files_newest_first(run_dir);
  candidates.insert(candidates.end(), steps.begin(), steps.end());
  if (candidates.empty()) return std::nullopt;  // a new run

  std::vector<std::string> rejected;  // "file: why", in the order tried
  if (candidates.front() != latest) rejected.push_back(fmt::format("{}: missing", latest));
  for (const auto& path : candidates) {
    try {
      ResumePoint point{path, load_checkpoint(path)};
      if (!rejected.empty())
        fmt::print(stderr, "difftrain: note: resuming from {} (step {}), the newest checkpoint that verifies; {}\n",
                   path, point.checkpoint.step, fmt::join(rejected, "; "));
      return point;
    } catch (const Error& e) {
      rejected.push_back(e.what());
    }
  }
  fail("{}/checkpoints: no checkpoint loads ({}); move them away or use --fresh to start over", run_dir,
       fmt::join(rejected, "; "));
}

std::vector<ChangedSetting> check_resume_config(const ResumePoint& from, const Config& config,
                                                const std::vector<int64_t>& sample_shape) {
  if (from.checkpoint.sample_shape != sample_shape)
    fail("{}: was trained on examples of shape {}, the data ({}) has {}; use --fresh to start over, or another run_dir",
         from.path, c10::IntArrayRef(from.checkpoint.sample_shape), config.data.path, c10::IntArrayRef(sample_shape));
  const Config saved = parse_config(from.checkpoint.config_yaml, from.path + " (config)");
  const auto now = flatten(config), then = flatten(saved);
  std::vector<ChangedSetting> changed;
  for (std::size_t i = 0; i < now.size(); ++i) {
    const auto& [key, value] = now[i];
    if (value == then[i].second) continue;
    if (!may_change_on_resume(key))
      fail("{}: was trained with {} = {}, this config has {}; use --fresh to start over, or another run_dir", from.path,
           key, then[i].second, value);
    changed.push_back({key, then[i].second, value});
  }
  return changed;
}

}  // namespace difftrain
