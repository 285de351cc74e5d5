#include "difftrain/eval/classifier.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>

#include <fmt/format.h>

#include "difftrain/core/random_streams.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/io/dict_checksum.h"
#include "difftrain/io/input_file.h"
#include "difftrain/io/torch_save.h"

namespace difftrain {

namespace {

constexpr int64_t kChannels1 = 32, kChannels2 = 64;
constexpr int64_t kEvalBatch = 500;

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("{}", c10::IntArrayRef(shape)); }

struct LabeledImages {
  torch::Tensor x;  // float32 [n, C, H, W] in [-1, 1]
  torch::Tensor y;  // int64 [n]
  std::vector<int64_t> sample_shape;
};

// A whole labelled image set in memory; `option` names where the spec came from.
LabeledImages read_labeled(const std::string& spec, const std::string& dataset, const std::string& option) {
  if (spec.empty()) fail("classifier: {} is required", option);
  auto examples = [&] {
    try {
      return ShardedDataset::open(spec, dataset);
    } catch (const Error& e) {
      fail("classifier: {} {}: {}", option, spec, e.what());
    }
  }();
  if (examples.sample_shape().size() != 3)
    fail("classifier: {} {}: dataset '{}' holds examples of shape {}; the classifier takes images [C, H, W]", option,
         spec, dataset, shape_text(examples.sample_shape()));
  auto labels = examples.labels();
  if (!labels)
    fail("classifier: {} {}: no labels (dataset 'y' beside '{}' in every file); the classifier learns from labelled "
         "images",
         option, spec, dataset);
  std::vector<torch::Tensor> xs, ys;
  constexpr int64_t kChunk = 8192;  // bounds the read's temporary copies
  for (int64_t first = 0; first < examples.size(); first += kChunk) {
    std::vector<int64_t> rows(std::min(kChunk, examples.size() - first));
    std::iota(rows.begin(), rows.end(), first);
    xs.push_back(examples.read(rows));
    ys.push_back(labels->read(rows));
  }
  LabeledImages out{torch::cat(xs), torch::cat(ys), examples.sample_shape()};
  if (out.y.min().item<int64_t>() < 0)
    fail("classifier: {} {}: label {} is negative; classes are 0, 1, ...", option, spec, out.y.min().item<int64_t>());
  return out;
}

// Learns nothing from an empty or one-class set; refuses a test set of other images or classes.
void check_pair(const LabeledImages& train, const LabeledImages& test, const ClassifierOptions& o, int64_t classes) {
  if (classes < 2) fail("classifier: --data {}: the labels hold a single class; a classifier needs two or more", o.train);
  if (test.sample_shape != train.sample_shape)
    fail("classifier: --test {} holds images of shape {}, but --data {} holds {}", o.test, shape_text(test.sample_shape),
         o.train, shape_text(train.sample_shape));
  const int64_t top = test.y.max().item<int64_t>();
  if (top >= classes)
    fail("classifier: --test {} has label {}, but the labels of --data {} are 0..{}", o.test, top, o.train, classes - 1);
}

std::vector<char> read_bytes(const std::string& path) {
  if (!input_exists(path)) fail("{}: no such classifier file", path);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, not a classifier file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open classifier file", path);
  std::vector<char> bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    fail("{}: cannot read classifier file: {}", path, e.what());
  }
  if (bytes.empty()) fail("{}: classifier file is empty", path);
  return bytes;
}

}  // namespace

ClassifierImpl::ClassifierImpl(std::vector<int64_t> sample_shape, int64_t num_classes)
    : sample_shape_(std::move(sample_shape)), num_classes_(num_classes) {
  if (sample_shape_.size() != 3 || sample_shape_[0] < 1 || sample_shape_[1] < 4 || sample_shape_[2] < 4)
    fail("classifier: images must have shape [C, H, W] with C >= 1 and H, W >= 4, got {}", shape_text(sample_shape_));
  if (num_classes_ < 1) fail("classifier: needs at least one class, got {}", num_classes_);
  using namespace torch::nn;
  conv1_ = register_module("conv1", Conv2d(Conv2dOptions(sample_shape_[0], kChannels1, 3).padding(1)));
  norm1_ = register_module("norm1", BatchNorm2d(kChannels1));
  conv2_ = register_module("conv2", Conv2d(Conv2dOptions(kChannels1, kChannels2, 3).padding(1)));
  norm2_ = register_module("norm2", BatchNorm2d(kChannels2));
  // Each 2x2 max-pool halves the side, rounding down.
  const int64_t flat = kChannels2 * (sample_shape_[1] / 4) * (sample_shape_[2] / 4);
  hidden_ = register_module("hidden", Linear(flat, kFeatures));
  head_ = register_module("head", Linear(kFeatures, num_classes_));
}

torch::Tensor ClassifierImpl::features(const torch::Tensor& x) {
  if (x.dim() != 4 || x.sizes().slice(1) != c10::IntArrayRef(sample_shape_))
    fail("classifier: expected images [B, {}], got {}", fmt::join(sample_shape_, ", "), x.sizes());
  auto h = torch::max_pool2d(torch::relu(norm1_(conv1_(x))), 2);
  h = torch::max_pool2d(torch::relu(norm2_(conv2_(h))), 2);
  return torch::relu(hidden_(h.flatten(1)));
}

torch::Tensor ClassifierImpl::logits_of_features(const torch::Tensor& f) { return head_(f); }

double classifier_accuracy(Classifier model, const torch::Tensor& images, const torch::Tensor& labels) {
  if (images.size(0) != labels.size(0) || images.size(0) == 0)
    fail("classifier accuracy: {} images and {} labels; need the same number, at least one", images.size(0),
         labels.size(0));
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  int64_t correct = 0;
  for (int64_t first = 0; first < images.size(0); first += kEvalBatch) {
    const int64_t count = std::min(kEvalBatch, images.size(0) - first);
    const auto predicted = model->logits(images.narrow(0, first, count)).argmax(1);
    correct += (predicted == labels.narrow(0, first, count)).sum().item<int64_t>();
  }
  model->train(was_training);
  return static_cast<double>(correct) / static_cast<double>(images.size(0));
}

TrainedClassifier train_classifier(const ClassifierOptions& o, const std::function<void(const EpochReport&)>& progress) {
  if (o.epochs < 1) fail("classifier: --epochs must be >= 1, got {}", o.epochs);
  if (o.batch_size < 1) fail("classifier: --batch must be >= 1, got {}", o.batch_size);
  if (o.seed < 0) fail("classifier: --seed must be >= 0, got {}", o.seed);
  const auto train = read_labeled(o.train, o.dataset, "--data");
  const auto test = read_labeled(o.test, o.dataset, "--test");
  const int64_t classes = train.y.max().item<int64_t>() + 1;
  check_pair(train, test, o, classes);

  const auto seed = static_cast<uint64_t>(o.seed);
  random_stream(seed, 0, Stream::classifier_init, 0).seed_default_generators();
  Classifier model(train.sample_shape, classes);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(o.lr));
  const auto start = std::chrono::steady_clock::now();
  const int64_t n = train.x.size(0);
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size, total_steps = steps_per_epoch * o.epochs;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    const auto order = random_stream(seed, 0, Stream::classifier_shuffle, static_cast<uint64_t>(epoch)).permutation(n);
    double loss_sum = 0;
    for (int64_t first = 0; first < n; first += o.batch_size) {
      const int64_t count = std::min(o.batch_size, n - first);
      const auto rows = order.narrow(0, first, count);
      // The rate falls linearly to zero over the run, so that the last steps settle the weights.
      static_cast<torch::optim::AdamOptions&>(optimizer.param_groups()[0].options())
          .lr(o.lr * static_cast<double>(total_steps - step++) / static_cast<double>(total_steps));
      optimizer.zero_grad();
      const auto loss = torch::cross_entropy_loss(model->logits(train.x.index_select(0, rows)),
                                                  train.y.index_select(0, rows));
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * static_cast<double>(count);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!std::isfinite(loss_sum)) fail("classifier: epoch {}: the training loss is not finite; try a smaller lr", epoch + 1);
    if (progress) progress({epoch + 1, o.epochs, loss_sum / static_cast<double>(n), seconds});
  }
  model->eval();
  return {model, classifier_accuracy(model, test.x, test.y), o.seed, o.epochs};
}

void require_writable_classifier_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("classifier: --out {} is a directory; name a file", path);
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  fs::create_directories(dir, ec);
  if (ec) fail("classifier: --out {}: cannot create directory {}: {}", path, dir.string(), ec.message());
  if (::access(dir.c_str(), W_OK) != 0)
    fail("classifier: --out {}: directory {} is not writable: {}", path, dir.string(), std::strerror(errno));
}

void save_classifier(const std::string& path, const TrainedClassifier& c) {
  c10::Dict<std::string, at::Tensor> weights;
  for (const auto& item : state_dict(*c.model)) weights.insert(item.key(), item.value());
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("model", weights);
  d.insert("num_classes", c.model->num_classes());
  d.insert("sample_shape", c10::List<int64_t>(c.model->sample_shape()));
  d.insert("test_accuracy", c.test_accuracy);
  d.insert("seed", c.seed);
  d.insert("epochs", c.epochs);
  insert_checksum(d, path);
  write_file_atomically(path, torch_save_bytes(d));
}

TrainedClassifier load_classifier(const std::string& path) {
  const auto bytes = read_bytes(path);
  const c10::IValue value = load_torch_file(bytes, path, "classifier file");
  if (!value.isGenericDict()) fail("{}: a classifier file holds a dict; this one does not", path);
  const auto d = value.toGenericDict();
  verify_checksum(d, path);
  auto need = [&](const char* key) {
    const auto it = d.find(key);
    if (it == d.end()) fail("{}: classifier file has no '{}' entry", path, key);
    return it->value();
  };
  TrainedClassifier c;
  std::vector<int64_t> shape;
  int64_t classes = 0;
  torch::OrderedDict<std::string, torch::Tensor> weights;
  try {
    classes = need("num_classes").toInt();
    shape = int_list(need("sample_shape"));
    c.test_accuracy = need("test_accuracy").toDouble();
    c.seed = need("seed").toInt();
    c.epochs = need("epochs").toInt();
    for (const auto& item : need("model").toGenericDict()) weights.insert(item.key().toStringRef(), item.value().toTensor());
  } catch (const c10::Error&) {
    fail("{}: classifier entries have unexpected types", path);
  }
  try {
    c.model = Classifier(shape, classes);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  load_state_dict(*c.model, weights, path);
  for (const auto& p : c.model->named_parameters())
    if (!torch::isfinite(p.value()).all().item<bool>()) fail("{}: classifier weight '{}' holds a NaN or Inf", path, p.key());
  c.model->eval();
  return c;
}

}  // namespace difftrain
