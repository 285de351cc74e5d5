// The Fréchet distance against closed forms (equal Gaussians, diagonal covariances, the
// 2x2 case of two covariances that do not commute), its invariance under rotations, and the
// feature moments it is fed: sums over batches give the mean and covariance of the whole set.
#include <gtest/gtest.h>

#include <cmath>

#include "difftrain/error.h"
#include "difftrain/eval/feature_moments.h"
#include "difftrain/eval/frechet.h"
#include "test_util.h"

namespace difftrain {
namespace {

const auto f64 = torch::kFloat64;

// A random symmetric positive-definite d x d matrix.
torch::Tensor random_spd(int64_t d, uint64_t seed) {
  torch::manual_seed(seed);
  const auto a = torch::randn({d, d}, f64);
  return a.matmul(a.transpose(0, 1)) / static_cast<double>(d) + 0.1 * torch::eye(d, f64);
}

torch::Tensor random_rotation(int64_t d, uint64_t seed) {
  torch::manual_seed(seed);
  return std::get<0>(at::linalg_qr(torch::randn({d, d}, f64)));
}

TEST(Frechet, IdenticalGaussiansAreAtZero) {
  const auto cov = random_spd(32, 1);
  const auto mu = torch::randn({32}, f64);
  ASSERT_GT(cov.trace().item<double>(), 1.0);  // the cross term cancels a sizeable trace
  EXPECT_NEAR(frechet_distance(mu, cov, mu, cov), 0.0, 1e-9);
}

TEST(Frechet, DiagonalCovariancesMatchTheClosedForm) {
  torch::manual_seed(2);
  const auto a = torch::rand({6}, f64) * 4 + 0.01, b = torch::rand({6}, f64) * 4 + 0.01;
  const auto mu1 = torch::randn({6}, f64), mu2 = torch::randn({6}, f64);
  const double expected =
      (mu1 - mu2).pow(2).sum().item<double>() + (a.sqrt() - b.sqrt()).pow(2).sum().item<double>();
  ASSERT_GT(expected, 0.5);
  EXPECT_NEAR(frechet_distance(mu1, torch::diag(a), mu2, torch::diag(b)), expected, 1e-9 * expected);
}

// For 2x2 matrices tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), and M = S1^1/2 S2 S1^1/2 has
// tr M = tr(S1 S2), det M = det S1 det S2: a closed form for covariances that do not commute.
TEST(Frechet, NonCommutingTwoByTwoMatchesTheClosedForm) {
  const auto s1 = torch::tensor({{2.0, 0.7}, {0.7, 1.0}}, f64), s2 = torch::tensor({{0.5, -0.3}, {-0.3, 3.0}}, f64);
  ASSERT_FALSE(torch::allclose(s1.matmul(s2), s2.matmul(s1)));
  const auto mu1 = torch::tensor({1.0, -2.0}, f64), mu2 = torch::tensor({0.5, 0.5}, f64);
  const double cross = std::sqrt(s1.matmul(s2).trace().item<double>() +
                                 2 * std::sqrt(torch::det(s1).item<double>() * torch::det(s2).item<double>()));
  const double expected = (mu1 - mu2).pow(2).sum().item<double>() + s1.trace().item<double>() +
                          s2.trace().item<double>() - 2 * cross;
  EXPECT_NEAR(frechet_distance(mu1, s1, mu2, s2), expected, 1e-12 * expected);
}

TEST(Frechet, RotatingBothGaussiansKeepsTheDistance) {
  const int64_t d = 12;
  const auto s1 = random_spd(d, 3), s2 = random_spd(d, 4);
  torch::manual_seed(5);
  const auto mu1 = torch::randn({d}, f64), mu2 = torch::randn({d}, f64);
  const auto q = random_rotation(d, 6);
  const double before = frechet_distance(mu1, s1, mu2, s2);
  const double after = frechet_distance(q.matmul(mu1), q.matmul(s1).matmul(q.t()), q.matmul(mu2),
                                        q.matmul(s2).matmul(q.t()));
  ASSERT_GT(before, 1.0);
  EXPECT_NEAR(after, before, 1e-9 * before);
  // Rotating only one of them moves it: the check above is not blind to rotations.
  EXPECT_GT(std::abs(frechet_distance(mu1, s1, mu2, q.matmul(s2).matmul(q.t())) - before), 1e-3);
}

TEST(Frechet, SymmetricInItsArguments) {
  const auto s1 = random_spd(8, 7), s2 = random_spd(8, 8);
  const auto mu = torch::zeros({8}, f64);
  const double forth = frechet_distance(mu, s1, mu, s2), back = frechet_distance(mu, s2, mu, s1);
  ASSERT_GT(forth, 0.1);
  EXPECT_NEAR(forth, back, 1e-9 * forth);
}

TEST(Frechet, MismatchedOrNonFiniteInputsAreNamed) {
  const auto mu3 = torch::zeros({3}, f64), cov3 = torch::eye(3, f64);
  EXPECT_MENTIONS(test::error_of([&] { frechet_distance(mu3, cov3, torch::zeros({4}, f64), torch::eye(4, f64)); }),
                  "3 and 4 features");
  EXPECT_MENTIONS(test::error_of([&] { frechet_distance(mu3, torch::eye(2, f64), mu3, cov3); }),
                  "the first set has mean of shape [3] and covariance of shape [2, 2]");
  auto bad = cov3.clone();
  bad[1][1] = std::nan("");
  EXPECT_MENTIONS(test::error_of([&] { frechet_distance(mu3, cov3, mu3, bad); }), "the second set holds a NaN");
}

// ---- feature moments ---------------------------------------------------------------------

TEST(FeatureMoments, BatchSumsGiveTheWholeSetsMeanAndCovariance) {
  torch::manual_seed(9);
  const auto features = torch::randn({101, 5}) * 3 + 7;  // float32, offset: cancellation matters
  FeatureMoments moments(5);
  moments.add(features.narrow(0, 0, 40));
  moments.add(features.narrow(0, 40, 0));  // an empty batch (a rank with no share) adds nothing
  moments.add(features.narrow(0, 40, 61));
  ASSERT_EQ(moments.count(), 101);
  const auto g = moments.gaussian();
  const auto x = features.to(f64);
  const auto centered = x - x.mean(0);
  EXPECT_TRUE(torch::allclose(g.mean, x.mean(0), 0, 1e-12));
  EXPECT_TRUE(torch::allclose(g.cov, centered.t().matmul(centered) / 100.0, 0, 1e-10));
  EXPECT_TRUE(torch::allclose(fit_gaussian(features).cov, g.cov, 0, 1e-12));
}

TEST(FeatureMoments, RefusesTooFewVectorsAndWrongShapes) {
  FeatureMoments moments(4);
  moments.add(torch::ones({1, 4}));
  EXPECT_MENTIONS(test::error_of([&] { moments.gaussian(); }), "at least 2 feature vectors, got 1");
  EXPECT_MENTIONS(test::error_of([&] { moments.add(torch::ones({2, 3})); }), "expected features of shape [b, 4], got [2, 3]");
}

}  // namespace
}  // namespace difftrain
