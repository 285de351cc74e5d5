// The five schedules against their formulas (the README's "Schedules"), recomputed here in
// plain double arithmetic, and the sampler's trailing-spacing subset.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "difftrain/config.h"
#include "difftrain/core/schedule.h"
#include "difftrain/error.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

// float32's unit roundoff: one rounding moves a value by at most this much, relatively.
constexpr double kU = 0x1p-24;

std::vector<double> to_doubles(const torch::Tensor& t) {
  EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  EXPECT_EQ(t.dim(), 1);
  const auto c = t.contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// numpy/torch linspace: n evenly spaced values, both ends included; just `a` when n == 1.
std::vector<double> linspace(double a, double b, int64_t n) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(n == 1 ? a : a + (b - a) * double(i) / double(n - 1));
  return v;
}

// alpha_bar_k = prod_{j<=k} (1 - beta_j): what sigma = sqrt(1/alpha_bar - 1) encodes.
std::vector<double> cumprod_one_minus(const std::vector<double>& betas) {
  std::vector<double> out;
  double p = 1;
  for (double b : betas) out.push_back(p *= 1 - b);
  return out;
}

// The beta schedules are compared through alpha_bar = 1/(1 + sigma^2), not sigma itself:
// sigma^2 = 1/alpha_bar - 1 cancels catastrophically where alpha_bar ~ 1 (sigma ~ 0.01
// has 1 - alpha_bar ~ 1e-4), amplifying one float32 rounding by 1/sigma^2, so no
// tolerance in sigma is both tight at the top and honest at the bottom. In alpha_bar,
// float32 errs by one rounding per (1 - beta_j) factor and per product (k+1 factors at
// index k) plus a few for the division and square root: (2k + 8) u bounds it. A wrong
// formula (an off-by-one in the betas, sigma^2 for sigma, a lost sqrt) misses it by
// orders of magnitude at every N tested.
void expect_alpha_bar(const Schedule& s, const std::vector<double>& expected, const std::string& what) {
  const auto sig = to_doubles(s.sigmas());
  ASSERT_EQ(sig.size(), expected.size()) << what;
  for (std::size_t k = 0; k < sig.size(); ++k) {
    const double got = 1 / (1 + sig[k] * sig[k]);
    const double tol = (2.0 * double(k) + 8) * kU * expected[k];
    ASSERT_NEAR(got, expected[k], tol) << what << ": index " << k << ", sigma " << sig[k];
  }
}

const std::vector<int64_t> kSizes{1, 2, 10, 200, 1000};

TEST(Schedule, LogLinearMatchesLogspace) {
  struct Params { double lo, hi; };
  for (auto p : {Params{0.02, 10}, Params{0.005, 10}, Params{0.002, 80}, Params{1e-3, 1}}) {
    for (int64_t N : kSizes) {
      const auto s = log_linear_schedule(N, p.lo, p.hi);
      EXPECT_EQ(s.type(), ScheduleType::loglinear);
      const auto sig = to_doubles(s.sigmas());
      ASSERT_EQ(int64_t(sig.size()), N);
      const double l0 = std::log10(p.lo), l1 = std::log10(p.hi);
      for (int64_t i = 0; i < N; ++i) {
        const double expected = std::pow(10.0, N == 1 ? l0 : l0 + (l1 - l0) * double(i) / double(N - 1));
        // 10^e in float32: the exponent (|e| < 3) is rounded, which moves 10^e by
        // ln(10) |e| u ~ 4e-7 relative, plus the rounding of the power itself.
        EXPECT_NEAR(sig[i], expected, 2e-6 * expected) << "N=" << N << " i=" << i << " [" << p.lo << ", " << p.hi << "]";
      }
      // The ends are the configured ones (to float32), and the values increase.
      EXPECT_FLOAT_EQ(sig.front(), p.lo);
      if (N > 1) {
        EXPECT_FLOAT_EQ(sig.back(), p.hi);
      }
      for (int64_t i = 1; i < N; ++i) EXPECT_LT(sig[i - 1], sig[i]);
    }
  }
}

TEST(Schedule, DDPMMatchesLinearBetas) {
  struct Params { double b0, b1; };
  for (auto p : {Params{1e-4, 0.02}, Params{1e-3, 0.05}, Params{0.01, 0.01}}) {
    for (int64_t N : kSizes) {
      const auto s = ddpm_schedule(N, p.b0, p.b1);
      EXPECT_EQ(s.type(), ScheduleType::ddpm);
      expect_alpha_bar(s, cumprod_one_minus(linspace(p.b0, p.b1, N)),
                       "ddpm N=" + std::to_string(N) + " b0=" + std::to_string(p.b0));
    }
  }
  // A spot value: one step of beta = 1e-4 is sigma = sqrt(1/(1 - 1e-4) - 1) ~ 0.0100005.
  EXPECT_NEAR(ddpm_schedule(1000, 1e-4, 0.02)[0], 0.0100005, 1e-6);
}

TEST(Schedule, LDMMatchesScaledLinearBetas) {
  struct Params { double b0, b1; };
  for (auto p : {Params{0.00085, 0.012}, Params{1e-4, 0.02}}) {
    for (int64_t N : kSizes) {
      std::vector<double> betas = linspace(std::sqrt(p.b0), std::sqrt(p.b1), N);
      for (double& b : betas) b *= b;
      const auto s = ldm_schedule(N, p.b0, p.b1);
      EXPECT_EQ(s.type(), ScheduleType::ldm);
      expect_alpha_bar(s, cumprod_one_minus(betas), "ldm N=" + std::to_string(N));
    }
  }
}

TEST(Schedule, SigmoidMatchesSigmoidBetas) {
  struct Params { double b0, b1; };
  for (auto p : {Params{1e-4, 0.02}, Params{1e-3, 0.05}}) {
    for (int64_t N : kSizes) {
      std::vector<double> betas;
      for (double t : linspace(-6, 6, N)) betas.push_back(1 / (1 + std::exp(-t)) * (p.b1 - p.b0) + p.b0);
      const auto s = sigmoid_schedule(N, p.b0, p.b1);
      EXPECT_EQ(s.type(), ScheduleType::sigmoid);
      expect_alpha_bar(s, cumprod_one_minus(betas), "sigmoid N=" + std::to_string(N));
    }
  }
}

TEST(Schedule, CosineMatchesNicholDhariwal) {
  const double pi = std::acos(-1.0);
  auto alpha_bar = [pi](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * pi / 2);
    return c * c;
  };
  for (double max_beta : {0.999, 0.5, 0.02}) {
    for (int64_t N : kSizes) {
      std::vector<double> betas;
      for (int64_t i = 0; i < N; ++i) {
        const double b = std::min(1 - alpha_bar(double(i + 1) / double(N)) / alpha_bar(double(i) / double(N)), max_beta);
        // The reference stores the float64 betas in a float32 tensor before the product;
        // near beta = 0.999 that rounding alone moves (1 - beta) by ~1e-4 relative, so it
        // is part of the formula, not an error to tolerate.
        betas.push_back(static_cast<float>(b));
      }
      const auto s = cosine_schedule(N, max_beta);
      EXPECT_EQ(s.type(), ScheduleType::cosine);
      expect_alpha_bar(s, cumprod_one_minus(betas),
                       "cosine N=" + std::to_string(N) + " max_beta=" + std::to_string(max_beta));
    }
  }
  // Unclipped, the product telescopes to alpha_bar(t)/alpha_bar(0).
  const auto s = cosine_schedule(100, 0.999);
  const double ab = 1 / (1 + double(s[49]) * double(s[49]));
  EXPECT_NEAR(ab, alpha_bar(0.5) / alpha_bar(0), 1e-5);
}

TEST(Schedule, SigmasAreFloat32AndIncreasing) {
  for (const auto& s : {log_linear_schedule(200, 0.005, 10), ddpm_schedule(1000, 1e-4, 0.02),
                        ldm_schedule(1000, 0.00085, 0.012), sigmoid_schedule(1000, 1e-4, 0.02),
                        cosine_schedule(1000, 0.999)}) {
    EXPECT_EQ(s.sigmas().scalar_type(), torch::kFloat32) << name_of(s.type());
    EXPECT_TRUE(s.sigmas().device().is_cpu()) << name_of(s.type());
    EXPECT_EQ(s.size(), s.sigmas().size(0));
    const auto sig = to_doubles(s.sigmas());
    for (std::size_t i = 1; i < sig.size(); ++i) ASSERT_LT(sig[i - 1], sig[i]) << name_of(s.type()) << " at " << i;
    EXPECT_GT(sig.front(), 0) << name_of(s.type());
    EXPECT_EQ(s[0], static_cast<float>(sig.front()));
    EXPECT_EQ(s[s.size() - 1], static_cast<float>(sig.back()));
  }
}

// numpy's round(): to nearest, ties to even. Written out rather than via nearbyint so the
// test does not share the library's rounding call.
int64_t round_half_even(double x) {
  const double f = std::floor(x);
  const double frac = x - f;
  auto n = static_cast<int64_t>(f);
  if (frac > 0.5 || (frac == 0.5 && n % 2 != 0)) ++n;
  return n;
}

// The reference's (N * (1 - np.arange(steps)/steps)).round() - 1, in the same float64
// arithmetic, then index 0.
std::vector<int64_t> trailing_indices(int64_t N, int64_t steps) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < steps; ++i) idx.push_back(round_half_even(double(N) * (1.0 - double(i) / double(steps))) - 1);
  idx.push_back(0);
  return idx;
}

TEST(Schedule, TrailingIndicesByHand) {
  // Ties go to the even neighbour: 7.5 -> 8 and 2.5 -> 2 (not 3, as round-half-up gives).
  EXPECT_EQ(trailing_indices(10, 4), (std::vector<int64_t>{9, 7, 4, 1, 0}));
  EXPECT_EQ(trailing_indices(5, 2), (std::vector<int64_t>{4, 1, 0}));
  EXPECT_EQ(trailing_indices(200, 20).front(), 199);
  EXPECT_EQ(trailing_indices(200, 20)[19], 9);

  const auto s = log_linear_schedule(10, 0.1, 10);
  const auto picked = to_doubles(s.sample_sigmas(4));
  const std::vector<int64_t> expected{9, 7, 4, 1, 0};
  ASSERT_EQ(picked.size(), expected.size());
  for (std::size_t j = 0; j < expected.size(); ++j) EXPECT_EQ(picked[j], double(s[expected[j]])) << j;
}

TEST(Schedule, SampleSigmasPicksTrailingIndices) {
  const std::vector<Schedule> schedules{log_linear_schedule(1, 0.1, 1),   log_linear_schedule(10, 0.1, 10),
                                        log_linear_schedule(200, 0.005, 10), ddpm_schedule(1000, 1e-4, 0.02),
                                        ldm_schedule(77, 0.00085, 0.012),   cosine_schedule(1000, 0.999)};
  for (const auto& s : schedules) {
    const int64_t N = s.size();
    std::vector<int64_t> step_counts{1, 2, 3, 7, 20, N - 1, N};
    for (int64_t steps : step_counts) {
      if (steps < 1 || steps > N) continue;
      const auto picked = to_doubles(s.sample_sigmas(steps));
      const auto idx = trailing_indices(N, steps);
      ASSERT_EQ(int64_t(picked.size()), steps + 1) << name_of(s.type()) << " N=" << N << " steps=" << steps;
      for (std::size_t j = 0; j < idx.size(); ++j) {
        ASSERT_GE(idx[j], 0);
        ASSERT_LT(idx[j], N);
        // Exactly the schedule's own float32 value, not a recomputation of it.
        EXPECT_EQ(picked[j], double(s[idx[j]])) << name_of(s.type()) << " N=" << N << " steps=" << steps << " j=" << j;
      }
      // It starts at the top of the schedule and ends at the bottom. The first `steps`
      // values strictly decrease; the final index 0 may repeat the one before it (when
      // N/steps rounds to 1), exactly as in the reference.
      EXPECT_EQ(picked.front(), double(s[N - 1]));
      EXPECT_EQ(picked.back(), double(s[0]));
      for (int64_t j = 1; j < steps; ++j) EXPECT_LT(picked[j], picked[j - 1]) << "steps=" << steps << " j=" << j;
      EXPECT_LE(picked[steps], picked[steps - 1]);
    }
  }
}

TEST(Schedule, SampleSigmasRejectsStepsOutsideOneToN) {
  const auto s = log_linear_schedule(10, 0.1, 10);
  EXPECT_NO_THROW(s.sample_sigmas(10));
  EXPECT_NO_THROW(s.sample_sigmas(1));
  for (int64_t steps : {11, 100, 0, -1}) {
    try {
      s.sample_sigmas(steps);
      ADD_FAILURE() << "steps=" << steps << " did not throw";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("steps"));
      EXPECT_THAT(e.what(), HasSubstr(std::to_string(steps)));
    }
  }
}

TEST(Schedule, SampleBatchDrawsScheduleValuesUniformly) {
  const auto s = log_linear_schedule(10, 0.1, 10);
  const auto sig = to_doubles(s.sigmas());
  RandomStream gen(1234);
  const int64_t draws = 10000;
  const auto batch = s.sample_batch(draws, gen);
  ASSERT_EQ(batch.sizes(), torch::IntArrayRef({draws}));
  ASSERT_EQ(batch.scalar_type(), torch::kFloat32);
  std::map<double, int64_t> counts;
  for (double v : to_doubles(batch)) counts[v]++;
  for (const auto& [value, count] : counts)
    EXPECT_NE(std::find(sig.begin(), sig.end(), value), sig.end()) << value << " is not a schedule value";
  // Every value appears, each about draws/N = 1000 times: binomial sd ~30, so +-150 is
  // 5 sd (a fixed seed makes this deterministic; a bias towards any value fails it).
  for (double v : sig) {
    EXPECT_GT(counts[v], 850) << v;
    EXPECT_LT(counts[v], 1150) << v;
  }
}

TEST(Schedule, SampleBatchIsReproducibleFromTheSeed) {
  const auto s = ddpm_schedule(1000, 1e-4, 0.02);
  RandomStream a(7), b(7), c(8);
  const auto x = s.sample_batch(64, a);
  EXPECT_TRUE(torch::equal(x, s.sample_batch(64, b)));
  EXPECT_FALSE(torch::equal(x, s.sample_batch(64, c)));
  // The stream reads on: the next batch differs from the first.
  EXPECT_FALSE(torch::equal(x, s.sample_batch(64, a)));
}

Config config_with(const std::vector<std::string>& overrides) { return parse_config("", "test", overrides); }

// The config holds the one set of defaults: the toy recipe's log-linear schedule, and the
// reference's N and betas for the others.
TEST(Schedule, MakeScheduleFollowsTheResolvedConfigAndItsDefaults) {
  EXPECT_TRUE(torch::equal(make_schedule(config_with({}).schedule).sigmas(), log_linear_schedule(200, 0.005, 10).sigmas()));
  EXPECT_TRUE(torch::equal(
      make_schedule(config_with({"schedule.N=50", "schedule.sigma_min=0.01", "schedule.sigma_max=80"}).schedule).sigmas(),
      log_linear_schedule(50, 0.01, 80).sigmas()));
  EXPECT_TRUE(torch::equal(make_schedule(config_with({"schedule.type=ddpm"}).schedule).sigmas(), ddpm_schedule(1000, 1e-4, 0.02).sigmas()));
  EXPECT_TRUE(torch::equal(
      make_schedule(config_with({"schedule.type=ddpm", "schedule.N=30", "schedule.beta_start=0.001", "schedule.beta_end=0.03"})
                        .schedule)
          .sigmas(),
      ddpm_schedule(30, 0.001, 0.03).sigmas()));
  EXPECT_TRUE(torch::equal(make_schedule(config_with({"schedule.type=ldm"}).schedule).sigmas(), ldm_schedule(1000, 0.00085, 0.012).sigmas()));
  EXPECT_TRUE(torch::equal(make_schedule(config_with({"schedule.type=sigmoid", "schedule.N=40"}).schedule).sigmas(),
                           sigmoid_schedule(40, 1e-4, 0.02).sigmas()));
  EXPECT_TRUE(torch::equal(make_schedule(config_with({"schedule.type=cosine"}).schedule).sigmas(), cosine_schedule(1000, 0.999).sigmas()));
  EXPECT_TRUE(torch::equal(
      make_schedule(config_with({"schedule.type=cosine", "schedule.N=20", "schedule.max_beta=0.5"}).schedule).sigmas(),
      cosine_schedule(20, 0.5).sigmas()));
  for (std::string type : {"loglinear", "ddpm", "ldm", "sigmoid", "cosine"})
    EXPECT_EQ(name_of(make_schedule(config_with({"schedule.type=" + type}).schedule).type()), type);
}

TEST(Schedule, MakeScheduleRejectsAnUnresolvedConfig) {
  ScheduleConfig unresolved;  // N and the parameters are still unset
  EXPECT_THROW(make_schedule(unresolved), Error);
}

// ---- schedules that float32 cannot hold are refused, naming the key to change -----------

TEST(ScheduleValidation, ConfigsFloat32CannotHoldNameTheKey) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
    const char* what;
  };
  const std::vector<Case> cases{
      // log-linear: 10^300 overflows; 10^-50 underflows; 200 values between 1 and 1.000001
      // are more than float32 has there.
      {{"schedule.sigma_max=1e300"}, "schedule.sigma_max", "= inf is not finite"},
      {{"schedule.sigma_max=1e39"}, "schedule.sigma_max", "sigma[197] = inf is not finite"},
      {{"schedule.sigma_min=1e-50"}, "schedule.sigma_min", "sigma[0] = 0 is not > 0"},
      {{"schedule.sigma_min=1", "schedule.sigma_max=1.000001"}, "schedule.N", "is not above sigma["},
      // betas near 1: prod(1 - beta) reaches 0 and 1/0 - 1 is inf.
      {{"schedule.type=ddpm", "schedule.beta_end=0.9999999"}, "schedule.beta_end", "is not finite"},
      {{"schedule.type=ldm", "schedule.beta_end=0.9999999"}, "schedule.beta_end", "is not finite"},
      {{"schedule.type=sigmoid", "schedule.beta_end=0.9999999"}, "schedule.beta_end", "is not finite"},
      {{"schedule.type=cosine", "schedule.max_beta=0.99999999"}, "schedule.max_beta", "sigma[999] = inf is not finite"},
      // betas so small that 1 - beta rounds to 1 (sigma 0), or to the same neighbours.
      {{"schedule.type=ddpm", "schedule.beta_start=1e-9"}, "schedule.beta_start", "sigma[0] = 0 is not > 0"},
      {{"schedule.type=ddpm", "schedule.beta_start=6e-8", "schedule.beta_end=1e-5"}, "schedule.beta_start",
       "sigma[1] = 0.000345266977 is not above sigma[0] = 0.000345266977"},
  };
  for (const auto& c : cases) {
    const auto message = test::error_of([&] { config_with(c.overrides); });
    EXPECT_THAT(message, HasSubstr(std::string("config: key '") + c.key + "'")) << c.overrides.back();
    EXPECT_THAT(message, HasSubstr(c.what)) << c.overrides.back();
  }
}

TEST(ScheduleValidation, FirstBadSigmaIsNamedWithItsIndex) {
  const auto loglinear = config_with({}).schedule;
  const auto message = [&](std::vector<float> sigmas) {
    return test::error_of([&] { validate_sigmas(loglinear, torch::tensor(sigmas)); });
  };
  EXPECT_THAT(message({0.1f, 0.2f, INFINITY, NAN}), HasSubstr("sigma[2] = inf is not finite"));
  EXPECT_THAT(message({0.1f, NAN, 0.3f}), HasSubstr("sigma[1] = nan is not finite"));
  EXPECT_THAT(message({-0.1f, 0.2f}), HasSubstr("sigma[0] = -0.100000001 is not > 0"));
  EXPECT_THAT(message({0.1f, 0.2f, 0.2f}), HasSubstr("sigma[2] = 0.200000003 is not above sigma[1] = 0.200000003"));
  EXPECT_THAT(message({0.1f, 0.3f, 0.2f}), HasSubstr("sigma[2] = 0.200000003 is not above sigma[1] = 0.300000012"));
  EXPECT_NO_THROW(validate_sigmas(loglinear, torch::tensor({0.1f, 0.2f, 0.3f})));
  EXPECT_NO_THROW(validate_sigmas(loglinear, torch::tensor({0.1f})));
}

TEST(ScheduleValidation, DefaultsOfEveryTypeAndLargeSchedulesPass) {
  for (std::string type : {"loglinear", "ddpm", "ldm", "sigmoid", "cosine"})
    EXPECT_NO_THROW(config_with({"schedule.type=" + type})) << type;
  EXPECT_NO_THROW(config_with({"schedule.N=100000", "schedule.sigma_min=0.002", "schedule.sigma_max=80"}));
  EXPECT_NO_THROW(config_with({"schedule.type=ddpm", "schedule.N=4000"}));
  EXPECT_NO_THROW(config_with({"schedule.type=cosine", "schedule.N=4000"}));
}

}  // namespace
}  // namespace difftrain
