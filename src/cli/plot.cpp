// `difftrain plot RUN_DIR`: a run's loss curve and loss per noise level as PNG.
#include <fmt/format.h>

#include "cli/command.h"
#include "difftrain/plot/plot_run.h"

namespace difftrain::cli {

Command add_plot(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* plot = app.add_subcommand("plot", "Draw a run's loss curve and loss per noise level as PNG");
  plot->add_option("RUN_DIR", *run_dir, "Run directory (reads its metrics.jsonl)")->required();
  plot->add_option("--out", *out, "Directory for loss.png and loss_by_sigma.png (default: RUN_DIR)");
  return {plot, [run_dir, out] {
            std::vector<std::string> notes;
            const auto written = plot_run(*run_dir, out->empty() ? *run_dir : *out, notes);
            for (const auto& n : notes) fmt::print(stderr, "difftrain: note: {}\n", n);
            for (const auto& w : written) fmt::print("wrote {}\n", w);
            return 0;
          }};
}

}  // namespace difftrain::cli
