// The `difftrain` command: parses arguments and calls the library. The README's "Commands"
// section documents each subcommand.
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "difftrain/comm/agreement.h"
#include "difftrain/build_info.h"
#include "difftrain/config.h"
#include "difftrain/data/fashion_mnist.h"
#include "difftrain/data/image_folder.h"
#include "difftrain/data/prepare.h"
#include "difftrain/comm/communicator.h"
#include "difftrain/error.h"
#include "difftrain/eval/classifier.h"
#include "difftrain/eval/evaluate.h"
#include "difftrain/plot_run.h"
#include "difftrain/sample.h"
#include "difftrain/schedule.h"
#include "difftrain/train/bench.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/threads.h"
#include "difftrain/train/trainer.h"

namespace difftrain {
namespace {

void report(const std::string& message) { fmt::print(stderr, "difftrain: error: {}\n", message); }

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

// "CONFIG.yaml key.sub=value ...": the first word without '=' is the config file.
void split_config_args(const std::vector<std::string>& args, std::string& config, std::vector<std::string>& overrides) {
  for (const auto& a : args) {
    if (a.find('=') == std::string::npos && config.empty() && overrides.empty()) config = a;
    else if (a.find('=') == std::string::npos) fail("'{}': expected key.sub=value (only one config file)", a);
    else overrides.push_back(a);
  }
}

// Edits (insertions, deletions, substitutions, swaps of neighbours) from a to b.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// CLI11 reports a misspelled command as an unexpected argument (or a missing command),
// which does not say that the word was taken for a command. Name it, and the nearest one.
std::string unknown_command_message(const std::string& word, const std::vector<std::string>& commands) {
  std::string nearest;
  std::size_t best = 3;  // farther than two edits is no longer a slip of the keyboard
  if (word.size() < 64)
    for (const auto& c : commands)
      if (const auto d = edit_distance(word, c); d < best) best = d, nearest = c;
  return fmt::format("unknown command '{}' ({}commands: {})", abbreviate(word),
                     nearest.empty() ? "" : fmt::format("did you mean '{}'?; ", nearest), fmt::join(commands, ", "));
}

// CLI11 reads integers with strtoll, which clamps anything beyond int64 to its largest
// value: different large seeds would silently draw the same samples.
std::string check_seed(std::string& text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || stop != end || value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return fmt::format("must be an integer in [0, {}], got '{}'", std::numeric_limits<int64_t>::max(), abbreviate(text));
  return "";
}

// JSON has no NaN or Inf: a schedule holding one is refused (validate_sigmas has already
// refused such a config) rather than printed as bare `inf`. Every finite float32 prints as
// its 9-significant-digit decimal, a valid JSON number that reads back to the same float32.
// (nlohmann's own number printer would not keep that form: it prints the double it is given
// in up to 17 digits, and a float in its shortest form.)
std::string json_array(const torch::Tensor& t, const char* name) {
  const auto c = t.to(torch::kFloat32).contiguous();
  std::vector<std::string> values;
  for (int64_t i = 0; i < c.numel(); ++i) {
    const float v = c.data_ptr<float>()[i];
    if (!std::isfinite(v)) fail("schedule: {}[{}] = {} is not finite, which JSON cannot hold", name, i, v);
    values.push_back(fmt::format("{:.9g}", v));
  }
  return fmt::format("[{}]", fmt::join(values, ", "));
}

int cmd_schedule(const std::vector<std::string>& args, std::optional<int64_t> steps) {
  std::string config_path;
  std::vector<std::string> overrides;
  split_config_args(args, config_path, overrides);
  const Config config = load_config(config_path, overrides);
  const Schedule schedule = make_schedule(config.schedule);
  // The type string through nlohmann, which escapes whatever it holds.
  std::string out = fmt::format("{{\"type\": {}, \"sigmas\": {}", nlohmann::json(schedule.type()).dump(),
                                json_array(schedule.sigmas(), "sigmas"));
  if (steps) out += fmt::format(", \"sample_sigmas\": {}", json_array(schedule.sample_sigmas(*steps), "sample_sigmas"));
  fmt::print("{}}}\n", out);
  return 0;
}

struct PrepareArgs {
  std::string name, out, dataset = "x";
  int64_t shards = 1;
  std::vector<std::string> from;
  std::optional<std::string> split;
  std::optional<int64_t> size;
  std::optional<int> channels;
};

int cmd_prepare(const PrepareArgs& a) {
  // An option of another dataset is a mistake, not something to ignore.
  const auto only_for = [&](bool given, const char* option, std::initializer_list<const char*> names) {
    if (given && std::find(names.begin(), names.end(), a.name) == names.end())
      fail("prepare {}: {} is for {}", a.name, option, fmt::join(names, ", "));
  };
  only_for(!a.from.empty(), "--from", {"reshard", "fashion-mnist", "image-folder"});
  only_for(a.split.has_value(), "--split", {"fashion-mnist"});
  only_for(a.size.has_value(), "--size", {"image-folder"});
  only_for(a.channels.has_value(), "--channels", {"image-folder"});
  if ((a.name == "fashion-mnist" || a.name == "image-folder") && a.from.size() > 1)
    fail("prepare {}: --from takes one directory, got {}", a.name, a.from.size());
  std::vector<std::string> written;
  if (a.name == "swissroll") {
    written = prepare_swissroll(a.out, a.shards);
  } else if (a.name == "reshard") {
    written = prepare_reshard(a.from, a.out, a.shards, a.dataset);
  } else if (a.name == "fashion-mnist") {
    written = prepare_fashion_mnist(a.out, a.shards, a.split.value_or("train"),
                                    a.from.empty() ? kFashionMnistDir : a.from[0]);
  } else if (a.name == "image-folder") {
    if (a.from.empty()) fail("prepare image-folder: give the folder of class subfolders with --from");
    if (!a.size) fail("prepare image-folder: give the output image size with --size");
    written = prepare_image_folder(a.from[0], a.out, a.shards, {*a.size, a.channels.value_or(0)});
  } else {
    fail("prepare: unknown dataset '{}' (expected swissroll, reshard, fashion-mnist or image-folder)", a.name);
  }
  fmt::print("wrote {} shard{} to {}\n", written.size(), written.size() == 1 ? "" : "s", a.out);
  return 0;
}

struct BenchArgs {
  int64_t steps = 50, warmup = 5;
};

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

// The exit status of a multi-rank command that failed, and who says why: an agreed
// failure is reported by rank 0, a shared one (comm/agreement.h) by the rank it came from;
// any other failure may leave peers inside a collective, so it aborts the job.
int exit_after_failure(std::exception_ptr failure, Communicator& comm) {
  try {
    std::rethrow_exception(failure);
  } catch (const AgreedError& e) {
    if (comm.rank() == 0) report(e.what());
  } catch (const PeerError&) {
  } catch (const RankError& e) {
    report(e.what());
  } catch (const std::exception& e) {
    if (comm.size() == 1) {
      report(one_line(e));
      return 1;
    }
    report(fmt::format("rank {}: {}", comm.rank(), one_line(e)));
    comm.abort(1);
  }
  return 1;
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
  if (!comm) comm = make_communicator("mpi");
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
    std::fflush(stdout);  // before the progress lines
  }
  try {
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

int cmd_classifier(const ClassifierOptions& options, const std::string& out) {
  const auto start = std::chrono::steady_clock::now();
  require_writable_classifier_path(out);
  const auto trained = train_classifier(options, [](const EpochReport& e) {
    fmt::print(stderr, "classifier: epoch {}/{}: loss {:.4f}, {:.0f} s\n", e.epoch, e.epochs, e.loss, e.seconds);
  });
  save_classifier(out, trained);
  nlohmann::ordered_json j;
  j["test_accuracy"] = trained.test_accuracy;
  j["epochs"] = trained.epochs;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  j["out"] = out;
  fmt::print("{}\n", j.dump());
  return 0;
}

// Every rank evaluates its share; run_eval shares any rank's failure with all of them, so
// that all exit 1 together: the failing rank reports (rank 0 when all fail alike).
int cmd_eval(const EvalOptions& options) {
  auto comm = make_communicator("mpi");
  try {
    const auto result = run_eval(options, *comm);
    if (comm->rank() == 0) fmt::print("{}\n", to_json(result).dump());
    return 0;
  } catch (...) {
    return exit_after_failure(std::current_exception(), *comm);
  }
}

}  // namespace
}  // namespace difftrain

int main(int argc, char** argv) {
  using namespace difftrain;
  reuse_freed_memory();
  CLI::App app{"difftrain: train diffusion models on one or many ranks (one per GPU or CPU slot)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "difftrain 0.1.0, built with " + build_description());

  auto* prepare = app.add_subcommand("prepare", "Write a sharded HDF5 dataset");
  PrepareArgs pa;
  prepare->add_option("NAME", pa.name,
                      "swissroll (the toy data), reshard (your own HDF5 files), fashion-mnist, or image-folder "
                      "(one subfolder of images per class)")
      ->required();
  prepare->add_option("--out", pa.out, "Output directory for shard-NNNNN.h5 files")->required();
  prepare->add_option("--shards", pa.shards, "Number of shard files")->capture_default_str();
  prepare->add_option("--from", pa.from,
                      "reshard: input HDF5 files (or globs, or directories); fashion-mnist: the IDX files' directory "
                      "(default /usr/share/datasets/fashion-mnist); image-folder: the folder of class subfolders");
  prepare->add_option("--dataset", pa.dataset, "reshard: name of the dataset to copy")->capture_default_str();
  prepare->add_option("--split", pa.split, "fashion-mnist: train (60000 images, the default) or test (10000)")
      ->check(CLI::IsMember({"train", "test"}));
  prepare->add_option("--size", pa.size, "image-folder: centre-crop each image to a square and resize it to SIZE x SIZE");
  prepare->add_option("--channels", pa.channels,
                      "image-folder: 1 (grey) or 3 (RGB); default RGB if any image is stored in colour, else grey")
      ->check(CLI::IsMember({1, 3}));

  auto* train = app.add_subcommand("train", "Train; under mpirun/srun one rank per GPU or CPU slot");
  std::vector<std::string> train_args;
  TrainOptions train_options;
  train->add_option("CONFIG_AND_OVERRIDES", train_args, "CONFIG.yaml, then any key.sub=value overrides");
  train->add_flag("--fresh", train_options.fresh,
                  "Start over: remove the run directory's checkpoints and metrics instead of resuming");
  train->add_option("--resume", train_options.resume, "Resume from this checkpoint instead of RUN/checkpoints/latest.pt");
  const std::string keys = "\nConfig keys and their defaults (override any as key.sub=value):\n" + to_yaml(parse_config("", "defaults"));
  train->footer(keys +
                "\nA run directory that holds checkpoints is resumed from latest.pt, or from the newest step file that\n"
                "verifies (model, EMA, optimizer, step, data position; random streams are recomputed from the step).\n"
                "Under mpirun/srun each rank takes train.batch_size / ranks examples a step.\n"
                "Exit status: 0 done; 1 error (one line names it); 75 stopped by SIGTERM/SIGUSR1/SIGINT/SIGHUP after\n"
                "writing a checkpoint (run the same command again to resume); 128 + signal stopped during set-up or\n"
                "by a second Ctrl-C.");

  auto* bench_cmd = app.add_subcommand(
      "bench", "Time the training step (per phase, every rank), samples/s and peak memory; writes nothing");
  std::vector<std::string> bench_config_args;
  BenchArgs bench_args;
  bench_cmd->add_option("CONFIG_AND_OVERRIDES", bench_config_args, "CONFIG.yaml, then any key.sub=value overrides");
  bench_cmd->add_option("--steps", bench_args.steps, "Timed steps")->capture_default_str();
  bench_cmd->add_option("--warmup", bench_args.warmup, "Untimed steps first")->capture_default_str();
  bench_cmd->footer(
      "\nRuns the real training step (data, forward and backward, gradient all-reduce, optimizer, EMA, a logging\n"
      "step's record) from the config's data and model, without a run directory, checkpoints or sample grids.\n"
      "Under mpirun every rank is timed; the last line is JSON: ranks, samples_per_s (all ranks), step_ms and\n"
      "split_ms (data, compute, sync, optim, ema, log) of the slowest rank, peak_rss_mb, per_rank.");

  auto* sample = app.add_subcommand("sample", "Draw samples from a checkpoint");
  SampleOptions so;
  std::string weights = "ema";
  sample->add_option("--checkpoint", so.checkpoint, "Checkpoint file (.pt)")->required();
  sample->add_option("--out", so.out, "Output HDF5 file (dataset 'samples')")->required();
  sample->add_option("--n", so.n, "Number of samples (default: the config's sample.n)");
  sample->add_option("--steps", so.steps, "Sampling steps (default: sample.steps)");
  sample->add_option("--gam", so.gam, "gamma: 1 for DDPM/DDIM, 2 accelerated (default: sample.gam)");
  sample->add_option("--mu", so.mu, "mu in [0, 1): 0.5 DDPM, 0 DDIM (default: sample.mu)");
  sample->add_option("--seed", so.seed, "Seed of the sampling noise, in [0, 2^63-1]")
      ->check(CLI::Validator(check_seed, "SEED"))
      ->capture_default_str();
  sample->add_option("--class", so.label, "Class of every sample, or 'all' (each class in turn, one per grid row); "
                                          "conditional models (default: sample.class)");
  sample->add_option("--cfg-scale", so.cfg_scale,
                     "Classifier-free guidance: eps_c + S (eps_c - eps_u), in [0, 20] (default: sample.cfg_scale)");
  sample->add_option("--png", so.png, "Also write a picture: samples over the data (2-d), or an image grid");
  sample->add_option("--weights", weights, "ema or model")->check(CLI::IsMember({"ema", "model"}))->capture_default_str();
  sample->add_option("--device", so.device, "auto (a GPU when LibTorch has one), cpu, cuda or cuda:K")
      ->capture_default_str();

  auto* schedule = app.add_subcommand("schedule", "Print a noise schedule as JSON");
  std::vector<std::string> schedule_args;
  std::optional<int64_t> schedule_steps;
  schedule->add_option("CONFIG_AND_OVERRIDES", schedule_args, "[CONFIG.yaml] [schedule.key=value ...]");
  schedule->add_option("--steps", schedule_steps, "Also print the sampler's steps+1 sigmas");
  schedule->footer(
      "\nSchedule keys: type (loglinear | ddpm | ldm | sigmoid | cosine), N, sigma_min and sigma_max (loglinear),\n"
      "beta_start and beta_end (ddpm, ldm, sigmoid; cosine accepts and ignores them), max_beta (cosine). Prints {\"type\", \"sigmas\", \"sample_sigmas\"}\n"
      "with every float32 value in 9 significant digits.");

  auto* plot = app.add_subcommand("plot", "Draw a run's loss curve and loss per noise level as PNG");
  std::string plot_run_dir, plot_out;
  plot->add_option("RUN_DIR", plot_run_dir, "Run directory (reads its metrics.jsonl)")->required();
  plot->add_option("--out", plot_out, "Directory for loss.png and loss_by_sigma.png (default: RUN_DIR)");

  auto* classifier = app.add_subcommand(
      "classifier", "Train the image classifier whose feature space `eval` measures quality in");
  ClassifierOptions co;
  std::string classifier_out;
  classifier->add_option("--data", co.train, "Training images with labels y (directory of shards, file or glob)")
      ->required();
  classifier->add_option("--test", co.test, "Test images with labels y, for the accuracy")->required();
  classifier->add_option("--out", classifier_out, "Classifier file to write (.pt)")->required();
  classifier->add_option("--epochs", co.epochs, "Passes over the training images (3: 0.92 on Fashion-MNIST)")
      ->capture_default_str();
  classifier->add_option("--seed", co.seed, "Seed of the initial weights and the shuffling, in [0, 2^63-1]")
      ->check(CLI::Validator(check_seed, "SEED"))
      ->capture_default_str();
  classifier->add_option("--batch", co.batch_size, "Images per Adam step")->capture_default_str();
  classifier->footer(
      "\nPrints one JSON line: {\"test_accuracy\", \"epochs\", \"seconds\", \"out\"}; each epoch's loss goes to stderr.\n"
      "By default `difftrain eval` looks for it as classifier.pt beside the training data's directory.");

  auto* eval = app.add_subcommand("eval", "Image quality of a checkpoint (FID in the classifier's feature space) as JSON");
  EvalOptions eo;
  std::string eval_weights = "ema";
  eval->add_option("--checkpoint", eo.checkpoint, "Checkpoint file (.pt)")->required();
  eval->add_option("--n", eo.n, "Images per set (generated, untrained, train, test)")->capture_default_str();
  eval->add_option("--cfg-scale", eo.cfg_scale, "Guidance scale (conditional models; default: sample.cfg_scale)");
  eval->add_option("--steps", eo.steps, "Sampling steps (default: sample.steps)");
  eval->add_option("--gam", eo.gam, "gamma: 1 for DDPM/DDIM, 2 accelerated (default: sample.gam)");
  eval->add_option("--seed", eo.seed, "Seed of the sampling noise and of the real images drawn, in [0, 2^63-1]")
      ->check(CLI::Validator(check_seed, "SEED"))
      ->capture_default_str();
  eval->add_option("--classifier", eo.classifier,
                   "Classifier file (default: classifier.pt in the parent directory of the config's data.path)");
  eval->add_option("--test", eo.test, "Real test images (default: test in that same directory)");
  eval->add_option("--weights", eval_weights, "ema or model")->check(CLI::IsMember({"ema", "model"}))->capture_default_str();
  eval->add_option("--device", eo.device, "auto (each rank's GPU when LibTorch has one), cpu, cuda or cuda:K")
      ->capture_default_str();
  eval->footer(
      "\nPrints one JSON object: fid (samples vs test images), fid_floor (n training vs n test images: the best\n"
      "reachable), fid_untrained (the same config's untrained model: the ceiling), class_accuracy (conditional\n"
      "models: share of samples classified as their requested class), and the settings used. Under mpirun each\n"
      "rank samples its share of the n images.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const std::vector<std::string> commands{prepare->get_name(), train->get_name(), bench_cmd->get_name(), sample->get_name(),
                                            schedule->get_name(), plot->get_name(),
                                            classifier->get_name(), eval->get_name()};
    const std::string first = argc > 1 ? argv[1] : "";
    if (!first.empty() && first[0] != '-' && std::find(commands.begin(), commands.end(), first) == commands.end()) {
      report(unknown_command_message(first, commands));
      return 1;
    }
    report(fmt::format("{} (see difftrain --help)", e.what()));
    return 1;
  }
  try {
    if (*prepare) return cmd_prepare(pa);
    if (*train) return cmd_train(train_args, train_options);
    if (*bench_cmd) {
      if (bench_args.steps < 1 || bench_args.warmup < 0) fail("bench: --steps must be at least 1 and --warmup at least 0");
      return cmd_train(bench_config_args, TrainOptions{}, &bench_args);
    }
    if (*sample) {
      so.use_ema = weights == "ema";
      const auto samples = run_sample(so);
      fmt::print("wrote {} samples of shape {} to {}{}\n", samples.size(0), fmt::format("{}", samples.sizes()), so.out,
                 so.png.empty() ? "" : " and " + so.png);
      return 0;
    }
    if (*schedule) return cmd_schedule(schedule_args, schedule_steps);
    if (*plot) {
      std::vector<std::string> notes;
      const auto written = plot_run(plot_run_dir, plot_out.empty() ? plot_run_dir : plot_out, notes);
      for (const auto& n : notes) fmt::print(stderr, "difftrain: note: {}\n", n);
      for (const auto& w : written) fmt::print("wrote {}\n", w);
      return 0;
    }
    if (*classifier) return cmd_classifier(co, classifier_out);
    if (*eval) {
      eo.use_ema = eval_weights == "ema";
      return cmd_eval(eo);
    }
  } catch (const std::exception& e) {  // difftrain::Error, and anything LibTorch throws
    report(one_line(e));
    return 1;
  }
  return 0;
}
