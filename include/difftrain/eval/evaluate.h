#pragma once
// `difftrain eval`: an image-quality figure for a checkpoint. Generated images and real
// test images are compared as Gaussians in a classifier's feature space (Fréchet distance,
// FID), beside the same figure for real training images (the floor a perfect model
// reaches with this many images) and for the same config's untrained model (the ceiling).
// Every set is spread over the ranks; their feature sums meet in one all-reduce per set.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/eval/classifier.h"

namespace difftrain {

// ---- the core: any image sets, any feature map ------------------------------------------

// Images [end - begin, ...] for indices [begin, end) of a set of n. Each rank asks a
// generated set only for its own share (see data/partition.h), in ascending slices; the
// real sets (train, test) are also read whole, slice by slice, as the references that
// far_share measures distances to.
using ImageSource = std::function<torch::Tensor(int64_t begin, int64_t end)>;

// What the figure sees of a batch of images: features [b, feature_dim], and the class the
// classifier assigns to each, int64 [b].
struct Embedding {
  torch::Tensor features, predicted;
};
using EmbedFn = std::function<Embedding(const torch::Tensor& images)>;

struct QualitySets {
  int64_t n = 0;  // images per set, >= 2
  ImageSource generated, untrained, train, test;
  // int64 [n]: the class each generated (and untrained) image was asked for; undefined for
  // an unconditional model.
  torch::Tensor labels;
};

struct QualityFigures {
  double fid = 0;            // generated vs test
  double fid_floor = 0;      // train vs test
  double fid_untrained = 0;  // untrained vs test
  // Share of generated images the classifier assigns to their requested class.
  std::optional<double> class_accuracy, class_accuracy_untrained;
  // Share of generated (untrained) images farther from every test image than any test
  // image is from its nearest training image, distances taken over the images' values (L2):
  // samples that look like nothing real, such as noise. Real images score 0 by
  // construction when they are the test images themselves.
  double far_share = 0, far_share_untrained = 0;
  double far_threshold = 0;  // the largest distance from a test image to its nearest training image
  // Images [C, H, W] only: share of generated (untrained) images rougher than any test
  // image, roughness being the mean absolute difference between neighbouring pixels.
  // Samples left as noise count here; real images' edges and textures do not.
  std::optional<double> noise_share, noise_share_untrained;
};

// What the figures were computed from, each set's rows in order, on every rank: the
// four sets' features and their images as the sources gave them.
struct QualityFeatures {
  torch::Tensor generated, untrained, train, test;
  torch::Tensor generated_images, untrained_images, train_images, test_images;
};

constexpr int64_t kEvalBatch = 250;  // images embedded at a time

// Every rank calls this with the same sets, embedding and n. A failure on any rank (a
// source or the embedding throwing) ends it on every rank: the lowest failing rank throws
// RankError with its message, the others PeerError; none is left in a collective. A
// failure in the combined statistics is every rank's AgreedError. Given `kept`, it is
// filled with what the figures were computed from (gathered over the ranks).
QualityFigures measure_quality(const QualitySets& sets, const EmbedFn& embed, int64_t feature_dim, Communicator& comm,
                               int64_t batch = kEvalBatch, QualityFeatures* kept = nullptr);

// The classifier's features and predicted classes, images clamped to [-1, 1] first (the
// range real images, and pictures of samples, have). Non-finite features are an error
// naming `source`, the classifier's file.
EmbedFn classifier_embedding(Classifier classifier, const std::string& source);

// ---- the command -------------------------------------------------------------------------

struct EvalOptions {
  std::string checkpoint;
  int64_t n = 1000;
  std::optional<int64_t> steps;              // default: the checkpoint config's sample.steps
  std::optional<double> gam, cfg_scale;      // default: sample.gam, sample.cfg_scale
  int64_t seed = 0;
  std::string classifier;  // default: classifier.pt in the parent directory of data.path
  std::string test;        // default: test in that same directory
  bool use_ema = true;
  std::string device = "auto";  // --device: auto (this rank's GPU when there is one), cpu, cuda, cuda:K
  // --features: an HDF5 file of what the figures were computed from (QualityFeatures'
  // tensors, one dataset each, named as its members, and generated_labels for a conditional
  // model); rank 0 writes it, whole or not at all.
  std::string features;
};

struct EvalReport {
  std::string checkpoint, weights, classifier, test;
  std::string features;  // the --features file written, if any
  int64_t checkpoint_step = 0, n = 0, steps = 0, seed = 0, ranks = 1;
  double gam = 0, mu = 0;
  std::optional<double> cfg_scale;  // conditional models
  QualityFigures figures;
  double classifier_test_accuracy = 0;
};

// Collective: every rank calls it (a world of one runs without mpirun); errors as for
// measure_quality, naming the file or option at fault.
EvalReport run_eval(const EvalOptions& options, Communicator& comm);

// {"fid", "fid_floor", "fid_untrained", "n", "class_accuracy", ...}: see the README.
nlohmann::ordered_json to_json(const EvalReport& report);

}  // namespace difftrain
