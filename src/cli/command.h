#pragma once
// The `difftrain` command's subcommands. Each file of src/cli/ named for a command adds it to
// the CLI11 app, with its options and help text, and returns what runs it once the arguments
// are parsed (train.cpp adds `bench` too: it trains, untimed then timed); common.cpp holds
// what several share. src/main.cpp lists them. The README's "Commands" section documents each.
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "difftrain/comm/communicator.h"

namespace difftrain::cli {

struct Command {
  CLI::App* app;             // the subcommand: `*app` is true when it was given
  std::function<int()> run;  // its exit status
};

Command add_prepare(CLI::App& app);
Command add_train(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_sample(CLI::App& app);
Command add_schedule(CLI::App& app);
Command add_plot(CLI::App& app);
Command add_classifier(CLI::App& app);
Command add_eval(CLI::App& app);

// ---- shared by the commands -----------------------------------------------------------

// One line on stderr: "difftrain: error: MESSAGE".
void report(const std::string& message);

// "CONFIG.yaml key.sub=value ...": the first word without '=' is the config file.
void split_config_args(const std::vector<std::string>& args, std::string& config, std::vector<std::string>& overrides);

// A CLI11 validator for an integer option: the text as typed must be a decimal integer in
// [lo, hi]; otherwise "must be an integer in [lo, hi], got 'TEXT'". Every integer option
// takes one: CLI11 reads integers with strtoll, which clamps anything beyond int64 to its
// largest value, so that different large seeds would silently draw the same samples and a
// 20-digit step count would silently become another.
CLI::Validator integer_in(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max());

// The exit status of a multi-rank command that failed, and who says why: an agreed
// failure is reported by rank 0, a shared one (comm/agreement.h) by the rank it came from;
// any other failure may leave peers inside a collective, so it aborts the job.
int exit_after_failure(std::exception_ptr failure, Communicator& comm);

// For a first word that is no command: the nearest command, if it is a slip of the keyboard.
std::string unknown_command_message(const std::string& word, const std::vector<std::string>& commands);

}  // namespace difftrain::cli
