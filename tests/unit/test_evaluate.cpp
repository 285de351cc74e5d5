// The quality figure's core on synthetic sets with known answers: "samples" that are the
// test images themselves score 0, fresh draws of the real distribution score near the floor,
// noise scores far above it; class accuracy counts samples of their requested class. And
// `eval` as a whole on an untrained tiny DiT over 8x8 images: where it looks for its
// classifier and test images, its report, and its refusals naming the file or option.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "difftrain/eval/evaluate.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/registry.h"
#include "test_util.h"

namespace difftrain {
namespace {

Communicator& single_rank() {
  static auto comm = make_communicator(Backend::mpi);
  return *comm;
}

constexpr int64_t kN = 400, kDim = 4;

// "Images" are points in R^4; class k sits around 6 e_k (k = 0, 1), unit noise. The
// embedding is the point itself, and its class the larger of the first two coordinates.
torch::Tensor draw(const torch::Tensor& labels, uint64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::randn({labels.size(0), kDim}, torch::kFloat64);
  x.narrow(1, 0, 2).add_(6 * torch::one_hot(labels, 2).to(torch::kFloat64));
  return x;
}

Embedding identity_embedding(const torch::Tensor& images) {
  return {images, images.narrow(1, 0, 2).argmax(1)};
}

ImageSource slices_of(torch::Tensor all) {
  return [all](int64_t begin, int64_t end) { return all.narrow(0, begin, end - begin); };
}

struct Synthetic {
  torch::Tensor labels = class_labels(std::nullopt, 2, kN);
  torch::Tensor test = draw(labels, 1), train = draw(labels, 2);
  QualitySets sets(ImageSource generated, ImageSource untrained, bool conditional = true) const {
    QualitySets s;
    s.n = kN;
    s.test = slices_of(test), s.train = slices_of(train);
    s.generated = std::move(generated), s.untrained = std::move(untrained);
    if (conditional) s.labels = labels;
    return s;
  }
};

QualityFigures measure(const QualitySets& sets, int64_t batch = 64) {
  return measure_quality(sets, identity_embedding, kDim, single_rank(), batch);
}

TEST(QualityCore, TestImagesScoreZeroFreshDrawsNearTheFloorNoiseFarAbove) {
  const Synthetic s;
  torch::manual_seed(3);
  const auto noise = torch::randn({kN, kDim}, torch::kFloat64) * 5;
  const auto figures = measure(s.sets(slices_of(s.test), slices_of(noise)));
  EXPECT_NEAR(figures.fid, 0.0, 1e-9);
  // Two draws of one distribution differ only by sampling noise: a small floor, which a
  // third draw matches, and noise is far from both.
  EXPECT_GT(figures.fid_floor, 0.0);
  EXPECT_LT(figures.fid_floor, 0.5);
  EXPECT_GT(figures.fid_untrained, 50.0);

  const auto fresh = measure(s.sets(slices_of(draw(s.labels, 4)), slices_of(noise)));
  EXPECT_LT(fresh.fid, 3 * fresh.fid_floor + 0.1);
  EXPECT_NEAR(fresh.fid_floor, figures.fid_floor, 1e-12);  // the real sets are the same
}

TEST(QualityCore, ClassAccuracyCountsSamplesOfTheirRequestedClass) {
  const Synthetic s;
  const auto matched = draw(s.labels, 5), swapped = draw(1 - s.labels, 6);
  const auto figures = measure(s.sets(slices_of(matched), slices_of(swapped)));
  ASSERT_TRUE(figures.class_accuracy && figures.class_accuracy_untrained);
  EXPECT_GT(*figures.class_accuracy, 0.99);
  EXPECT_LT(*figures.class_accuracy_untrained, 0.01);
  // Class-swapped samples have the right distribution overall (balanced classes): only the
  // class accuracy can tell them apart.
  EXPECT_LT(figures.fid_untrained, 3 * figures.fid_floor + 0.1);

  const auto unconditional = measure(s.sets(slices_of(matched), slices_of(swapped), /*conditional=*/false));
  EXPECT_FALSE(unconditional.class_accuracy);
  EXPECT_FALSE(unconditional.class_accuracy_untrained);
  EXPECT_NEAR(unconditional.fid, figures.fid, 1e-12);
}

TEST(QualityCore, BatchSizeDoesNotChangeTheFigures) {
  const Synthetic s;
  const auto sets = s.sets(slices_of(draw(s.labels, 7)), slices_of(draw(s.labels, 8)));
  const auto whole = measure(sets, kN), pieces = measure(sets, 37);
  EXPECT_NEAR(pieces.fid, whole.fid, 1e-9);
  EXPECT_NEAR(pieces.fid_untrained, whole.fid_untrained, 1e-9);
  EXPECT_EQ(*pieces.class_accuracy, *whole.class_accuracy);
}

TEST(QualityCore, FailuresNameTheSet) {
  const Synthetic s;
  auto sets = s.sets(slices_of(s.test), [](int64_t, int64_t) -> torch::Tensor { fail("untrained sampler broke"); });
  EXPECT_MENTIONS(test::error_of([&] { measure(sets); }), "untrained sampler broke");
  sets.untrained = [](int64_t begin, int64_t end) { return torch::zeros({end - begin + 1, kDim}); };
  EXPECT_MENTIONS(test::error_of([&] { measure(sets); }), "the untrained set gave shape [65, 4] for 64 images");
  sets.n = 1;
  EXPECT_MENTIONS(test::error_of([&] { measure(sets); }), "at least 2 images per set, got n = 1");
}

// A classifier whose weights give non-finite features (finite weights of 1e30, say) is
// named in the error, not left to a Frechet distance that fails without saying why.
TEST(QualityCore, NonFiniteFeaturesNameTheClassifier) {
  torch::manual_seed(0);
  Classifier classifier(std::vector<int64_t>{1, 8, 8}, 3);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : classifier->parameters()) p.fill_(1e30);
  }
  const auto embed = classifier_embedding(classifier, "data/classifier.pt");
  EXPECT_MENTIONS(test::error_of([&] { embed(torch::rand({4, 1, 8, 8})); }),
                  "eval: classifier data/classifier.pt gives non-finite features for images in [-1, 1] (its largest "
                  "weight is 1e+30 in magnitude)");
}

TEST(QualityCore, ClassifierEmbeddingClampsToTheImageRange) {
  torch::manual_seed(0);
  Classifier classifier(std::vector<int64_t>{1, 8, 8}, 3);
  const auto embed = classifier_embedding(classifier, "test classifier");
  const auto x = torch::rand({4, 1, 8, 8}) * 2 - 1;
  auto overshoot = x.clone();
  overshoot.index_put_({torch::indexing::Slice(), 0, 0, 0}, 5.0);
  auto at_edge = x.clone();
  at_edge.index_put_({torch::indexing::Slice(), 0, 0, 0}, 1.0);
  const auto e = embed(overshoot);
  EXPECT_EQ(e.features.sizes(), torch::IntArrayRef({4, ClassifierImpl::kFeatures}));
  EXPECT_EQ(e.predicted.sizes(), torch::IntArrayRef({4}));
  EXPECT_TRUE(torch::equal(e.features, embed(at_edge).features));
  EXPECT_FALSE(torch::equal(e.features, embed(x).features));
}

// Smooth images [n, 1, 8, 8]: a bright disc of random centre and radius on a dark ground.
torch::Tensor discs(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  const auto grid = torch::arange(8, torch::kFloat32);
  const auto centre = torch::rand({n, 2}) * 4 + 2, radius = torch::rand({n, 1, 1}) * 2 + 1.5;
  const auto dy = grid.view({1, 8, 1}) - centre.narrow(1, 0, 1).view({n, 1, 1});
  const auto dx = grid.view({1, 1, 8}) - centre.narrow(1, 1, 1).view({n, 1, 1});
  return (torch::sigmoid(2 * (radius - (dy.square() + dx.square()).sqrt())) * 2 - 1).unsqueeze(1);
}

Embedding pixel_embedding(const torch::Tensor& images) {
  const auto flat = images.flatten(1).to(torch::kFloat64);
  return {flat, flat.narrow(1, 0, 2).argmax(1)};
}

// far_share and noise_share on sets whose answer is known: samples copied from the test
// images are near a real image and no rougher than one; uniform noise is neither.
TEST(QualityCore, FarAndNoiseSharesCountSamplesUnlikeAnyRealImage) {
  const int64_t n = 200;
  QualitySets sets;
  sets.n = n;
  const auto test_images = discs(n, 1), train_images = discs(n, 2);
  sets.test = slices_of(test_images), sets.train = slices_of(train_images);
  torch::manual_seed(3);
  const auto noise = torch::rand({n, 1, 8, 8}) * 2 - 1;
  // Every other sample noise, the rest test images: exactly half of each kind.
  auto mixed = test_images.clone();
  for (int64_t i = 0; i < n; i += 2) mixed[i] = noise[i];
  sets.generated = slices_of(mixed), sets.untrained = slices_of(noise);
  const auto f = measure_quality(sets, pixel_embedding, 64, single_rank(), 64);
  EXPECT_EQ(f.far_share, 0.5);
  ASSERT_TRUE(f.noise_share && f.noise_share_untrained);
  EXPECT_EQ(*f.noise_share, 0.5);
  EXPECT_EQ(f.far_share_untrained, 1.0);
  EXPECT_EQ(*f.noise_share_untrained, 1.0);
  // The threshold is the farthest a test image lies from its nearest training image.
  const auto pairwise = torch::cdist(test_images.flatten(1).to(torch::kFloat64), train_images.flatten(1).to(torch::kFloat64));
  EXPECT_NEAR(f.far_threshold, std::get<0>(pairwise.min(1)).max().item<double>(), 1e-9);
  // Fresh discs are near real ones and as smooth: the figures count none of them.
  sets.generated = slices_of(discs(n, 4));
  const auto fresh = measure_quality(sets, pixel_embedding, 64, single_rank(), 64);
  EXPECT_EQ(*fresh.noise_share, 0.0);
  EXPECT_LT(fresh.far_share, 0.05);
  // Points have no neighbouring pixels: no noise_share for them.
  EXPECT_FALSE(measure(Synthetic().sets(slices_of(Synthetic().test), slices_of(Synthetic().train))).noise_share);
}

// Given somewhere to keep them, the figures' inputs come back whole and in order.
TEST(QualityCore, KeptFeaturesAndImagesAreTheSetsInOrder) {
  const int64_t n = 50;
  QualitySets sets;
  sets.n = n;
  const auto test_images = discs(n, 1), train_images = discs(n, 2), generated = discs(n, 3), untrained = discs(n, 4);
  sets.test = slices_of(test_images), sets.train = slices_of(train_images);
  sets.generated = slices_of(generated), sets.untrained = slices_of(untrained);
  QualityFeatures kept;
  const auto f = measure_quality(sets, pixel_embedding, 64, single_rank(), 16, &kept);
  const auto flat = [](const torch::Tensor& t) { return t.flatten(1).to(torch::kFloat32); };
  EXPECT_TRUE(torch::equal(kept.generated, flat(generated)));
  EXPECT_TRUE(torch::equal(kept.untrained, flat(untrained)));
  EXPECT_TRUE(torch::equal(kept.train, flat(train_images)));
  EXPECT_TRUE(torch::equal(kept.test, flat(test_images)));
  EXPECT_TRUE(torch::equal(kept.generated_images, generated));
  EXPECT_TRUE(torch::equal(kept.untrained_images, untrained));
  EXPECT_TRUE(torch::equal(kept.train_images, train_images));
  EXPECT_TRUE(torch::equal(kept.test_images, test_images));
  // Keeping changes no figure.
  EXPECT_EQ(measure_quality(sets, pixel_embedding, 64, single_rank(), 16).fid, f.fid);
  // Sets of other image shapes are refused before anything is gathered (where one rank's
  // failure would leave the others in the all-reduce): each set meets its reference first.
  sets.train = slices_of(torch::zeros({n, 1, 4, 16}));
  EXPECT_MENTIONS(test::error_of([&] { measure_quality(sets, pixel_embedding, 64, single_rank(), 16, &kept); }),
                  "eval: the test set's images have shape [1, 8, 8], the real images they are compared with [1, 4, 16]");
  sets.train = slices_of(train_images), sets.untrained = slices_of(torch::zeros({n, 1, 4, 16}));
  EXPECT_MENTIONS(test::error_of([&] { measure_quality(sets, pixel_embedding, 64, single_rank(), 16, &kept); }),
                  "eval: the untrained set's images have shape [1, 4, 16], the real images they are compared with [1, 8, 8]");
}

// A checkpoint of an untrained toy model (2-d points).
std::string points_checkpoint(const test::TempDir& dir) {
  const Config config = parse_config("", "test", {"model.hidden_dims=[16, 16]", "schedule.N=20", "sample.steps=5"});
  Checkpoint c;
  c.config_yaml = to_yaml(config);
  c.sample_shape = {2};
  auto model = make_model(config.model, c.sample_shape);
  c.model = c.ema = state_dict(*model);
  save_checkpoint(dir / "points.pt", c);
  return dir / "points.pt";
}

TEST(EvalCommand, RefusesPointsAndTooFewImages) {
  test::TempDir dir;
  EvalOptions o;
  o.checkpoint = points_checkpoint(dir);
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "points.pt: the checkpoint's examples have shape [2]; eval measures images [C, H, W]");
  o.n = 1;
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }), "--n must be >= 2");
  o.n = 10, o.gam = -1;
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }), "--gam must be in");
  o.gam.reset(), o.checkpoint = dir / "missing.pt";
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }), "missing.pt: no such checkpoint");
}

// n images [1, 8, 8] of two classes: bright left half (0) or right half (1), with noise.
std::pair<torch::Tensor, torch::Tensor> halves(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  const auto y = torch::arange(n, torch::kInt64) % 2;
  auto x = torch::full({n, 1, 8, 8}, -0.6) + 0.3 * torch::randn({n, 1, 8, 8});
  x.narrow(3, 0, 4).add_(1.2 * (1 - y).to(torch::kFloat32).view({n, 1, 1, 1}));
  x.narrow(3, 4, 4).add_(1.2 * y.to(torch::kFloat32).view({n, 1, 1, 1}));
  return {x.clamp(-1, 1), y};
}

// DIR/data/{train,test} of 8x8 images, the classifier beside them (where eval looks by
// default), and the checkpoint of an untrained class-conditional DiT of DIR/data/train.
struct TinyImageRun {
  test::TempDir dir;
  std::string train = dir / "data/train", test_images = dir / "data/test", classifier = dir / "data/classifier.pt";
  std::string checkpoint = dir / "dit.pt";
  TinyImageRun() {
    const auto [x, y] = halves(96, 1);
    const auto [tx, ty] = halves(64, 2);
    write_shards(train, 2, x, y);
    write_shards(test_images, 1, tx, ty);
    ClassifierOptions co;
    co.train = train, co.test = test_images, co.epochs = 1, co.batch_size = 16;
    save_classifier(classifier, train_classifier(co));
    const Config config = parse_config(
        "", "test",
        {"data.path=" + train, "model.type=dit", "model.patch=4", "model.depth=1", "model.head_dim=8",
         "model.num_heads=1", "model.num_classes=2", "schedule.N=20", "sample.steps=3", "sample.cfg_scale=1.5"});
    Checkpoint c;
    c.config_yaml = to_yaml(config);
    c.sample_shape = {1, 8, 8};
    c.step = 123;
    auto model = make_model(config.model, c.sample_shape);
    c.model = c.ema = state_dict(*model);
    save_checkpoint(checkpoint, c);
  }
  EvalOptions options() const {
    EvalOptions o;
    o.checkpoint = checkpoint;
    o.n = 24;
    return o;
  }
};

TEST(EvalCommand, MeasuresACheckpointWithTheClassifierAndTestImagesBesideItsData) {
  const TinyImageRun run;
  const auto r = run_eval(run.options(), single_rank());
  EXPECT_EQ(r.classifier, run.classifier);
  EXPECT_EQ(r.test, run.test_images);
  EXPECT_EQ(r.checkpoint_step, 123);
  EXPECT_EQ(r.n, 24);
  EXPECT_EQ(r.steps, 3);
  ASSERT_TRUE(r.cfg_scale);
  EXPECT_EQ(*r.cfg_scale, 1.5);
  ASSERT_TRUE(r.figures.class_accuracy && r.figures.class_accuracy_untrained);
  EXPECT_EQ(r.classifier_test_accuracy, load_classifier(run.classifier).test_accuracy);
  // Real training images against real test images are close; noise from an untrained
  // model is far from both (the checkpoint here is untrained too).
  EXPECT_GT(r.figures.fid_floor, 0.0);
  EXPECT_GT(r.figures.fid_untrained, 5 * r.figures.fid_floor);
  EXPECT_GT(r.figures.fid, 5 * r.figures.fid_floor);
  // The same seed gives the same figures; another seed other samples.
  const auto again = run_eval(run.options(), single_rank());
  EXPECT_EQ(again.figures.fid, r.figures.fid);
  auto other = run.options();
  other.seed = 1;
  EXPECT_NE(run_eval(other, single_rank()).figures.fid, r.figures.fid);
}

TEST(EvalCommand, FeaturesFileHoldsWhatTheFiguresCameFrom) {
  const TinyImageRun run;
  auto o = run.options();
  o.features = run.dir / "features.h5";
  const auto r = run_eval(o, single_rank());
  const auto file = ShardedDataset::open(o.features, "generated");
  EXPECT_EQ(file.size(), 24);
  EXPECT_EQ(file.sample_shape(), std::vector<int64_t>{ClassifierImpl::kFeatures});
  for (const char* name : {"untrained", "train", "test"})
    EXPECT_EQ(ShardedDataset::open(o.features, name).sample_shape(), std::vector<int64_t>{ClassifierImpl::kFeatures})
        << name;
  for (const char* name : {"generated_images", "untrained_images", "train_images", "test_images"})
    EXPECT_EQ(ShardedDataset::open(o.features, name).sample_shape(), (std::vector<int64_t>{1, 8, 8})) << name;
  // The test images are those eval drew: the classifier's features of them are the file's.
  const auto whole = [&](const char* name) {
    auto d = ShardedDataset::open(o.features, name);
    return d.read_stored(0, d.size());
  };
  auto classifier = load_classifier(run.classifier).model;
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(classifier->features(whole("test_images")), whole("test"), 1e-5, 1e-6));
  auto labels = ShardedDataset::open(o.features, "generated").labels("generated_labels");
  ASSERT_TRUE(labels);
  EXPECT_TRUE(torch::equal(labels->read_stored(0, 24), class_labels(std::nullopt, 2, 24)));
  EXPECT_EQ(r.features, o.features);

  // It may not replace what eval reads, and needs a directory to land in.
  o.features = run.checkpoint;
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "eval: --features " + run.checkpoint + " would overwrite " + run.checkpoint);
  o.features = run.dir / "data/test/shard-00000.h5";
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }), "would overwrite");
  o.features = run.dir / "no/such/dir/f.h5";
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }), "eval: --features " + o.features + ": no directory");
  o.features = run.dir / "big.h5", o.n = int64_t{1} << 26;  // 2^26 images of 64 values: 2^32 values
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "images of shape [1, 8, 8] are more values than one gather holds");
}

TEST(EvalCommand, RefusalsNameTheFileAndSayHowToMakeAClassifier) {
  const TinyImageRun run;
  auto o = run.options();
  o.n = 65;
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "--n 65 is more than the 64 images in " + run.test_images + " (the default --test)");
  o = run.options();
  o.classifier = run.dir / "elsewhere.pt";
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "no classifier at " + o.classifier + "; make one with: difftrain classifier --data " + run.train +
                      " --test " + run.test_images + " --out " + o.classifier);
  // A classifier of 12x12 images cannot measure 8x8 samples.
  write_shards(run.dir / "wide", 1, torch::zeros({8, 1, 12, 12}), torch::arange(8, torch::kInt64) % 2);
  ClassifierOptions co;
  co.train = co.test = run.dir / "wide", co.epochs = 1;
  save_classifier(o.classifier, train_classifier(co));
  EXPECT_MENTIONS(test::error_of([&] { run_eval(o, single_rank()); }),
                  "classifier " + o.classifier +
                      " was trained on images of shape [1, 12, 12], but the checkpoint's samples have shape [1, 8, 8]");
  std::filesystem::remove(run.classifier);
  EXPECT_MENTIONS(test::error_of([&] { run_eval(run.options(), single_rank()); }),
                  "(default beside the training data " + run.train + ") no classifier at " + run.classifier);
}

TEST(EvalCommand, JsonHoldsTheFiguresAndSettings) {
  EvalReport r;
  r.n = 1000, r.steps = 20, r.gam = 2, r.checkpoint_step = 5000, r.classifier_test_accuracy = 0.91;
  r.figures.fid = 3.5, r.figures.fid_floor = 0.4, r.figures.fid_untrained = 300;
  auto j = to_json(r);
  EXPECT_EQ(j["fid"], 3.5);
  EXPECT_EQ(j["fid_floor"], 0.4);
  EXPECT_EQ(j["fid_untrained"], 300.0);
  EXPECT_EQ(j["checkpoint_step"], 5000);
  EXPECT_FALSE(j.contains("class_accuracy"));  // unconditional
  EXPECT_FALSE(j.contains("cfg_scale"));
  EXPECT_FALSE(j.contains("noise_share"));  // not images
  r.figures.class_accuracy = 0.8, r.cfg_scale = 1.5;
  r.figures.far_share = 0.25, r.figures.noise_share = 0.125, r.figures.far_threshold = 20;
  j = to_json(r);
  EXPECT_EQ(j["class_accuracy"], 0.8);
  EXPECT_EQ(j["cfg_scale"], 1.5);
  EXPECT_EQ(j["far_share"], 0.25);
  EXPECT_EQ(j["noise_share"], 0.125);
  EXPECT_EQ(j["far_threshold"], 20.0);
}

}  // namespace
}  // namespace difftrain
