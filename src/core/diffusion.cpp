#include "difftrain/core/diffusion.h"

#include "difftrain/error.h"

namespace difftrain {

TrainSample generate_train_sample(const torch::Tensor& x0, const Schedule& schedule,
                                  RandomStream& sigma_draws, RandomStream& eps_draws) {
  std::vector<int64_t> sigma_shape(x0.dim(), 1);
  sigma_shape[0] = x0.size(0);
  auto sigma = schedule.sample_batch(x0.size(0), sigma_draws).to(x0.options()).view(sigma_shape);
  auto eps = eps_draws.normal(x0.sizes()).to(x0.options());
  return {x0, sigma, eps};
}

namespace {
torch::Tensor alpha(const torch::Tensor& sigma) { return 1 / (1 + sigma * sigma); }
}  // namespace

torch::Tensor training_loss_per_example(Denoiser& model, Parameterization p, const TrainSample& s) {
  const auto xt = s.x0 + s.sigma * s.eps;
  auto out = model.forward(xt, s.sigma, s.labels);
  // The loss in float32 when the forward pass ran in bf16 (under autocast).
  if (out.scalar_type() == torch::kBFloat16 || out.scalar_type() == torch::kHalf) out = out.to(torch::kFloat32);
  torch::Tensor target;
  switch (p) {
    case Parameterization::eps: target = s.eps; break;
    case Parameterization::x0: target = s.x0; break;
    case Parameterization::v: {
      const auto a = alpha(s.sigma);
      target = a.sqrt() * s.eps - (1 - a).sqrt() * s.x0;
      break;
    }
  }
  return (out - target).square().flatten(1).mean(1);
}

torch::Tensor predict_eps(Denoiser& model, Parameterization p, const torch::Tensor& x,
                          const torch::Tensor& sigma, const torch::Tensor& labels) {
  const auto out = model.forward(x, sigma, labels);
  switch (p) {
    case Parameterization::eps: return out;
    case Parameterization::x0: return (x - out) / sigma;
    case Parameterization::v: {
      const auto a = alpha(sigma);
      return a.sqrt() * (out + (1 - a).sqrt() * x);
    }
  }
  fail("predict_eps: bad parameterization");
}

torch::Tensor guided_eps(Denoiser& model, Parameterization p, const torch::Tensor& x, const torch::Tensor& sigma,
                         const torch::Tensor& labels, double scale) {
  if (!labels.defined() || scale == 0) return predict_eps(model, p, x, sigma, labels);
  if (sigma.numel() != 1) fail("guidance: expected one sigma for the batch, got shape {}", sigma.sizes());
  const auto no_label = torch::full_like(labels, model.num_classes());
  const auto both = predict_eps(model, p, torch::cat({x, x}), sigma, torch::cat({labels, no_label}));
  const auto eps_c = both.narrow(0, 0, x.size(0)), eps_u = both.narrow(0, x.size(0), x.size(0));
  return eps_c + scale * (eps_c - eps_u);
}

torch::Tensor drop_labels(const torch::Tensor& labels, double drop, int64_t null_label, RandomStream& draws) {
  const auto u = draws.uniform({labels.size(0)}).to(labels.device());
  return torch::where(u < drop, torch::full_like(labels, null_label), labels);
}

std::optional<int64_t> parse_class_choice(const std::string& text, int64_t num_classes, const std::string& where) {
  if (text == "all") return std::nullopt;
  if (num_classes == 0) fail("{}: '{}' names a class, but the model is unconditional (model.num_classes 0); use 'all'", where, abbreviate(text));
  int64_t k = -1;
  std::size_t used = 0;
  try {
    k = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || k < 0 || k >= num_classes)
    fail("{}: expected a class id in [0, {}] or 'all', got '{}'", where, num_classes - 1, abbreviate(text));
  return k;
}

void require_guidance_applies(double scale, int64_t num_classes, const std::string& where) {
  if (num_classes == 0 && scale != 0)
    fail("{} {}: the model is unconditional (model.num_classes 0); classifier-free guidance needs a class-conditional "
         "model",
         where, scale);
}

torch::Tensor class_labels(std::optional<int64_t> choice, int64_t num_classes, int64_t n) {
  if (choice) return torch::full({n}, *choice, torch::kInt64);
  const int64_t per_class = (n + num_classes - 1) / num_classes;
  return torch::arange(n, torch::kInt64).div(per_class, "floor");
}

bool valid_gam(double gam) { return gam >= kMinGam && gam <= kMaxGam; }

void require_finite_samples(const torch::Tensor& samples, const std::string& what) {
  const int64_t bad = samples.numel() - torch::isfinite(samples).sum().item<int64_t>();
  if (bad > 0) fail("{}: {} of {} values are NaN or Inf", what, bad, samples.numel());
}

torch::Tensor sample(const EpsFn& eps_hat, const torch::Tensor& sigmas, SamplerParams params,
                     torch::IntArrayRef shape, RandomStream& draws) {
  if (!(params.mu >= 0 && params.mu < 1)) fail("sampler: mu must be in [0, 1), got {}", params.mu);
  if (!valid_gam(params.gam)) fail("sampler: gam must be in [{}, {}], got {}", kMinGam, kMaxGam, params.gam);
  if (sigmas.dim() != 1 || sigmas.size(0) < 2)
    fail("sampler: expected at least 2 sigmas (steps + 1), got shape {}", sigmas.sizes());
  const auto steps_down = sigmas.narrow(0, 1, sigmas.size(0) - 1) <= sigmas.narrow(0, 0, sigmas.size(0) - 1);
  if (!(torch::isfinite(sigmas).all().item<bool>() && (sigmas > 0).all().item<bool>() &&
        steps_down.all().item<bool>()))
    fail("sampler: sigmas must be finite, > 0 and non-increasing");
  torch::NoGradGuard no_grad;
  const auto sig = sigmas.to(draws.device());
  auto noise = [&] { return draws.normal(shape).to(sig.scalar_type()); };
  auto x = noise() * sig[0];
  torch::Tensor eps, eps_prev;
  for (int64_t i = 0; i + 1 < sig.size(0); ++i) {
    const auto s = sig[i], s_prev = sig[i + 1];
    eps_prev = eps;
    eps = eps_hat(x, s);
    const auto eps_av = i > 0 ? eps * params.gam + eps_prev * (1 - params.gam) : eps;
    // sig_prev = sig^mu * sig_p^(1 - mu): mu interpolates between deterministic DDIM (mu = 0)
    // and the stochastic DDPM step (mu = 1/2).
    // Mathematically sig_p <= sig_prev (as sig_prev <= sig), but rounding can put it an ulp
    // above, and then sig_prev^2 - sig_p^2 < 0 makes eta NaN: clamped. Where sig_p was at
    // or below sig_prev the clamp changes nothing, so those steps stay bit for bit. A
    // repeated sigma (the trailing spacing's tail repeats sigma[0]) is a step of size zero:
    // sig_p = sig_prev exactly, so eta = 0 and x stays as it is, rather than an ulp of
    // rounding turning into noise of size sig * sqrt(2 ulp).
    const auto formula = (s_prev / s.pow(params.mu)).pow(1 / (1 - params.mu));
    const auto sig_p = torch::where(s_prev < s, torch::minimum(formula, s_prev), s_prev);
    const auto eta = (s_prev * s_prev - sig_p * sig_p).sqrt();
    x = x - (s - sig_p) * eps_av + eta * noise();
  }
  return x;
}

}  // namespace difftrain
