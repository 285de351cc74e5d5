#pragma once
// The diffusion core: training samples, the loss per parameterization, and the
// generalized DDPM/DDIM sampler. Each is a few lines of math over tensors.
#include <functional>
#include <string>

#include <torch/torch.h>

#include "difftrain/models/denoiser.h"
#include "difftrain/schedule.h"

namespace difftrain {

// What the network is trained to output: eps (the noise), x0 (the clean data) or
// v = sqrt(alpha) eps - sqrt(1 - alpha) x0 with alpha = 1 / (1 + sigma^2).
enum class Parameterization { eps, x0, v };
Parameterization parse_parameterization(const std::string& name);

struct TrainSample {
  torch::Tensor x0;     // [B, ...]
  torch::Tensor sigma;  // [B, 1, ..., 1]: broadcasts against x0
  torch::Tensor eps;    // x0's shape, N(0, I)
};

// sigma from `sigma_gen` (uniform over the schedule), eps from `eps_gen`.
TrainSample generate_train_sample(const torch::Tensor& x0, const Schedule& schedule,
                                  at::Generator& sigma_gen, at::Generator& eps_gen);

// MSE between the network's output on x0 + sigma * eps and its target.
torch::Tensor training_loss(Denoiser& model, Parameterization p, const TrainSample& s);

// The noise estimate the sampler needs, whatever the network predicts.
torch::Tensor predict_eps(Denoiser& model, Parameterization p, const torch::Tensor& x,
                          const torch::Tensor& sigma);

// eps_hat(x, sigma) with sigma a 0-d tensor.
using EpsFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& sigma)>;

struct SamplerParams {
  double gam = 1.0;  // DDPM: 1, DDIM: 1, accelerated: 2
  double mu = 0.0;   // DDPM: 0.5, DDIM: 0, accelerated: 0; in [0, 1)
};

// Runs the sampler from noise * sigmas[0] down the given decreasing sigmas (steps + 1
// values). All noise, the starting noise included, comes from `gen`, drawn with
// `shape` = [n, *input_dims]. Returns the final x.
torch::Tensor sample(const EpsFn& eps_hat, const torch::Tensor& sigmas, SamplerParams params,
                     torch::IntArrayRef shape, at::Generator& gen,
                     torch::TensorOptions options = torch::kFloat32);

}  // namespace difftrain
