#pragma once
// A small CNN image classifier. The quality figure measures distances in its feature space
// (the 128 values before its last layer), since no ImageNet network can be downloaded;
// TF-GAN's classifier-based FID for MNIST does the same.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace difftrain {

// conv3x3 32 + batch norm + ReLU + maxpool 2, conv3x3 64 + batch norm + ReLU + maxpool 2,
// flatten, linear 128 + ReLU (the features), linear num_classes (the logits). Batch norm
// lets a few epochs of Adam reach the accuracy that takes the plain network several more.
class ClassifierImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kFeatures = 128;
  // `sample_shape`: one image, [C, H, W] with H, W >= 4; images are in [-1, 1].
  ClassifierImpl(std::vector<int64_t> sample_shape, int64_t num_classes);

  torch::Tensor features(const torch::Tensor& x);             // [B, C, H, W] -> [B, kFeatures]
  torch::Tensor logits_of_features(const torch::Tensor& f);    // [B, kFeatures] -> [B, num_classes]
  torch::Tensor logits(const torch::Tensor& x) { return logits_of_features(features(x)); }
  torch::Tensor forward(const torch::Tensor& x) { return logits(x); }

  const std::vector<int64_t>& sample_shape() const { return sample_shape_; }
  int64_t num_classes() const { return num_classes_; }

 private:
  std::vector<int64_t> sample_shape_;
  int64_t num_classes_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear hidden_{nullptr}, head_{nullptr};
};
TORCH_MODULE(Classifier);

struct ClassifierOptions {
  std::string train, test;  // dataset specs (directories of shards, files or globs) with labels `y`
  std::string dataset = "x";
  int64_t epochs = 3;
  int64_t batch_size = 64;
  double lr = 1e-3;  // Adam
  int64_t seed = 0;
};

struct EpochReport {
  int64_t epoch = 0, epochs = 0;
  double loss = 0;     // mean training loss over the epoch
  double seconds = 0;  // since training began
};

struct TrainedClassifier {
  Classifier model{nullptr};
  double test_accuracy = 0;
  int64_t seed = 0, epochs = 0;
};

// Trains with Adam on shuffled passes over the training set, then measures accuracy on the
// test set. Every random draw (initial weights, shuffling) comes from `seed`'s streams, so
// the same seed gives the same weights on one thread. `progress` hears after each epoch.
TrainedClassifier train_classifier(const ClassifierOptions& options,
                                   const std::function<void(const EpochReport&)>& progress = {});

// Share of `images` [n, C, H, W] the classifier assigns to `labels` [n] (batched, no grad).
double classifier_accuracy(Classifier model, const torch::Tensor& images, const torch::Tensor& labels);

// Fails at once, rather than after minutes of training, when a classifier could not be
// saved at `path`: it names a directory, or its directory cannot be made or written to.
void require_writable_classifier_path(const std::string& path);

// A dict {model: name -> tensor, num_classes, sample_shape, test_accuracy, seed, epochs,
// checksum}, written as torch.save does (torch_save.h) (Python's torch.load reads it),
// atomically; the checksum is the checkpoints' (io/dict_checksum.h).
void save_classifier(const std::string& path, const TrainedClassifier& c);
// Reads such a file into a model in eval mode; a checksum that does not match (files from
// before checksums have none), any missing entry, wrong type or tensor of the wrong shape is
// an error naming the file.
TrainedClassifier load_classifier(const std::string& path);

}  // namespace difftrain
