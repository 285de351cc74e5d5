// `difftrain eval`: the image quality of a checkpoint as JSON, every rank its share.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "difftrain/comm/communicator.h"
#include "difftrain/eval/evaluate.h"

namespace difftrain::cli {

namespace {

// Every rank evaluates its share; run_eval shares any rank's failure with all of them, so
// that all exit 1 together: the failing rank reports (rank 0 when all fail alike).
int cmd_eval(const EvalOptions& options) {
  auto comm = make_communicator(Backend::mpi);
  try {
    const auto result = run_eval(options, *comm);
    if (comm->rank() == 0) fmt::print("{}\n", to_json(result).dump());
    return 0;
  } catch (...) {
    return exit_after_failure(std::current_exception(), *comm);
  }
}

}  // namespace

Command add_eval(CLI::App& app) {
  auto eo = std::make_shared<EvalOptions>();
  auto weights = std::make_shared<std::string>("ema");
  auto* eval = app.add_subcommand("eval", "Image quality of a checkpoint (FID in the classifier's feature space) as JSON");
  eval->add_option("--checkpoint", eo->checkpoint, "Checkpoint file (.pt)")->required();
  eval->add_option("--n", eo->n, "Images per set (generated, untrained, train, test)")
      ->check(integer_in(std::numeric_limits<int64_t>::min()))
      ->capture_default_str();
  eval->add_option("--cfg-scale", eo->cfg_scale, "Guidance scale (conditional models; default: sample.cfg_scale)");
  eval->add_option("--steps", eo->steps, "Sampling steps (default: sample.steps)")
      ->check(integer_in(std::numeric_limits<int64_t>::min()));
  eval->add_option("--gam", eo->gam, "gamma: 1 for DDPM/DDIM, 2 accelerated (default: sample.gam)");
  eval->add_option("--seed", eo->seed, "Seed of the sampling noise and of the real images drawn, in [0, 2^63-1]")
      ->check(integer_in(0))
      ->capture_default_str();
  eval->add_option("--classifier", eo->classifier,
                   "Classifier file (default: classifier.pt in the parent directory of the config's data.path)");
  eval->add_option("--test", eo->test, "Real test images (default: test in that same directory)");
  eval->add_option("--weights", *weights, "ema or model")->check(CLI::IsMember({"ema", "model"}))->capture_default_str();
  eval->add_option("--features", eo->features,
                   "Also write what the figures come from to this HDF5 file: the classifier's features of each set "
                   "(generated, untrained, train, test) and its images (generated_images, ...)");
  eval->add_option("--device", eo->device, "auto (each rank's GPU when LibTorch has one), cpu, cuda or cuda:K")
      ->capture_default_str();
  eval->footer(
      "\nPrints one JSON object: fid (samples vs test images), fid_floor (n training vs n test images: the best\n"
      "reachable), fid_untrained (the same config's untrained model: the ceiling), class_accuracy (conditional\n"
      "models: share of samples classified as their requested class), far_share (share of samples farther from\n"
      "every test image than any test image is from the training images: noise, say; far_share_untrained is\n"
      "that of the untrained model, far_threshold that distance), and the settings used. Under mpirun each rank\n"
      "samples its share of the n images.");
  return {eval, [eo, weights] {
            eo->use_ema = *weights == "ema";
            return cmd_eval(*eo);
          }};
}

}  // namespace difftrain::cli
