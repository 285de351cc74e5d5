#pragma once
// `difftrain plot`: a run's metrics.jsonl drawn as loss.png (the loss against the step) and
// loss_by_sigma.png (the loss against the noise level, for a few logging windows from
// early to late in training).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace difftrain {

// The training loss of one logging window, binned by log(sigma) (natural log).
struct LossBySigmaBins {
  std::vector<double> log_sigma_edges;  // K+1, increasing
  std::vector<double> loss;             // K; NaN for a bin that saw no example
};

struct LossRecord {
  int64_t step = 0;
  double loss = 0;  // NaN when the window's loss was not finite (null in the file)
  std::optional<LossBySigmaBins> by_sigma;
};

// The loss records of a metrics.jsonl in file order; records that carry no "loss" (events
// such as a resume) are passed over. A torn last line, as a crash mid-append leaves, is
// skipped with a line in `notes`; any other malformed line fails, naming file and line.
// Steps are increasing: a step logged again (a resume from an earlier checkpoint) replaces
// the records from that step on, with a line in `notes`.
std::vector<LossRecord> read_loss_records(const std::string& metrics_path, std::vector<std::string>& notes);

// Draws RUN_DIR/metrics.jsonl into OUT_DIR/loss.png and, when the records carry
// loss_by_sigma, OUT_DIR/loss_by_sigma.png; both land together or neither does. Returns
// the paths written; `notes` gets what was left out and why.
std::vector<std::string> plot_run(const std::string& run_dir, const std::string& out_dir, std::vector<std::string>& notes);

}  // namespace difftrain
