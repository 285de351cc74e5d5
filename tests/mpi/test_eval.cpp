// The quality figure spread over ranks (run by ctest under mpirun -n 2 and -n 4): feature
// statistics combined over the ranks equal those of the whole set on one rank, so do the
// figures, and a failure on one rank ends the measurement on every rank.
#include <gtest/gtest.h>

#include "difftrain/data/partition.h"
#include "difftrain/error.h"
#include "difftrain/eval/evaluate.h"
#include "difftrain/eval/feature_moments.h"
#include "mpi_test_env.h"

namespace difftrain {
namespace {

using test::world;

// A world of one inside this process: what a run without mpirun sees.
class AloneCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string backend() const override { return "alone"; }
  torch::Device device() const override { return torch::kCPU; }
  void allreduce_sum(torch::Tensor&) override {}
  void allreduce_max(torch::Tensor&) override {}
  void broadcast(torch::Tensor&, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

// The same on every rank: a fixed seed.
torch::Tensor global_features(int64_t n, int64_t d, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({n, d}) * 2 + torch::arange(d).to(torch::kFloat32);
}

TEST(EvalSpread, CombinedMomentsEqualTheWholeSetsOnOneRank) {
  const int64_t n = 53, d = 6;  // 53: shares of unequal sizes on 2 and 4 ranks
  const auto all = global_features(n, d, 11);
  const RankShare share = rank_share(n, world().rank(), world().size());
  ASSERT_LT(share.size(), n);  // this rank holds only part of the set
  FeatureMoments moments(d);
  moments.add(all.narrow(0, share.begin, share.size()));
  moments.allreduce(world());
  ASSERT_EQ(moments.count(), n);
  const auto spread = moments.gaussian(), whole = fit_gaussian(all);
  EXPECT_TRUE(torch::allclose(spread.mean, whole.mean, 0, 1e-12));
  EXPECT_TRUE(torch::allclose(spread.cov, whole.cov, 0, 1e-10));
}

Embedding identity(const torch::Tensor& x) { return {x, x.narrow(1, 0, 2).argmax(1)}; }

ImageSource slices_of(torch::Tensor all) {
  return [all](int64_t begin, int64_t end) { return all.narrow(0, begin, end - begin); };
}

QualitySets synthetic_sets(int64_t n) {
  QualitySets sets;
  sets.n = n;
  sets.test = slices_of(global_features(n, 3, 1));
  sets.train = slices_of(global_features(n, 3, 2));
  const auto generated = global_features(n, 3, 3) * 1.5;
  sets.generated = slices_of(generated);
  sets.untrained = slices_of(global_features(n, 3, 4) * 4 + 3);
  // Every generated image "of its requested class": a share's labels taken from elsewhere
  // in the set would lower the accuracy.
  sets.labels = identity(generated).predicted;
  return sets;
}

TEST(EvalSpread, FiguresOverRanksEqualThoseOfOneRank) {
  const auto sets = synthetic_sets(101);
  AloneCommunicator alone;
  const auto one = measure_quality(sets, identity, 3, alone, 16);
  const auto many = measure_quality(sets, identity, 3, world(), 16);
  ASSERT_GT(one.fid, 0.1);  // the sets differ: a figure to compare
  EXPECT_NEAR(many.fid, one.fid, 1e-9 * one.fid);
  EXPECT_NEAR(many.fid_floor, one.fid_floor, 1e-9 * one.fid_floor);
  EXPECT_NEAR(many.fid_untrained, one.fid_untrained, 1e-9 * one.fid_untrained);
  ASSERT_TRUE(many.class_accuracy && one.class_accuracy);
  EXPECT_EQ(*one.class_accuracy, 1.0);
  EXPECT_EQ(*many.class_accuracy, 1.0);
  EXPECT_EQ(*many.class_accuracy_untrained, *one.class_accuracy_untrained);
  EXPECT_EQ(many.far_share, one.far_share);  // points: the same distances as images
  EXPECT_EQ(many.far_share_untrained, one.far_share_untrained);
  EXPECT_EQ(many.far_threshold, one.far_threshold);
}

Embedding flattened(const torch::Tensor& images) {
  const auto flat = images.flatten(1);
  return {flat, flat.narrow(1, 0, 2).argmax(1)};
}

// Images [n, 1, 6, 6], the same on every rank: blurred (smooth) or raw noise, seeded.
torch::Tensor global_images(int64_t n, uint64_t seed, bool smooth) {
  torch::manual_seed(seed);
  auto x = torch::rand({n, 1, 6, 6}) * 2 - 1;
  if (smooth) x = torch::avg_pool2d(torch::constant_pad_nd(x, {1, 1, 1, 1}, 0), 3, 1);
  return x;
}

// The distance and roughness figures, and the rows kept for --features, do not depend on
// how the sets were shared out: 53 images over 2 or 4 ranks, in batches of 5.
TEST(EvalSpread, ImageFiguresAndKeptRowsOverRanksEqualThoseOfOneRank) {
  const int64_t n = 53;
  QualitySets sets;
  sets.n = n;
  sets.test = slices_of(global_images(n, 1, true));
  sets.train = slices_of(global_images(n, 2, true));
  auto generated = global_images(n, 3, true);
  generated.narrow(0, 0, 20).copy_(global_images(20, 4, false));  // some of them noise
  sets.generated = slices_of(generated);
  sets.untrained = slices_of(global_images(n, 5, false));
  AloneCommunicator alone;
  QualityFeatures one_kept, many_kept;
  const auto one = measure_quality(sets, flattened, 36, alone, 5, &one_kept);
  const auto many = measure_quality(sets, flattened, 36, world(), 5, &many_kept);
  ASSERT_TRUE(one.noise_share && many.noise_share);
  ASSERT_GT(*one.noise_share, 0.0);  // something to count
  EXPECT_EQ(*many.noise_share, *one.noise_share);
  EXPECT_EQ(*many.noise_share_untrained, *one.noise_share_untrained);
  ASSERT_GT(one.far_share, 0.0);  // some generated images count, others do not
  ASSERT_LT(one.far_share, 1.0);
  EXPECT_EQ(many.far_share, one.far_share);
  EXPECT_EQ(many.far_share_untrained, one.far_share_untrained);
  EXPECT_EQ(many.far_threshold, one.far_threshold);
  ASSERT_EQ(many_kept.generated_images.size(0), n);
  EXPECT_TRUE(torch::equal(many_kept.generated_images, generated));
  for (const auto& [a, b] : {std::pair{many_kept.generated, one_kept.generated}, {many_kept.untrained, one_kept.untrained},
                             {many_kept.train, one_kept.train}, {many_kept.test, one_kept.test},
                             {many_kept.untrained_images, one_kept.untrained_images},
                             {many_kept.train_images, one_kept.train_images},
                             {many_kept.test_images, one_kept.test_images}}) {
    ASSERT_EQ(a.size(0), n);
    EXPECT_TRUE(torch::equal(a, b));
  }
}

TEST(EvalSpread, AFailureOnOneRankEndsEveryRank) {
  auto sets = synthetic_sets(40);
  const int last = world().size() - 1;
  sets.generated = [last](int64_t begin, int64_t end) {
    if (world().rank() == last) fail("sampler broke on this rank");
    return torch::zeros({end - begin, 3});
  };
  bool rank_error = false, peer_error = false;
  std::string message;
  try {
    measure_quality(sets, identity, 3, world());
  } catch (const RankError& e) {
    rank_error = true, message = e.what();
  } catch (const PeerError&) {
    peer_error = true;
  }
  EXPECT_EQ(rank_error, world().rank() == last);
  EXPECT_EQ(peer_error, world().rank() != last);
  if (world().rank() == last) {
    EXPECT_EQ(message, fmt::format("rank {}: sampler broke on this rank", last));
  }
  // Every rank is still in step: a collective after the failure completes.
  auto one = torch::ones({1}, torch::kInt64);
  world().allreduce_sum(one);
  EXPECT_EQ(one.item<int64_t>(), world().size());
}

}  // namespace
}  // namespace difftrain
