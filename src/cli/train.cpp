// `difftrain train` and `difftrain bench`: the same set-up (config, communicator, threads,
// trainer, the ranks' agreement), then a run or timed steps.
#include <cstdio>

#include <fmt/format.h>

#include "cli/command.h"
#include "difftrain/build_info.h"
#include "difftrain/comm/agreement.h"
#include "difftrain/config.h"
#include "difftrain/error.h"
#include "difftrain/train/bench.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/threads.h"
#include "difftrain/train/trainer.h"

namespace difftrain::cli {

namespace {

struct BenchArgs {
  int64_t steps = 50, warmup = 5;
};
// Steps are counted in int64 with the warm-up: far beyond any benchmark, far below overflow.
constexpr int64_t kMaxBenchSteps = 1'000'000'000;

// `difftrain bench`: the same set-up as training, then timed steps instead of a run.
int bench(Trainer& trainer, Communicator& comm, const BenchArgs& args, int64_t global_batch, int threads) {
  double wall_s = 0;
  const auto split = trainer.bench(args.steps, args.warmup, wall_s);
  const RankBench mine{wall_s / static_cast<double>(args.steps) * 1e3, split, peak_rss_mb(), peak_gpu_mb(comm.device())};
  BenchReport report;
  report.steps = args.steps, report.warmup = args.warmup, report.global_batch = global_batch;
  report.model_params = trainer.fingerprint().at(2), report.threads = threads, report.backend = comm.backend();
  report.ranks = gather_rank_bench(comm, mine);
  if (comm.rank() == 0) fmt::print("{}{}\n", bench_table(report), bench_json(report).dump());
  return 0;
}

// Set-up failures are agreed on before any other collective, so no rank waits forever:
// the lowest failing rank reports, every rank exits 1. Once training runs, a rank-local
// failure rides in the step's all-reduce (RankError on that rank, PeerError on the
// others), so all ranks still exit together; only a failure outside that path aborts.
int cmd_train(const std::vector<std::string>& args, const TrainOptions& options, const BenchArgs* bench_args = nullptr) {
  install_stop_signal_handlers();
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<Trainer> trainer;
  ThreadPlan threads;
  std::string error;
  int64_t global_batch = 0;
  try {
    std::string config_path;
    std::vector<std::string> overrides;
    split_config_args(args, config_path, overrides);
    const Config config = load_config(config_path, overrides);
    comm = make_communicator(config.dist.backend, config.dist.timeout_s);
    threads = apply_threads(static_cast<int>(config.train.threads), comm->local_size());
    trainer = std::make_unique<Trainer>(config, *comm, options);
    global_batch = config.train.batch_size;
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  if (!comm) comm = make_communicator(Backend::mpi);
  const int rank = comm->rank();
  // One collective agrees on success and on what every rank sees: the fingerprint and its
  // complement ride along (the maximum of ~x is ~ the minimum of x).
  const std::vector<int64_t> fp = trainer ? trainer->fingerprint() : std::vector<int64_t>{0, 0, 0};
  std::vector<int64_t> seen(fp);
  for (auto v : fp) seen.push_back(~v);
  const int64_t failing = lowest_failing_rank(*comm, !error.empty(), seen);
  if (failing >= 0) {
    if (failing == rank) report(rank == 0 ? error : fmt::format("rank {}: {}", rank, error));
    return 1;
  }
  static const char* what[] = {"examples in the dataset", "values per example", "model parameters"};
  for (std::size_t i = 0; i < fp.size(); ++i) {
    const int64_t most = seen[i], least = ~seen[fp.size() + i];
    if (most != least) {
      if (rank == 0)
        report(fmt::format("the ranks disagree on the number of {} ({} to {}): every rank must read the same data",
                           what[i], least, most));
      return 1;
    }
  }
  if (rank == 0) {
    fmt::print("difftrain 0.1.0, built with {}\n", build_description());
    fmt::print("threads: {} intra-op thread{} per rank ({}; train.threads or OMP_NUM_THREADS to change){}\n",
               threads.threads, threads.threads == 1 ? "" : "s", threads.reason,
               threads.blas_single ? "; OpenBLAS on the calling thread (OPENBLAS_NUM_THREADS to change)" : "");
  }
  try {
    const std::string placement = trainer->placement();
    if (rank == 0) fmt::print("{}", placement);
    std::fflush(stdout);  // before the progress lines
    if (bench_args) return bench(*trainer, *comm, *bench_args, global_batch, threads.threads);
    trainer->synchronize();
    const auto result = trainer->run();
    if (rank == 0 && result.preempted)
      fmt::print(stderr, "difftrain: stopped by a signal at step {}; checkpoint written, run again to resume\n",
                 result.final_step);
    else if (rank == 0)
      fmt::print("trained to step {}{}; {} steps skipped as non-finite\n", result.final_step,
                 result.final_step > result.start_step ? fmt::format(", loss {:.4f} over the last window", result.last_loss)
                                                       : std::string(" (nothing left to train)"),
                 result.skipped_steps);
    return result.preempted ? kExitPreempted : 0;
  } catch (...) {
    return exit_after_failure(std::current_exception(), *comm);
  }
}

}  // namespace

Command add_train(CLI::App& app) {
  auto args = std::make_shared<std::vector<std::string>>();
  auto options = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Train; under mpirun/srun one rank per GPU or CPU slot");
  cmd->add_option("CONFIG_AND_OVERRIDES", *args, "CONFIG.yaml, then any key.sub=value overrides");
  cmd->add_flag("--fresh", options->fresh,
                "Start over: remove the run directory's checkpoints and metrics instead of resuming");
  cmd->add_option("--resume", options->resume, "Resume from this checkpoint instead of RUN/checkpoints/latest.pt");
  const std::string keys = "\nConfig keys and their defaults (override any as key.sub=value):\n" +
                           to_yaml(parse_config("", "defaults")) + "\nKeys that take one of a few names:\n" +
                           describe_choices();
  cmd->footer(keys +
              "\nA run directory that holds checkpoints is resumed from latest.pt, or from the newest step file that\n"
              "verifies (model, EMA, optimizer, step, data position; random streams are recomputed from the step).\n"
              "Under mpirun/srun each rank takes train.batch_size / ranks examples a step.\n"
              "Exit status: 0 done; 1 error (one line names it); 75 stopped by SIGTERM/SIGUSR1/SIGINT/SIGHUP after\n"
              "writing a checkpoint (run the same command again to resume); 128 + signal stopped during set-up or\n"
              "by a second Ctrl-C.");
  return {cmd, [args, options] { return cmd_train(*args, *options); }};
}

Command add_bench(CLI::App& app) {
  auto args = std::make_shared<std::vector<std::string>>();
  auto bench_args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand(
      "bench", "Time the training step (per phase, every rank), samples/s and peak memory; writes nothing");
  cmd->add_option("CONFIG_AND_OVERRIDES", *args, "CONFIG.yaml, then any key.sub=value overrides");
  cmd->add_option("--steps", bench_args->steps, "Timed steps")->check(integer_in(1, kMaxBenchSteps))->capture_default_str();
  cmd->add_option("--warmup", bench_args->warmup, "Untimed steps first")
      ->check(integer_in(0, kMaxBenchSteps))
      ->capture_default_str();
  cmd->footer(
      "\nRuns the real training step (data, forward and backward, gradient all-reduce, optimizer, EMA, a logging\n"
      "step's record) from the config's data and model, without a run directory, checkpoints or sample grids.\n"
      "Under mpirun every rank is timed; the last line is JSON: ranks, samples_per_s (all ranks), step_ms and\n"
      "split_ms (data, compute, sync, optim, ema, log) of the slowest rank, peak_rss_mb, per_rank.");
  return {cmd, [args, bench_args] { return cmd_train(*args, TrainOptions{}, bench_args.get()); }};
}

}  // namespace difftrain::cli
