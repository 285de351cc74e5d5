// The quality figure's classifier: shapes of its features and logits, training that learns
// a clearly separable image set, the same weights from the same seed, and its file (round
// trip, and errors naming the file).
#include <gtest/gtest.h>

#include <fstream>

#include <torch/csrc/jit/serialization/pickle.h>

#include "difftrain/core/random_streams.h"
#include "difftrain/data/prepare.h"
#include "difftrain/error.h"
#include "difftrain/eval/classifier.h"
#include "test_util.h"

namespace difftrain {
namespace {

// n images [1, 8, 8] in [-1, 1] of two classes: class 0 bright on the left half, class 1
// on the right, both with noise.
std::pair<torch::Tensor, torch::Tensor> halves(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  const auto y = torch::arange(n, torch::kInt64) % 2;
  auto x = torch::full({n, 1, 8, 8}, -0.6) + 0.3 * torch::randn({n, 1, 8, 8});
  x.narrow(3, 0, 4).add_(1.2 * (1 - y).to(torch::kFloat32).view({n, 1, 1, 1}));
  x.narrow(3, 4, 4).add_(1.2 * y.to(torch::kFloat32).view({n, 1, 1, 1}));
  return {x.clamp(-1, 1), y};
}

struct HalvesData {
  test::TempDir dir;
  ClassifierOptions options;
  HalvesData() {
    const auto [x, y] = halves(256, 1);
    const auto [tx, ty] = halves(128, 2);
    write_shards(dir / "train", 2, x, y);
    write_shards(dir / "test", 1, tx, ty);
    options.train = dir / "train";
    options.test = dir / "test";
    options.epochs = 2;
    options.batch_size = 32;
  }
};

void write_pickle(const std::string& path, const c10::IValue& value) {
  const auto bytes = torch::pickle_save(value);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(Classifier, FeaturesAndLogitsHaveTheirShapes) {
  Classifier mnist(std::vector<int64_t>{1, 28, 28}, 10);
  const auto x = torch::rand({5, 1, 28, 28}) * 2 - 1;
  EXPECT_EQ(mnist->features(x).sizes(), torch::IntArrayRef({5, ClassifierImpl::kFeatures}));
  EXPECT_EQ(mnist->logits(x).sizes(), torch::IntArrayRef({5, 10}));
  Classifier odd(std::vector<int64_t>{3, 9, 7}, 3);  // sides that pooling rounds down
  EXPECT_EQ(odd->logits(torch::zeros({2, 3, 9, 7})).sizes(), torch::IntArrayRef({2, 3}));
  EXPECT_MENTIONS(test::error_of([&] { mnist->features(torch::zeros({2, 3, 28, 28})); }),
                  "expected images [B, 1, 28, 28], got [2, 3, 28, 28]");
  EXPECT_MENTIONS(test::error_of([&] { Classifier(std::vector<int64_t>{1, 3, 28}, 10); }), "H, W >= 4, got [1, 3, 28]");
  EXPECT_MENTIONS(test::error_of([&] { Classifier(std::vector<int64_t>{784}, 10); }), "[C, H, W]");
}

TEST(Classifier, TrainingLearnsSeparableImages) {
  HalvesData data;
  const auto [tx, ty] = halves(128, 2);
  // The weights training starts from: drawn from the same stream train_classifier uses.
  random_stream(0, 0, Stream::classifier_init, 0).seed_default_generators();
  Classifier fresh(std::vector<int64_t>{1, 8, 8}, 2);
  const double before = classifier_accuracy(fresh, tx, ty);
  std::vector<EpochReport> epochs;
  auto trained = train_classifier(data.options, [&](const EpochReport& e) { epochs.push_back(e); });
  ASSERT_LT(before, 0.9);
  EXPECT_GE(trained.test_accuracy, 0.97);
  EXPECT_DOUBLE_EQ(classifier_accuracy(trained.model, tx, ty), trained.test_accuracy);
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_LT(epochs[1].loss, epochs[0].loss);
  EXPECT_EQ(trained.model->num_classes(), 2);  // from the largest training label
}

TEST(Classifier, SameSeedSameWeightsOtherSeedOthers) {
  HalvesData data;
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  data.options.epochs = 1;
  auto a = train_classifier(data.options), b = train_classifier(data.options);
  data.options.seed = 1;
  auto c = train_classifier(data.options);
  torch::set_num_threads(threads);
  const auto pa = a.model->named_parameters(), pb = b.model->named_parameters(), pc = c.model->named_parameters();
  ASSERT_EQ(pa.size(), 12u);  // weights and biases of 2 convolutions, 2 batch norms, 2 linear layers
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].value(), pb[i].value())) << pa[i].key();
    EXPECT_FALSE(torch::equal(pa[i].value(), pc[i].value())) << pa[i].key();
  }
  const auto ba = a.model->named_buffers(), bb = b.model->named_buffers();
  ASSERT_EQ(ba.size(), 6u);  // the batch norms' running statistics and counts
  for (std::size_t i = 0; i < ba.size(); ++i) EXPECT_TRUE(torch::equal(ba[i].value(), bb[i].value())) << ba[i].key();
}

TEST(Classifier, FileRoundTripsAndErrorsNameIt) {
  HalvesData data;
  data.options.epochs = 1;
  auto trained = train_classifier(data.options);
  const std::string path = data.dir / "classifier.pt";
  save_classifier(path, trained);
  auto loaded = load_classifier(path);
  EXPECT_EQ(loaded.model->sample_shape(), std::vector<int64_t>({1, 8, 8}));
  EXPECT_EQ(loaded.test_accuracy, trained.test_accuracy);
  EXPECT_EQ(loaded.epochs, 1);
  const auto x = torch::rand({3, 1, 8, 8});
  EXPECT_TRUE(torch::equal(loaded.model->logits(x), trained.model->logits(x)));

  EXPECT_MENTIONS(test::error_of([&] { load_classifier(data.dir / "none.pt"); }), "none.pt: no such classifier file");
  {
    std::ofstream(data.dir / "junk.pt") << "not a pickle";
  }
  EXPECT_MENTIONS(test::error_of([&] { load_classifier(data.dir / "junk.pt"); }), "junk.pt: not a readable classifier");
  // A file claiming another image shape than its weights have.
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto dict = torch::pickle_load(bytes).toGenericDict();
  // One weight changed (a flipped bit, an edit): the checksum names the file as damaged.
  auto changed = dict.copy();
  auto weights = changed.at("model").toGenericDict().copy();
  auto hidden = weights.at("hidden.weight").toTensor().clone();
  hidden.view(-1)[7] += 1e-3;
  weights.insert_or_assign("hidden.weight", hidden);
  changed.insert_or_assign("model", weights);
  write_pickle(data.dir / "changed.pt", changed);
  EXPECT_MENTIONS(test::error_of([&] { load_classifier(data.dir / "changed.pt"); }),
                  "changed.pt: checksum mismatch: the file is damaged");
  // The checks below are those of a file from before checksums, which has none.
  ASSERT_EQ(dict.erase("checksum"), 1u);
  write_pickle(data.dir / "unchecked.pt", dict);
  EXPECT_TRUE(torch::equal(load_classifier(data.dir / "unchecked.pt").model->logits(x), trained.model->logits(x)));
  dict.insert_or_assign("sample_shape", c10::List<int64_t>({1, 16, 16}));
  write_pickle(data.dir / "reshaped.pt", dict);
  EXPECT_MENTIONS(test::error_of([&] { load_classifier(data.dir / "reshaped.pt"); }),
                  "reshaped.pt: tensor 'hidden.weight' has shape");
  ASSERT_EQ(dict.erase("num_classes"), 1u);
  write_pickle(data.dir / "partial.pt", dict);
  EXPECT_MENTIONS(test::error_of([&] { load_classifier(data.dir / "partial.pt"); }),
                  "partial.pt: classifier file has no 'num_classes' entry");
}

TEST(Classifier, DataErrorsNameTheOption) {
  HalvesData data;
  const auto [x, y] = halves(16, 3);
  write_shards(data.dir / "unlabelled", 1, x);
  write_shards(data.dir / "wide", 1, torch::zeros({16, 1, 8, 12}), y);
  write_shards(data.dir / "points", 1, torch::zeros({16, 2}), y);
  auto o = data.options;
  o.train = data.dir / "unlabelled";
  EXPECT_MENTIONS(test::error_of([&] { train_classifier(o); }), "--data " + o.train + ": no labels");
  o = data.options;
  o.test = data.dir / "wide";
  EXPECT_MENTIONS(test::error_of([&] { train_classifier(o); }), "--test " + o.test + " holds images of shape [1, 8, 12]");
  o = data.options;
  o.train = data.dir / "points";
  EXPECT_MENTIONS(test::error_of([&] { train_classifier(o); }), "examples of shape [2]; the classifier takes images");
  o = data.options;
  o.test = data.dir / "missing";
  EXPECT_MENTIONS(test::error_of([&] { train_classifier(o); }), "--test " + o.test);
}

}  // namespace
}  // namespace difftrain
