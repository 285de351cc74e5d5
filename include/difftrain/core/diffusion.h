#pragma once
// The diffusion core: training samples, the loss per parameterization, and the
// generalized DDPM/DDIM sampler. Each is a few lines of math over tensors.
#include <functional>
#include <optional>
#include <string>

#include <torch/torch.h>

#include "difftrain/core/random_streams.h"
#include "difftrain/core/schedule.h"
#include "difftrain/models/denoiser.h"
#include "difftrain/models/model_config.h"

namespace difftrain {


struct TrainSample {
  torch::Tensor x0;     // [B, ...]
  torch::Tensor sigma;  // [B, 1, ..., 1]: broadcasts against x0
  torch::Tensor eps;    // x0's shape, N(0, I)
  torch::Tensor labels = {};  // int64 [B] for a conditional model, else undefined
};

// sigma from `sigma_draws` (uniform over the schedule), eps from `eps_draws`, both drawn on
// their streams' device, which must be x0's.
TrainSample generate_train_sample(const torch::Tensor& x0, const Schedule& schedule,
                                  RandomStream& sigma_draws, RandomStream& eps_draws);

// MSE between the network's output on x0 + sigma * eps and its target, per example: [B].
torch::Tensor training_loss_per_example(Denoiser& model, Parameterization p, const TrainSample& s);

// The noise estimate the sampler needs, whatever the network predicts.
torch::Tensor predict_eps(Denoiser& model, Parameterization p, const torch::Tensor& x,
                          const torch::Tensor& sigma, const torch::Tensor& labels = {});

// ---- class conditioning ---------------------------------------------------------------

// Classifier-free guidance: eps_c + scale (eps_c - eps_u), where eps_u is the estimate
// with every label replaced by "no label" (num_classes). Both halves go through the model
// as one doubled batch. Scale 0, or no labels, is the plain conditional estimate.
torch::Tensor guided_eps(Denoiser& model, Parameterization p, const torch::Tensor& x, const torch::Tensor& sigma,
                         const torch::Tensor& labels, double scale);
constexpr double kMaxCfgScale = 20.0;

// Training's label dropout: each label becomes "no label" (null_label) with probability
// `drop`, drawn from `draws`.
torch::Tensor drop_labels(const torch::Tensor& labels, double drop, int64_t null_label, RandomStream& draws);

// "all" (nullopt: cycle through the classes) or a class id in [0, num_classes); `where`
// names the option or key in the error.
std::optional<int64_t> parse_class_choice(const std::string& text, int64_t num_classes, const std::string& where);
// A guidance scale other than 0 for an unconditional model (num_classes 0) is an error naming
// `where`: there is no conditional estimate to guide, and ignoring it would hide the mistake.
void require_guidance_applies(double scale, int64_t num_classes, const std::string& where);
// n labels: the chosen class, or for "all" every class in turn, in blocks of
// ceil(n / num_classes): 0, 0, ..., 1, 1, ..., so that a grid of that many columns shows
// one class per row.
torch::Tensor class_labels(std::optional<int64_t> choice, int64_t num_classes, int64_t n);

// eps_hat(x, sigma) with sigma a 0-d tensor.
using EpsFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& sigma)>;

struct SamplerParams {
  double gam = 1.0;  // DDPM: 1, DDIM: 1, accelerated: 2; in [kMinGam, kMaxGam]
  double mu = 0.0;   // DDPM: 0.5, DDIM: 0, accelerated: 0; in [0, 1)
};

// eps_av = gam eps + (1 - gam) eps_prev = eps + (gam - 1)(eps - eps_prev): gam weighs the
// newest noise estimate against the one before. 1 uses the newest alone (DDPM/DDIM), 2 is
// the accelerated sampler's extrapolation, between 0 and 1 a damped average. Below 0 the
// step would lean against the newest estimate; above 1 the step's error can reach
// (2 gam - 1) times the estimates' own, so far above 2 the extrapolation outweighs the
// estimate itself. 10 leaves room to experiment beyond 2 and still refuses a typo or a NaN.
constexpr double kMinGam = 0.0, kMaxGam = 10.0;
bool valid_gam(double gam);  // false for NaN

// Runs the sampler from noise * sigmas[0] down the given non-increasing sigmas (steps + 1
// values; a repeated sigma is a step that leaves x as it is). All noise, the starting
// noise included, comes from `noise`, drawn with `shape` = [n, *input_dims] on the
// stream's device, where the sampling runs in the sigmas' dtype. Returns the final x.
torch::Tensor sample(const EpsFn& eps_hat, const torch::Tensor& sigmas, SamplerParams params,
                     torch::IntArrayRef shape, RandomStream& noise);

// Throws "WHAT: K of M values are NaN or Inf" when any sample is not finite, so that no
// command hands on samples that are not numbers.
void require_finite_samples(const torch::Tensor& samples, const std::string& what);

}  // namespace difftrain
