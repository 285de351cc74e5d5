// The `difftrain` command: the subcommands (src/cli/, one file each) on one CLI11 app. The
// README's "Commands" section documents each.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/command.h"
#include "difftrain/build_info.h"
#include "difftrain/error.h"

namespace {

// LibTorch frees a step's activations and allocates them again the next step. Blocks above
// glibc's mmap threshold (128 KiB at first) are each a fresh mapping, page-faulted in and
// unmapped again every step: a sixth of an image model's step on the CPU. Kept in the heap,
// the next step reuses the same pages. MALLOC_MMAP_THRESHOLD_ in the environment chooses
// otherwise.
void reuse_freed_memory() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr) return;
  // Older glibc refuses thresholds above 32 MiB (HEAP_MAX_SIZE / 2). A refused call changes
  // nothing; setting the trim threshold alone would freeze the mmap threshold at 128 KiB.
  for (const int threshold : {256 << 20, 32 << 20})
    if (mallopt(M_MMAP_THRESHOLD, threshold) == 1) {
      mallopt(M_TRIM_THRESHOLD, 2 * threshold);
      return;
    }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace difftrain;
  reuse_freed_memory();
  CLI::App app{"difftrain: train diffusion models on one or many ranks (one per GPU or CPU slot)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "difftrain 0.1.0, built with " + build_description());
  const std::vector<cli::Command> commands{cli::add_prepare(app),  cli::add_train(app),    cli::add_bench(app),
                                          cli::add_sample(app),   cli::add_schedule(app), cli::add_plot(app),
                                          cli::add_classifier(app), cli::add_eval(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::vector<std::string> names;
    for (const auto& c : commands) names.push_back(c.app->get_name());
    const std::string first = argc > 1 ? argv[1] : "";
    if (!first.empty() && first[0] != '-' && std::find(names.begin(), names.end(), first) == names.end()) {
      cli::report(cli::unknown_command_message(first, names));
      return 1;
    }
    cli::report(fmt::format("{} (see difftrain --help)", e.what()));
    return 1;
  }
  try {
    for (const auto& c : commands)
      if (*c.app) return c.run();
  } catch (const std::exception& e) {  // difftrain::Error, and anything LibTorch throws
    cli::report(one_line(e));
    return 1;
  }
  return 0;
}
