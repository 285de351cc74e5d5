// Class conditioning: classifier-free guidance, label dropout, class choice, the loader's
// labels and flips, and the loss by noise level.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/data/batch_loader.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/prepare.h"
#include "difftrain/train/loss_by_sigma.h"
#include "test_util.h"

namespace difftrain {
namespace {

using test::TempDir;
using test::error_of;

// eps(x, sigma, label) = 2 x + sigma + bias[label]: the guided estimate of such a model is
// known in closed form. It counts its calls and the batch sizes it was given.
class LabelledAffine : public Denoiser {
 public:
  explicit LabelledAffine(int64_t classes) : classes_(classes) {
    bias_ = torch::arange(classes + 1, torch::kFloat64) * 10 + 1;  // the null label's bias: 10 K + 1
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& labels) override {
    ++calls;
    batch_sizes.push_back(x.size(0));
    return 2 * x + sigma + bias_.index_select(0, labels).view({-1, 1});
  }
  std::vector<int64_t> input_dims() const override { return {3}; }
  int64_t num_classes() const override { return classes_; }
  torch::Tensor bias_;
  int64_t classes_;
  int calls = 0;
  std::vector<int64_t> batch_sizes;
};

TEST(Guidance, IsConditionalPlusScaleTimesConditionalMinusUnconditionalInOneDoubledBatch) {
  LabelledAffine model(4);
  const auto x = torch::randn({5, 3}, torch::kFloat64);
  const auto sigma = torch::tensor(0.7, torch::kFloat64);
  const auto labels = torch::tensor({0, 3, 1, 1, 2}, torch::kInt64);
  for (double s : {0.0, 1.0, 2.5, 7.0}) {
    model.calls = 0, model.batch_sizes.clear();
    const auto got = guided_eps(model, Parameterization::eps, x, sigma, labels, s);
    const auto eps_c = 2 * x + 0.7 + (labels.to(torch::kFloat64) * 10 + 1).view({-1, 1});
    const auto eps_u = 2 * x + 0.7 + 41.0;  // null label 4: bias 41
    const auto expected = eps_c + s * (eps_c - eps_u);
    EXPECT_TRUE(torch::allclose(got, expected, 1e-12, 1e-12)) << "scale " << s;
    EXPECT_EQ(model.calls, 1) << "scale " << s;
    // Scale 0 is the conditional estimate alone: no unconditional half is computed.
    EXPECT_EQ(model.batch_sizes, std::vector<int64_t>{s == 0 ? 5 : 10}) << "scale " << s;
  }
}

TEST(Guidance, NeedsOneSigmaForTheBatch) {
  LabelledAffine model(2);
  const auto x = torch::randn({2, 3}, torch::kFloat64);
  EXPECT_MENTIONS(error_of([&] {
                    guided_eps(model, Parameterization::eps, x, torch::ones({2}, torch::kFloat64),
                               torch::zeros({2}, torch::kInt64), 2.0);
                  }),
                  "one sigma");
}

TEST(LabelDropout, DropsTheGivenShareToTheNullLabelReproducibly) {
  const auto labels = torch::arange(20000, torch::kInt64).remainder(10);
  auto gen = random_stream(3, 1, Stream::cond_drop, 7), same = random_stream(3, 1, Stream::cond_drop, 7);
  const auto dropped = drop_labels(labels, 0.1, 10, gen);
  EXPECT_TRUE(torch::equal(dropped, drop_labels(labels, 0.1, 10, same)));
  const double share = (dropped == 10).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(share, 0.1, 0.01);
  // What is not dropped is unchanged.
  const auto kept = dropped != 10;
  EXPECT_TRUE(torch::equal(dropped.masked_select(kept), labels.masked_select(kept)));
  auto g0 = random_stream(3, 1, Stream::cond_drop, 7), g1 = random_stream(3, 1, Stream::cond_drop, 7);
  EXPECT_TRUE(torch::equal(drop_labels(labels, 0.0, 10, g0), labels));
  EXPECT_TRUE((drop_labels(labels, 1.0, 10, g1) == 10).all().item<bool>());
  // Another step's stream drops other labels.
  auto other = random_stream(3, 1, Stream::cond_drop, 8);
  EXPECT_FALSE(torch::equal(drop_labels(labels, 0.1, 10, other), dropped));
}

TEST(ClassChoice, AllGivesEveryClassInBlocksAndANumberGivesThatClass) {
  EXPECT_TRUE(torch::equal(class_labels(std::nullopt, 3, 7), torch::tensor({0, 0, 0, 1, 1, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(class_labels(std::nullopt, 10, 20).bincount(), torch::full({10}, 2, torch::kInt64)));
  EXPECT_TRUE(torch::equal(class_labels(4, 10, 3), torch::tensor({4, 4, 4}, torch::kInt64)));
  EXPECT_EQ(parse_class_choice("all", 10, "--class"), std::nullopt);
  EXPECT_EQ(parse_class_choice("9", 10, "--class"), 9);
  EXPECT_MENTIONS(error_of([] { parse_class_choice("10", 10, "sample: --class"); }),
                  "sample: --class: expected a class id in [0, 9] or 'all', got '10'");
  EXPECT_MENTIONS(error_of([] { parse_class_choice("3x", 10, "--class"); }), "got '3x'");
  EXPECT_MENTIONS(error_of([] { parse_class_choice("-1", 10, "--class"); }), "got '-1'");
  EXPECT_MENTIONS(error_of([] { parse_class_choice("2", 0, "--class"); }), "unconditional");
}

// ---- the loader's labels and flips ------------------------------------------------------

// 30 images [1, 2, 3] whose pixels encode (row, column); label = row % 5.
struct ImageData {
  TempDir dir;
  torch::Tensor x, y;
  ImageData() {
    x = (torch::arange(30, torch::kFloat32).view({30, 1, 1, 1}) * 10 + torch::arange(6, torch::kFloat32).view({1, 1, 2, 3})) / 400;
    y = torch::arange(30, torch::kInt64).remainder(5);
    write_shards(dir.path(), 3, x, y);
  }
};

TEST(LoaderLabels, EachLabelTravelsWithItsExample) {
  ImageData data;
  auto ds = ShardedDataset::open(data.dir.path());
  LoaderExtras extras{ds.labels(), false};
  ASSERT_TRUE(extras.labels.has_value());
  BatchLoader loader(std::move(ds), rank_share(30, 1, 2), 4, 11, 1, 0, std::move(extras));
  for (int b = 0; b < 10; ++b) {  // beyond one epoch of the 15-example share
    const Batch batch = loader.next();
    ASSERT_TRUE(batch.y.defined());
    ASSERT_EQ(batch.y.size(0), 4);
    const auto row = (batch.x.select(1, 0).select(1, 0).select(1, 0) * 400 / 10).round().to(torch::kInt64);
    EXPECT_TRUE(torch::equal(batch.y, row.remainder(5))) << "batch " << b;
    EXPECT_TRUE((row >= 15).all().item<bool>());  // rank 1's share
  }
}

TEST(LoaderFlips, FlipAboutHalfTheImagesLeftRightAndResumeExactly) {
  ImageData data;
  auto open = [&] { return ShardedDataset::open(data.dir.path()); };
  BatchLoader plain(open(), rank_share(30, 0, 1), 6, 5, 0), flipping(open(), rank_share(30, 0, 1), 6, 5, 0, 0, {{}, true});
  int flipped = 0, total = 0;
  std::vector<torch::Tensor> seen;
  for (int b = 0; b < 20; ++b) {
    const auto a = plain.next().x, f = flipping.next().x;
    seen.push_back(f);
    for (int64_t i = 0; i < a.size(0); ++i) {
      const bool same = torch::equal(f[i], a[i]), mirrored = torch::equal(f[i], a[i].flip({2}));
      EXPECT_TRUE(same || mirrored) << "batch " << b << " image " << i;
      flipped += mirrored, ++total;
    }
  }
  EXPECT_GT(flipped, total * 3 / 10);
  EXPECT_LT(flipped, total * 7 / 10);
  // Started at batch 7's position, the loader flips exactly as the uninterrupted one did.
  BatchLoader resumed(open(), rank_share(30, 0, 1), 6, 5, 0, 7 * 6, {{}, true});
  for (int b = 7; b < 20; ++b) EXPECT_TRUE(torch::equal(resumed.next().x, seen[b])) << "batch " << b;
}

TEST(LoaderFlips, AreForImagesOnly) {
  TempDir dir;
  write_shards(dir.path(), 1, torch::randn({8, 2}));
  EXPECT_MENTIONS(error_of([&] { BatchLoader(ShardedDataset::open(dir.path()), rank_share(8, 0, 1), 2, 0, 0, 0, {{}, true}); }),
                  "data.hflip");
}

// ---- loss by noise level ------------------------------------------------------------------

TEST(LossBySigma, BinsEachExampleByLogSigma) {
  LossBySigma bins(0.01, 100.0, 4);  // log-sigma edges: ln 0.01, ln 0.1, ln 1, ln 10, ln 100
  ASSERT_EQ(bins.log_sigma_edges().size(), 5u);
  EXPECT_NEAR(bins.log_sigma_edges()[2], 0.0, 1e-12);
  const auto sigma = torch::tensor({0.01, 0.05, 0.5, 0.9, 5.0, 99.0, 1000.0}).view({-1, 1, 1});
  const auto loss = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0});
  const auto out = bins.bin(loss, sigma);
  ASSERT_EQ(out.numel(), 8);
  // [sums per bin, counts per bin]; 1000 is beyond the last edge and counts in the last bin.
  EXPECT_TRUE(torch::equal(out, torch::tensor({3.0, 7.0, 5.0, 13.0, 2.0, 2.0, 1.0, 2.0}, torch::kFloat64)));
  bins.add(out);
  bins.add(out);
  EXPECT_EQ(bins.sums(), (std::vector<double>{6, 14, 10, 26}));
  EXPECT_EQ(bins.counts(), (std::vector<double>{4, 4, 2, 4}));
  bins.clear();
  EXPECT_EQ(bins.counts(), (std::vector<double>{0, 0, 0, 0}));
}

}  // namespace
}  // namespace difftrain
