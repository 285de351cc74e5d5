// The diffusion core: training samples, the loss per parameterization, eps recovery, and
// the generalized sampler (by hand on single steps, and end to end on an analytic
// denoiser whose samples must land on its point set).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "difftrain/core/diffusion.h"
#include "difftrain/core/schedule.h"
#include "difftrain/error.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

RandomStream generator(uint64_t seed) { return RandomStream(seed); }

std::vector<double> values(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// ---- training samples -------------------------------------------------------------------

TEST(Diffusion, TrainSampleShapesBroadcastSigmaPerExample) {
  const auto schedule = log_linear_schedule(200, 0.005, 10);
  const auto sig = values(schedule.sigmas());
  for (std::vector<int64_t> shape : {std::vector<int64_t>{16, 2}, std::vector<int64_t>{5, 3, 8, 8}}) {
    auto sg = generator(1), eg = generator(2);
    const auto x0 = torch::randn(shape);
    const auto s = generate_train_sample(x0, schedule, sg, eg);
    std::vector<int64_t> sigma_shape(shape.size(), 1);
    sigma_shape[0] = shape[0];
    EXPECT_EQ(s.sigma.sizes(), torch::IntArrayRef(sigma_shape));
    EXPECT_EQ(s.eps.sizes(), x0.sizes());
    EXPECT_TRUE(torch::equal(s.x0, x0));
    EXPECT_EQ(s.sigma.scalar_type(), torch::kFloat32);
    EXPECT_EQ(s.eps.scalar_type(), torch::kFloat32);
    for (double v : values(s.sigma)) EXPECT_NE(std::find(sig.begin(), sig.end(), v), sig.end()) << v;
  }
}

TEST(Diffusion, TrainSampleIsReproducibleAndEachStreamOwnsItsPart) {
  const auto schedule = ddpm_schedule(1000, 1e-4, 0.02);
  const auto x0 = torch::zeros({256, 2});
  auto draw = [&](uint64_t sigma_seed, uint64_t eps_seed) {
    auto sg = generator(sigma_seed), eg = generator(eps_seed);
    return generate_train_sample(x0, schedule, sg, eg);
  };
  const auto a = draw(1, 2), b = draw(1, 2), c = draw(1, 3), d = draw(4, 2);
  EXPECT_TRUE(torch::equal(a.sigma, b.sigma));
  EXPECT_TRUE(torch::equal(a.eps, b.eps));
  // sigma comes from the sigma stream only, eps from the eps stream only: a rank can
  // reseed one without disturbing the other.
  EXPECT_TRUE(torch::equal(a.sigma, c.sigma));
  EXPECT_FALSE(torch::equal(a.eps, c.eps));
  EXPECT_FALSE(torch::equal(a.sigma, d.sigma));
  EXPECT_TRUE(torch::equal(a.eps, d.eps));
  // eps is standard normal: 512 draws, so the mean and variance are within a few
  // standard errors (0.044 and 0.0625) of 0 and 1.
  EXPECT_NEAR(a.eps.mean().item<double>(), 0, 0.2);
  EXPECT_NEAR(a.eps.var().item<double>(), 1, 0.3);
}

// ---- losses and eps recovery --------------------------------------------------------------

// out = w * x + sigma, with one trainable scalar w; it records what it was called with.
class AffineDenoiser : public Denoiser {
 public:
  explicit AffineDenoiser(double w) { w_ = register_parameter("w", torch::tensor({w}, torch::kFloat64)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& = {}) override {
    seen_x = x.detach().clone();
    seen_sigma = sigma.detach().clone();
    return w_ * x + sigma;
  }
  std::vector<int64_t> input_dims() const override { return {3}; }
  torch::Tensor w_, seen_x, seen_sigma;
};

// Returns a fixed tensor whatever it is asked: the "perfect" network for one batch.
class ConstantDenoiser : public Denoiser {
 public:
  explicit ConstantDenoiser(torch::Tensor out) : out_(std::move(out)) {}
  torch::Tensor forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor& = {}) override { return out_; }
  std::vector<int64_t> input_dims() const override { return {out_.size(1)}; }
  torch::Tensor out_;
};

// A batch in float64 so that the hand computation below agrees to double rounding.
TrainSample hand_sample() {
  auto g = generator(11);
  const auto x0 = g.normal({4, 3}).to(torch::kFloat64);
  const auto eps = g.normal({4, 3}).to(torch::kFloat64);
  const auto sigma = torch::tensor({0.05, 0.7, 3.0, 12.0}, torch::kFloat64).view({4, 1});
  return {x0, sigma, eps};
}

TEST(Diffusion, TrainingLossIsTheMSEOfEachParameterizationsTarget) {
  const auto s = hand_sample();
  const auto x0 = values(s.x0), eps = values(s.eps), sigma = values(s.sigma);
  const double w = 0.3;
  for (auto p : {Parameterization::eps, Parameterization::x0, Parameterization::v}) {
    AffineDenoiser model(w);
    const auto loss = training_loss(model, p, s);
    ASSERT_EQ(loss.dim(), 0);

    double sum = 0, dsum = 0;  // the loss, and its derivative in w
    for (int b = 0; b < 4; ++b) {
      const double sg = sigma[b], alpha = 1 / (1 + sg * sg);
      for (int j = 0; j < 3; ++j) {
        const int k = b * 3 + j;
        const double xt = x0[k] + sg * eps[k];
        const double target = p == Parameterization::eps  ? eps[k]
                              : p == Parameterization::x0 ? x0[k]
                                                          : std::sqrt(alpha) * eps[k] - std::sqrt(1 - alpha) * x0[k];
        const double r = w * xt + sg - target;
        sum += r * r;
        dsum += 2 * r * xt;
        // The network sees x_t = x0 + sigma * eps with sigma per example.
        EXPECT_NEAR(model.seen_x[b][j].item<double>(), xt, 1e-12);
      }
    }
    EXPECT_EQ(model.seen_sigma.sizes(), torch::IntArrayRef({4, 1}));
    EXPECT_NEAR(loss.item<double>(), sum / 12, 1e-12 * sum) << int(p);
    loss.backward();
    EXPECT_NEAR(model.w_.grad().item<double>(), dsum / 12, 1e-10 * std::abs(dsum)) << int(p);
  }
}

TEST(Diffusion, PredictEpsRecoversEpsFromAPerfectNetwork) {
  const auto s = hand_sample();
  const auto xt = s.x0 + s.sigma * s.eps;
  const auto alpha = 1 / (1 + s.sigma * s.sigma);

  ConstantDenoiser eps_net(s.eps);
  EXPECT_TRUE(torch::equal(predict_eps(eps_net, Parameterization::eps, xt, s.sigma), s.eps));

  ConstantDenoiser x0_net(s.x0);
  EXPECT_TRUE(torch::allclose(predict_eps(x0_net, Parameterization::x0, xt, s.sigma), s.eps, 1e-12, 1e-12));

  ConstantDenoiser v_net(alpha.sqrt() * s.eps - (1 - alpha).sqrt() * s.x0);
  EXPECT_TRUE(torch::allclose(predict_eps(v_net, Parameterization::v, xt, s.sigma), s.eps, 1e-12, 1e-12));

  // A scalar sigma (one level for the whole batch, as the sampler calls it) works too.
  const auto sigma0 = torch::tensor(2.5, torch::kFloat64);
  const auto xt0 = s.x0 + sigma0 * s.eps;
  const auto a0 = 1 / (1 + sigma0 * sigma0);
  ConstantDenoiser v_net0(a0.sqrt() * s.eps - (1 - a0).sqrt() * s.x0);
  EXPECT_TRUE(torch::allclose(predict_eps(v_net0, Parameterization::v, xt0, sigma0), s.eps, 1e-12, 1e-12));
  ConstantDenoiser x0_net0(s.x0);
  EXPECT_TRUE(torch::allclose(predict_eps(x0_net0, Parameterization::x0, xt0, sigma0), s.eps, 1e-12, 1e-12));
}

// ---- the sampler, one step at a time ---------------------------------------------------

// The update written out per element in double (the README's sampler), with the noise the
// sampler's generator yields in order: the starting noise, then one draw per step.
std::vector<double> hand_sampler(const std::vector<double>& sigmas, double gam, double mu,
                                 const std::function<double(double x, double sigma)>& eps_fn,
                                 torch::IntArrayRef shape, uint64_t seed) {
  auto gen = generator(seed);
  auto noise = [&] { return values(gen.normal(shape)); };
  std::vector<double> x = noise();
  for (double& v : x) v *= sigmas[0];
  std::vector<double> eps(x.size()), eps_prev(x.size());
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const double sig = sigmas[i], sig_prev = sigmas[i + 1];
    const double sig_p = std::pow(sig_prev / std::pow(sig, mu), 1 / (1 - mu));
    const double eta = std::sqrt(sig_prev * sig_prev - sig_p * sig_p);
    const auto z = noise();
    for (std::size_t k = 0; k < x.size(); ++k) {
      eps_prev[k] = eps[k];
      eps[k] = eps_fn(x[k], sig);
      const double eps_av = i == 0 ? eps[k] : gam * eps[k] + (1 - gam) * eps_prev[k];
      x[k] = x[k] - (sig - sig_p) * eps_av + eta * z[k];
    }
  }
  return x;
}

struct StepCase {
  double gam, mu;
};
void PrintTo(const StepCase& c, std::ostream* os) { *os << "gam=" << c.gam << " mu=" << c.mu; }

class SamplerStep : public ::testing::TestWithParam<StepCase> {};

TEST_P(SamplerStep, MatchesTheUpdateRuleByHand) {
  const auto [gam, mu] = GetParam();
  const std::vector<double> sigmas{4.0, 2.0, 0.5, 0.1};
  const std::vector<int64_t> shape{5, 2};
  // An eps estimate that depends on both x and sigma, so that eps and eps_prev differ and
  // the gam mixing is visible.
  auto eps_fn = [](double x, double s) { return 0.5 * x + s; };
  std::vector<double> seen_sigmas;
  const EpsFn eps_hat = [&](const torch::Tensor& x, const torch::Tensor& s) {
    EXPECT_EQ(s.dim(), 0);
    seen_sigmas.push_back(s.item<double>());
    return 0.5 * x + s;
  };
  auto gen = generator(99);
  const auto out = sample(eps_hat, torch::tensor(sigmas, torch::kFloat64), {gam, mu}, shape, gen);
  EXPECT_EQ(out.sizes(), torch::IntArrayRef(shape));
  EXPECT_EQ(seen_sigmas, std::vector<double>(sigmas.begin(), sigmas.end() - 1));

  const auto expected = hand_sampler(sigmas, gam, mu, eps_fn, shape, 99);
  const auto got = values(out);
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], expected[k], 1e-12 * (1 + std::abs(expected[k]))) << k;
}

INSTANTIATE_TEST_SUITE_P(Sampler, SamplerStep,
                         ::testing::Values(StepCase{1, 0}, StepCase{2, 0}, StepCase{1, 0.5}, StepCase{1.5, 0.3}),
                         [](const auto& info) {
                           return "gam" + std::to_string(int(info.param.gam * 10)) + "_mu" +
                                  std::to_string(int(info.param.mu * 10));
                         });

// The same steps with the constants worked out on paper, so that a mistake shared by the
// sampler and hand_sampler (both written from the same formula) cannot hide.
TEST(Sampler, FirstStepsWorkedOutOnPaper) {
  const std::vector<int64_t> shape{1, 1};
  std::vector<double> xs;  // x at each eps evaluation
  const EpsFn eps_hat = [&](const torch::Tensor& x, const torch::Tensor& s) {
    xs.push_back(x.item<double>());
    return x / s;  // eps(x, s) = x / s
  };
  auto start = generator(5);
  const double n0 = start.normal(shape).item<double>();
  const double n1 = start.normal(shape).item<double>();
  const double n2 = start.normal(shape).item<double>();

  // DDIM from 4 -> 2 -> 1: x0 = 4 n0; eps = n0; x1 = x0 - (4 - 2) n0 = 2 n0; then
  // x2 = x1 - (2 - 1) * (x1 / 2) = n0. Deterministic: the noise draws are multiplied by 0.
  {
    xs.clear();
    auto g = generator(5);
    const double out = sample(eps_hat, torch::tensor({4.0, 2.0, 1.0}, torch::kFloat64), {1, 0}, shape, g).item<double>();
    ASSERT_EQ(xs.size(), 2u);
    EXPECT_NEAR(xs[0], 4 * n0, 1e-12);
    EXPECT_NEAR(xs[1], 2 * n0, 1e-12);
    EXPECT_NEAR(out, n0, 1e-12);
  }
  // Accelerated (gam = 2) with eps(x, s) = x / s + s, so that consecutive eps differ:
  // x0 = 4 n0; eps0 = n0 + 4; x1 = 4 n0 - 2 (n0 + 4) = 2 n0 - 8; eps1 = n0 - 4 + 2 = n0 - 2;
  // eps_av = 2 eps1 - eps0 = n0 - 8; x2 = x1 - (2 - 1) eps_av = n0.
  {
    const EpsFn shifted = [](const torch::Tensor& x, const torch::Tensor& s) { return x / s + s; };
    auto g = generator(5);
    const double out = sample(shifted, torch::tensor({4.0, 2.0, 1.0}, torch::kFloat64), {2, 0}, shape, g).item<double>();
    EXPECT_NEAR(out, n0, 1e-12);
    // With gam = 1 the same steps give x2 = x1 - eps1 = n0 - 6.
    auto g1 = generator(5);
    const double out1 = sample(shifted, torch::tensor({4.0, 2.0, 1.0}, torch::kFloat64), {1, 0}, shape, g1).item<double>();
    EXPECT_NEAR(out1, n0 - 6, 1e-12);
  }
  // DDPM (mu = 1/2) from 4 -> 2 -> 1: sig_p = 2^2 / 4 = 1, eta = sqrt(4 - 1) = sqrt(3);
  // x1 = 4 n0 - (4 - 1) n0 + sqrt(3) n1 = n0 + sqrt(3) n1. Then sig_p = 1/2,
  // eta = sqrt(1 - 1/4); x2 = x1 - (2 - 1/2) x1 / 2 + sqrt(3/4) n2 = x1 / 4 + sqrt(3/4) n2.
  {
    xs.clear();
    auto g = generator(5);
    const double out = sample(eps_hat, torch::tensor({4.0, 2.0, 1.0}, torch::kFloat64), {1, 0.5}, shape, g).item<double>();
    const double x1 = n0 + std::sqrt(3.0) * n1;
    ASSERT_EQ(xs.size(), 2u);
    EXPECT_NEAR(xs[1], x1, 1e-12);
    EXPECT_NEAR(out, x1 / 4 + std::sqrt(0.75) * n2, 1e-12);
  }
}

TEST(Sampler, RejectsMuOutsideZeroToOne) {
  const EpsFn zero = [](const torch::Tensor& x, const torch::Tensor&) { return torch::zeros_like(x); };
  const auto sigmas = torch::tensor({2.0f, 1.0f});
  for (double mu : {1.0, 1.5, -0.1}) {
    auto g = generator(0);
    try {
      sample(zero, sigmas, {1, mu}, {2, 2}, g);
      ADD_FAILURE() << "mu=" << mu << " did not throw";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("mu"));
    }
  }
  auto g = generator(0);
  EXPECT_NO_THROW(sample(zero, sigmas, {1, 0.99}, {2, 2}, g));
  // A single sigma is zero steps: refused rather than returning the starting noise.
  EXPECT_THROW(sample(zero, torch::tensor({2.0f}), {1, 0}, {2, 2}, g), Error);
}

TEST(Sampler, RejectsGamOutsideItsRangeAndSigmasThatDoNotStepDown) {
  const EpsFn zero = [](const torch::Tensor& x, const torch::Tensor&) { return torch::zeros_like(x); };
  const auto sigmas = torch::tensor({2.0f, 1.0f});
  for (double gam : {std::nan(""), -0.5, 10.5, 1e30}) {
    auto g = generator(0);
    try {
      sample(zero, sigmas, {gam, 0}, {2, 2}, g);
      ADD_FAILURE() << "gam=" << gam << " did not throw";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("gam"));
    }
  }
  for (double gam : {0.0, 10.0}) {
    auto g = generator(0);
    EXPECT_NO_THROW(sample(zero, sigmas, {gam, 0}, {2, 2}, g)) << "gam=" << gam;
  }
  for (const auto& bad : {torch::tensor({1.0f, 2.0f}), torch::tensor({2.0f, 0.0f}),
                          torch::tensor({std::nanf(""), 1.0f}), torch::tensor({INFINITY, 1.0f})}) {
    auto g = generator(0);
    EXPECT_THROW(sample(zero, bad, {1, 0}, {2, 2}, g), Error) << bad;
  }
}

TEST(Sampler, RequireFiniteSamplesCountsTheBadValues) {
  auto x = torch::zeros({5, 2});
  EXPECT_NO_THROW(require_finite_samples(x, "check"));
  x[0][1] = NAN;
  x[3][0] = INFINITY;
  x[4][1] = -INFINITY;
  try {
    require_finite_samples(x, "check");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "check: 3 of 10 values are NaN or Inf");
  }
}

// ---- the sampler on the ideal denoiser of a point set -------------------------------------

// For data that is exactly the points X, the optimal eps(x, sigma) = (x - E[x0 | x]) / sigma
// with E[x0 | x] the softmax(-|x - x_i|^2 / (2 sigma^2))-weighted mean of the points.
const torch::Tensor& points() {
  static const auto X = torch::tensor({-1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 1.5f}).view({3, 2});
  return X;
}

torch::Tensor ideal_eps(const torch::Tensor& x, const torch::Tensor& sigma) {
  const auto d2 = (x.unsqueeze(1) - points().unsqueeze(0)).pow(2).sum(-1);  // [n, 3]
  const auto w = torch::softmax(-d2 / (2 * sigma * sigma), 1);
  return (x - w.matmul(points())) / sigma;
}

struct Convergence {
  const char* name;
  double gam, mu;
  int64_t steps;
};
void PrintTo(const Convergence& c, std::ostream* os) { *os << c.name << " (gam=" << c.gam << " mu=" << c.mu << ")"; }

class SamplerOnPoints : public ::testing::TestWithParam<Convergence> {};

TEST_P(SamplerOnPoints, SamplesLandOnThePointSet) {
  const auto c = GetParam();
  const auto schedule = log_linear_schedule(1000, 0.01, 10);
  const int64_t n = 600;
  auto gen = generator(2024);
  const auto x = sample(ideal_eps, schedule.sample_sigmas(c.steps), {c.gam, c.mu}, {n, 2}, gen);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({n, 2}));
  ASSERT_TRUE(torch::isfinite(x).all().item<bool>());

  const auto dist = (x.unsqueeze(1) - points().unsqueeze(0)).pow(2).sum(-1).sqrt();  // [n, 3]
  const auto [nearest, which] = dist.min(1);
  // The points are >= 1.8 apart and the walk ends at sigma_min = 0.01: every sample sits
  // on one point, within a few sigma_min.
  EXPECT_LT(nearest.max().item<double>(), 0.1) << c.name;
  EXPECT_LT(nearest.mean().item<double>(), 0.03) << c.name;
  // Each point is one third of the data and gets roughly a third of the samples (sd of
  // the count ~ 12; a collapse onto one or two points fails this).
  const auto counts = torch::bincount(which, {}, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(counts[i].item<int64_t>(), 140) << c.name << " point " << i;
    EXPECT_LT(counts[i].item<int64_t>(), 260) << c.name << " point " << i;
  }

  // Fixed generator seed, same samples; another seed, others.
  auto again = generator(2024), other = generator(2025);
  EXPECT_TRUE(torch::equal(x, sample(ideal_eps, schedule.sample_sigmas(c.steps), {c.gam, c.mu}, {n, 2}, again)));
  EXPECT_FALSE(torch::equal(x, sample(ideal_eps, schedule.sample_sigmas(c.steps), {c.gam, c.mu}, {n, 2}, other)));
}

INSTANTIATE_TEST_SUITE_P(Sampler, SamplerOnPoints,
                         ::testing::Values(Convergence{"DDIM", 1, 0, 100}, Convergence{"DDPM", 1, 0.5, 200},
                                           Convergence{"Accelerated", 2, 0, 20}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- finite samples wherever the schedule's tail repeats a sigma --------------------------

// A repeated sigma (the trailing spacing's tail for steps > 2N/3) is a step of size zero:
// sig_p = sig_prev = sig, eta = 0, and x comes out exactly as it went in. Rounding puts
// the formula's sig_p an ulp above sig_prev for some sigma and mu, which made eta NaN.
TEST(Sampler, RepeatedSigmaLeavesXAsItIs) {
  int64_t checked = 0;
  for (float repeated : {0.005f, 0.02f, 0.1f, 0.37f, 1.0f, 3.7f}) {
    for (double mu : {0.0, 0.3, 0.5, 0.7, 0.9, 0.99}) {
      for (double gam : {1.0, 2.0}) {
        auto g1 = generator(3), g2 = generator(3);
        const auto without = sample(ideal_eps, torch::tensor({8.0f, repeated}), {gam, mu}, {16, 2}, g1);
        const auto with = sample(ideal_eps, torch::tensor({8.0f, repeated, repeated}), {gam, mu}, {16, 2}, g2);
        ASSERT_TRUE(torch::isfinite(without).all().item<bool>());
        EXPECT_TRUE(torch::equal(with, without)) << "sigma " << repeated << " repeated, mu=" << mu << " gam=" << gam;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 6 * 6 * 2);
}

// Every step count of a small schedule, for DDIM, DDPM and a mostly stochastic mu, plain and
// accelerated: the samples are finite.
TEST(Sampler, FiniteAtEveryStepCountOfASmallSchedule) {
  const auto schedule = log_linear_schedule(20, 0.005, 10);
  int64_t checked = 0;
  for (double mu : {0.0, 0.5, 0.9}) {
    for (double gam : {1.0, 2.0}) {
      for (int64_t steps = 1; steps <= schedule.size(); ++steps) {
        auto gen = generator(7);
        const auto x = sample(ideal_eps, schedule.sample_sigmas(steps), {gam, mu}, {64, 2}, gen);
        EXPECT_TRUE(torch::isfinite(x).all().item<bool>()) << "steps=" << steps << " mu=" << mu << " gam=" << gam;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 3 * 2 * 20);
}

// The case a tester found: the toy recipe's schedule (N = 200) at 150..200 steps, DDPM.
TEST(Sampler, ToyScheduleAtManyStepsWithMuOneHalfIsFinite) {
  const auto schedule = log_linear_schedule(200, 0.005, 10);
  for (int64_t steps = 150; steps <= 200; ++steps) {
    auto gen = generator(0);
    const auto x = sample(ideal_eps, schedule.sample_sigmas(steps), {2.0, 0.5}, {32, 2}, gen);
    EXPECT_TRUE(torch::isfinite(x).all().item<bool>()) << "steps=" << steps;
  }
}

}  // namespace
}  // namespace difftrain
