// `difftrain sample`: samples from a checkpoint, to HDF5 (and a picture).
#include <fmt/format.h>

#include "cli/command.h"
#include "difftrain/error.h"
#include "difftrain/sample/sample.h"

namespace difftrain::cli {

Command add_sample(CLI::App& app) {
  auto so = std::make_shared<SampleOptions>();
  auto weights = std::make_shared<std::string>("ema");
  auto* sample = app.add_subcommand("sample", "Draw samples from a checkpoint");
  sample->add_option("--checkpoint", so->checkpoint, "Checkpoint file (.pt)")->required();
  sample->add_option("--out", so->out, "Output HDF5 file (dataset 'samples')")->required();
  sample->add_option("--n", so->n, "Number of samples (default: the config's sample.n)")
      ->check(integer_in(std::numeric_limits<int64_t>::min()));
  sample->add_option("--steps", so->steps, "Sampling steps (default: sample.steps)")
      ->check(integer_in(std::numeric_limits<int64_t>::min()));
  sample->add_option("--gam", so->gam, "gamma: 1 for DDPM/DDIM, 2 accelerated (default: sample.gam)");
  sample->add_option("--mu", so->mu, "mu in [0, 1): 0.5 DDPM, 0 DDIM (default: sample.mu)");
  sample->add_option("--seed", so->seed, "Seed of the sampling noise, in [0, 2^63-1]")
      ->check(integer_in(0))
      ->capture_default_str();
  sample->add_option("--class", so->label, "Class of every sample, or 'all' (each class in turn, one per grid row); "
                                           "conditional models (default: sample.class)");
  sample->add_option("--cfg-scale", so->cfg_scale,
                     "Classifier-free guidance: eps_c + S (eps_c - eps_u), in [0, 20] (default: sample.cfg_scale)");
  sample->add_option("--png", so->png, "Also write a picture: samples over the data (2-d), or an image grid");
  sample->add_option("--weights", *weights, "ema or model")->check(CLI::IsMember({"ema", "model"}))->capture_default_str();
  sample->add_option("--device", so->device, "auto (a GPU when LibTorch has one), cpu, cuda or cuda:K")
      ->capture_default_str();
  return {sample, [so, weights] {
            so->use_ema = *weights == "ema";
            const auto samples = run_sample(*so);
            fmt::print("wrote {} samples of shape {} to {}{}\n", samples.size(0), fmt::format("{}", samples.sizes()),
                       so->out, so->png.empty() ? "" : " and " + so->png);
            return 0;
          }};
}

}  // namespace difftrain::cli
