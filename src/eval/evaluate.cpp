#include "difftrain/eval/evaluate.h"

#include <filesystem>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "difftrain/comm/agreement.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "difftrain/eval/feature_moments.h"
#include "difftrain/eval/frechet.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/io/input_file.h"
#include "difftrain/sample/sample.h"

namespace difftrain {

namespace {

namespace fs = std::filesystem;

// Counters of the Stream::eval streams: one per set drawn.
enum EvalDraw : uint64_t { trained_noise = 0, untrained_noise = 1, train_subset = 2, test_subset = 3 };

// Runs `step` on this rank, then shares its outcome with every rank (comm/agreement.h).
template <typename F>
void on_all_ranks(Communicator& comm, F&& step) {
  std::string error;
  try {
    step();
  } catch (const std::exception& e) {
    error = one_line(e);
  }
  share_failure(comm, error);
}

struct SetSummary {
  Gaussian gaussian;
  std::optional<double> class_accuracy;
  double nearest_max = 0;  // the largest distance from one of the set to its nearest reference image
  int64_t far_count = 0;   // images farther than the threshold from every reference image
  double roughness_max = 0;   // the largest roughness of one of the set (images only)
  int64_t rough_count = 0;    // images rougher than the threshold
  torch::Tensor features, images;  // when kept: every rank's rows, in order
};

// What summarize measures besides the Gaussian.
struct SetRequest {
  const char* name;
  const ImageSource& source;
  torch::Tensor labels;                    // the requested classes, for class accuracy
  const ImageSource* reference = nullptr;  // distances to the nearest of these n images
  double far_threshold = std::numeric_limits<double>::infinity();
  double rough_threshold = std::numeric_limits<double>::infinity();
  bool keep_features = false, keep_images = false;
};

// For each of `images` [b, ...], the L2 distance to the nearest of the n images
// `reference` gives, read `batch` at a time. In float64, pair by pair (no matrix-product
// shortcut), so that a distance does not depend on how the sets were split into batches.
torch::Tensor nearest_distance(const char* name, const torch::Tensor& images, const ImageSource& reference, int64_t n,
                               int64_t batch) {
  const auto a = images.to(torch::kCPU, torch::kFloat64).flatten(1);
  auto nearest = torch::full({a.size(0)}, std::numeric_limits<double>::infinity(), torch::kFloat64);
  for (int64_t begin = 0; begin < n; begin += batch) {
    const auto real = reference(begin, std::min(begin + batch, n));
    if (real.sizes().slice(1) != images.sizes().slice(1))
      fail("eval: the {} set's images have shape {}, the real images they are compared with {}", name,
           images.sizes().slice(1), real.sizes().slice(1));
    const auto b = real.to(torch::kCPU, torch::kFloat64).flatten(1);
    nearest = torch::minimum(nearest, torch::cdist(a, b, 2, /*donot_use_mm_for_euclid_dist=*/2).amin(1));
  }
  return nearest;
}

// Per image [.., H, W]: the mean absolute difference between neighbouring values, down and
// across, averaged. Noise scores far above any photograph or drawing.
torch::Tensor roughness(const torch::Tensor& images) {
  const auto x = images.to(torch::kCPU, torch::kFloat64);
  const int64_t h = x.dim() - 2, w = x.dim() - 1;
  const auto down = x.diff(1, h).abs().flatten(1).mean(1), across = x.diff(1, w).abs().flatten(1).mean(1);
  return (down + across) / 2;
}

// Rows [begin, begin + rows.size(0)) of an [n, ...] tensor that every rank ends with: each
// rank contributes its own rows, zeros elsewhere, and the sum is the whole.
torch::Tensor gather_rows(const torch::Tensor& rows, int64_t begin, int64_t n, std::vector<int64_t> row_shape,
                          Communicator& comm) {
  row_shape.insert(row_shape.begin(), n);
  auto all = torch::zeros(row_shape, torch::kFloat32);
  if (rows.defined() && rows.size(0) > 0) all.narrow(0, begin, rows.size(0)).copy_(rows);
  all = all.to(comm.device());
  comm.allreduce_sum(all);
  return all.cpu();
}

// One set's Gaussian (and what `request` asks for besides) over every rank: this rank
// embeds its share, a batch at a time; the sums meet in all-reduces.
// `image_shape` is one image's, for keep_images.
SetSummary summarize(const SetRequest& request, const std::vector<int64_t>& image_shape, const EmbedFn& embed,
                     int64_t feature_dim, int64_t n, int64_t batch, Communicator& comm) {
  FeatureMoments moments(feature_dim);
  auto matched = torch::zeros({1}, torch::kInt64), far = torch::zeros({1}, torch::kInt64),
       rough = torch::zeros({1}, torch::kInt64);
  auto maxima = torch::zeros({2}, torch::kFloat64);  // nearest distance, roughness
  std::vector<torch::Tensor> features, images;
  const RankShare share = rank_share(n, comm.rank(), comm.size());
  on_all_ranks(comm, [&] {
    for (int64_t begin = share.begin; begin < share.end; begin += batch) {
      const int64_t end = std::min(begin + batch, share.end);
      const auto batch_images = request.source(begin, end);
      if (!batch_images.defined() || batch_images.dim() < 1 || batch_images.size(0) != end - begin)
        fail("eval: the {} set gave {} for {} images", request.name,
             batch_images.defined() ? fmt::format("shape {}", batch_images.sizes()) : "nothing", end - begin);
      const auto e = embed(batch_images);
      moments.add(e.features);
      if (request.labels.defined()) {
        if (!e.predicted.defined() || e.predicted.dim() != 1 || e.predicted.size(0) != end - begin)
          fail("eval: the {} set's embedding gave no class per image", request.name);
        matched += (e.predicted.cpu() == request.labels.narrow(0, begin, end - begin)).sum();
      }
      if (request.reference) {
        const auto nearest = nearest_distance(request.name, batch_images, *request.reference, n, batch);
        maxima[0] = std::max(maxima[0].item<double>(), nearest.max().item<double>());
        far += (nearest > request.far_threshold).sum();
      }
      if (batch_images.dim() >= 4) {  // [b, C, H, W] and beyond: images with neighbours
        const auto r = roughness(batch_images);
        maxima[1] = std::max(maxima[1].item<double>(), r.max().item<double>());
        rough += (r > request.rough_threshold).sum();
      }
      if (request.keep_features) features.push_back(e.features.detach().to(torch::kCPU, torch::kFloat32));
      if (request.keep_images) images.push_back(batch_images.to(torch::kCPU, torch::kFloat32));
    }
  });
  moments.allreduce(comm);
  auto counts = torch::cat({matched, far, rough}).to(comm.device());
  comm.allreduce_sum(counts);
  counts = counts.cpu();
  maxima = maxima.to(comm.device());
  comm.allreduce_max(maxima);
  maxima = maxima.cpu();
  SetSummary out;
  try {
    out.gaussian = moments.gaussian();
  } catch (const Error& e) {
    throw AgreedError(fmt::format("eval: the {} set: {}", request.name, e.what()));
  }
  if (request.labels.defined()) out.class_accuracy = static_cast<double>(counts[0].item<int64_t>()) / static_cast<double>(n);
  out.far_count = counts[1].item<int64_t>();
  out.rough_count = counts[2].item<int64_t>();
  out.nearest_max = maxima[0].item<double>();
  out.roughness_max = maxima[1].item<double>();
  // Gathered: every rank's rows in place, also on a rank whose share is empty.
  if (request.keep_features)
    out.features = gather_rows(features.empty() ? torch::Tensor() : torch::cat(features), share.begin, n,
                               {feature_dim}, comm);
  if (request.keep_images)
    out.images = gather_rows(images.empty() ? torch::Tensor() : torch::cat(images), share.begin, n,
                             image_shape, comm);
  return out;
}

}  // namespace

QualityFigures measure_quality(const QualitySets& sets, const EmbedFn& embed, int64_t feature_dim, Communicator& comm,
                               int64_t batch, QualityFeatures* kept) {
  on_all_ranks(comm, [&] {
    if (sets.n < 2) fail("eval: a covariance needs at least 2 images per set, got n = {}", sets.n);
    if (batch < 1) fail("eval: batch must be >= 1, got {}", batch);
    if (sets.labels.defined() && (sets.labels.dim() != 1 || sets.labels.size(0) != sets.n))
      fail("eval: expected {} labels, got shape {}", sets.n, sets.labels.sizes());
  });
  const bool keep = kept != nullptr;
  // One image's shape: every rank reads it, also one whose shares are empty.
  std::vector<int64_t> image_shape;
  on_all_ranks(comm, [&] {
    try {
      image_shape = sets.test(0, 1).sizes().slice(1).vec();
    } catch (const Error& e) {
      fail("eval: the test set: {}", e.what());
    }
  });
  const auto image_dims = image_shape.size();
  const auto stats = [&](const SetRequest& request) {
    return summarize(request, image_shape, embed, feature_dim, sets.n, batch, comm);
  };
  const double anything = std::numeric_limits<double>::infinity();
  // The test images' distances to the training images set the bar a generated image must
  // stay within to count as near something real.
  const auto test = stats({"test", sets.test, {}, &sets.train, anything, anything, keep, keep});
  const auto train = stats({"train", sets.train, {}, nullptr, anything, anything, keep, keep});
  const double far = test.nearest_max, rough = test.roughness_max;
  const auto generated = stats({"generated", sets.generated, sets.labels, &sets.test, far, rough, keep, keep});
  const auto untrained = stats({"untrained", sets.untrained, sets.labels, &sets.test, far, rough, keep, keep});
  QualityFigures f;
  try {  // from the same reduced values on every rank: any failure here is every rank's
    f.fid = frechet_distance(generated.gaussian, test.gaussian);
    f.fid_floor = frechet_distance(train.gaussian, test.gaussian);
    f.fid_untrained = frechet_distance(untrained.gaussian, test.gaussian);
  } catch (const Error& e) {
    throw AgreedError(fmt::format("eval: {}", e.what()));
  }
  f.class_accuracy = generated.class_accuracy;
  f.class_accuracy_untrained = untrained.class_accuracy;
  const double n = static_cast<double>(sets.n);
  f.far_share = static_cast<double>(generated.far_count) / n;
  f.far_share_untrained = static_cast<double>(untrained.far_count) / n;
  f.far_threshold = far;
  if (image_dims >= 3) {
    f.noise_share = static_cast<double>(generated.rough_count) / n;
    f.noise_share_untrained = static_cast<double>(untrained.rough_count) / n;
  }
  if (kept)
    *kept = QualityFeatures{generated.features, untrained.features, train.features, test.features,
                            generated.images,   untrained.images,   train.images,   test.images};
  return f;
}

EmbedFn classifier_embedding(Classifier classifier, const std::string& source) {
  return [classifier, source](const torch::Tensor& images) mutable {
    torch::NoGradGuard no_grad;
    classifier->eval();
    const auto features = classifier->features(images.to(torch::kFloat32).clamp(-1, 1));
    // Images in [-1, 1] give finite features from sane weights; anything else is the
    // classifier's doing, and the error must say which file.
    if (!torch::isfinite(features).all().item<bool>()) {
      double largest = 0;
      for (const auto& p : classifier->parameters()) largest = std::max(largest, p.abs().max().item<double>());
      fail("eval: classifier {} gives non-finite features for images in [-1, 1] (its largest weight is {:g} in "
           "magnitude); retrain it with `difftrain classifier`",
           source, largest);
    }
    return Embedding{features, classifier->logits_of_features(features).argmax(1)};
  };
}

namespace {

// The directory above the training data's: data/fashion-mnist for data/fashion-mnist/train
// (the first item of a comma-separated list).
fs::path data_parent(const std::string& data_path) {
  fs::path p = fs::path(data_path.substr(0, data_path.find(','))).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "train/"
  return p.parent_path();
}

// n rows of a dataset, drawn without repeats by a keyed stream (the same on every rank).
ImageSource dataset_source(std::shared_ptr<ShardedDataset> data, int64_t n, uint64_t seed, EvalDraw draw) {
  const auto rows = random_stream(seed, 0, Stream::eval, draw).permutation(data->size()).narrow(0, 0, n).contiguous();
  return [data, rows](int64_t begin, int64_t end) {
    const int64_t* r = rows.data_ptr<int64_t>();
    return data->read(std::vector<int64_t>(r + begin, r + end));
  };
}

// This rank's samples, in the order measure_quality asks for them; `noise` is this rank's own
// stream, read on from call to call.
ImageSource sampler_source(std::shared_ptr<SamplingModel> model, torch::Tensor labels, GenerateParams params,
                           RandomStream noise, std::string what) {
  auto shared_noise = std::make_shared<RandomStream>(std::move(noise));
  return [=](int64_t begin, int64_t end) {
    const auto slice = labels.defined() ? labels.narrow(0, begin, end - begin) : torch::Tensor();
    // In the image range, as pictures show samples and the classifier sees them.
    return generate(*model, end - begin, slice, params, *shared_noise, what).cpu().clamp(-1, 1);
  };
}

// --features may not replace a file eval reads: the checkpoint, the classifier, or a shard
// of the test or training images. Checked before the long part.
void refuse_features_over_inputs(const std::string& out, const std::vector<std::string>& files,
                                 const std::vector<std::string>& shard_specs) {
  std::vector<std::string> inputs = files;
  for (const auto& spec : shard_specs) {
    try {
      const auto shards = expand_shard_spec(spec);
      inputs.insert(inputs.end(), shards.begin(), shards.end());
    } catch (const Error&) {  // missing data is reported where it is opened
    }
  }
  for (const auto& input : inputs)
    if (same_file(out, input)) fail("eval: --features {} would overwrite {}, which eval reads; write to another file", out, input);
  const auto dir = resolved_path(out).parent_path();
  if (!fs::is_directory(dir)) fail("eval: --features {}: no directory {} to write it in", out, dir.string());
}

// Each set's images are gathered in one all-reduce, whose count is an int for MPI.
void require_gatherable(const std::string& out, int64_t n, const std::vector<int64_t>& shape) {
  int64_t values = n;
  for (int64_t d : shape) values = d > 0 && values <= std::numeric_limits<int>::max() / d ? values * d : -1;
  if (values < 0 || values > std::numeric_limits<int>::max())
    fail("eval: --features {}: {} images of shape {} are more values than one gather holds (2^31); use a smaller --n",
         out, n, c10::IntArrayRef(shape));
}

// Real images for a set of n; `origin` says where `spec` came from (an option or a key).
std::shared_ptr<ShardedDataset> open_images(const std::string& spec, const std::string& dataset,
                                            const std::string& origin, const std::vector<int64_t>& shape, int64_t n) {
  std::shared_ptr<ShardedDataset> data;
  try {
    data = std::make_shared<ShardedDataset>(ShardedDataset::open(spec, dataset));
  } catch (const Error& e) {
    fail("eval: {}: {}", origin, e.what());
  }
  if (data->sample_shape() != shape)
    fail("eval: {} ({}) holds images of shape {}, but the checkpoint's samples have shape {}", spec, origin,
         c10::IntArrayRef(data->sample_shape()), c10::IntArrayRef(shape));
  if (n > data->size())
    fail("eval: --n {} is more than the {} images in {} ({}); use --n {} or fewer", n, data->size(), spec, origin,
         data->size());
  return data;
}

}  // namespace

EvalReport run_eval(const EvalOptions& o, Communicator& comm) {
  EvalReport report;
  QualitySets sets;
  Classifier classifier{nullptr};
  on_all_ranks(comm, [&] {
    if (o.n < 2) fail("eval: --n must be >= 2 (a covariance needs two images), got {}", o.n);
    if (o.seed < 0) fail("eval: --seed must be >= 0, got {}", o.seed);
    if (o.gam && !valid_gam(*o.gam)) fail("eval: --gam must be in [{}, {}], got {}", kMinGam, kMaxGam, *o.gam);
    if (o.cfg_scale && !(*o.cfg_scale >= 0 && *o.cfg_scale <= kMaxCfgScale))
      fail("eval: --cfg-scale must be in [0, {}], got {}", kMaxCfgScale, *o.cfg_scale);
    const auto device = choose_device(o.device, comm.local_rank(), backend_facts(), "eval: --device");
    auto trained = std::make_shared<SamplingModel>(load_sampling_model(o.checkpoint, o.use_ema, false, device));
    const Config& config = trained->config;
    const auto& shape = trained->sample_shape;
    if (shape.size() != 3)
      fail("eval: {}: the checkpoint's examples have shape {}; eval measures images [C, H, W]", o.checkpoint,
           c10::IntArrayRef(shape));
    const int64_t steps = o.steps.value_or(config.sample.steps);
    if (steps < 1 || steps > trained->schedule.size())
      fail("eval: {} must be in [1, schedule.N = {}], got {}",
           o.steps ? "--steps" : "sample.steps (from the checkpoint's config; pass --steps)", trained->schedule.size(),
           steps);

    const fs::path parent = data_parent(config.data.path);
    const std::string classifier_path = o.classifier.empty() ? (parent / "classifier.pt").string() : o.classifier;
    const std::string test_path = o.test.empty() ? (parent / "test").string() : o.test;
    if (!input_exists(classifier_path))
      fail("eval: {}no classifier at {}; make one with: difftrain classifier --data {} --test {} --out {}",
           o.classifier.empty() ? fmt::format("(default beside the training data {}) ", config.data.path)
                                : std::string("--classifier: "),
           classifier_path, config.data.path, test_path, classifier_path);
    if (!o.features.empty()) {
      refuse_features_over_inputs(o.features, {o.checkpoint, classifier_path}, {test_path, config.data.path});
      require_gatherable(o.features, o.n, shape);
    }
    const auto trained_classifier = load_classifier(classifier_path);
    classifier = trained_classifier.model;
    if (classifier->sample_shape() != shape)
      fail("eval: classifier {} was trained on images of shape {}, but the checkpoint's samples have shape {}",
           classifier_path, c10::IntArrayRef(classifier->sample_shape()), c10::IntArrayRef(shape));
    const int64_t num_classes = trained->model->num_classes();
    if (o.cfg_scale) require_guidance_applies(*o.cfg_scale, num_classes, "eval: --cfg-scale");
    if (num_classes > classifier->num_classes())
      fail("eval: classifier {} knows {} classes, but the model has model.num_classes = {}", classifier_path,
           classifier->num_classes(), num_classes);

    const auto seed = static_cast<uint64_t>(o.seed);
    auto test = open_images(test_path, config.data.dataset, o.test.empty() ? "the default --test" : "--test", shape, o.n);
    auto train = open_images(config.data.path, config.data.dataset, "the checkpoint's data.path", shape, o.n);
    sets.n = o.n;
    sets.test = dataset_source(test, o.n, seed, test_subset);
    sets.train = dataset_source(train, o.n, seed, train_subset);
    if (num_classes > 0) sets.labels = class_labels(std::nullopt, num_classes, o.n);
    const GenerateParams params{steps, {o.gam.value_or(config.sample.gam), config.sample.mu},
                                num_classes > 0 ? o.cfg_scale.value_or(config.sample.cfg_scale) : 0.0};
    auto untrained = std::make_shared<SamplingModel>(load_sampling_model(o.checkpoint, o.use_ema, /*untrained=*/true, device));
    const auto what = [&](const char* which) {
      return fmt::format("eval: {} samples (steps {}, gam {}, mu {}, cfg-scale {})", which, steps, params.sampler.gam,
                         params.sampler.mu, params.cfg_scale);
    };
    sets.generated = sampler_source(trained, sets.labels, params,
                                    random_stream(seed, comm.rank(), Stream::eval, trained_noise, device), what("the model's"));
    sets.untrained = sampler_source(untrained, sets.labels, params,
                                    random_stream(seed, comm.rank(), Stream::eval, untrained_noise, device),
                                    what("the untrained model's"));

    report.checkpoint = o.checkpoint;
    report.checkpoint_step = load_checkpoint(o.checkpoint).step;
    report.weights = o.use_ema ? "ema" : "model";
    report.classifier = classifier_path;
    report.test = test_path;
    report.n = o.n;
    report.steps = steps;
    report.seed = o.seed;
    report.ranks = comm.size();
    report.gam = params.sampler.gam;
    report.mu = params.sampler.mu;
    if (num_classes > 0) report.cfg_scale = params.cfg_scale;
    report.classifier_test_accuracy = trained_classifier.test_accuracy;
    report.features = o.features;
  });
  QualityFeatures kept;
  report.figures = measure_quality(sets, classifier_embedding(classifier, report.classifier), ClassifierImpl::kFeatures,
                                   comm, kEvalBatch, o.features.empty() ? nullptr : &kept);
  if (!o.features.empty())
    on_all_ranks(comm, [&] {
      if (comm.rank() != 0) return;
      h5::Datasets datasets{
          {"generated", kept.generated},
          {"untrained", kept.untrained},
          {"train", kept.train},
          {"test", kept.test},
          {"generated_images", kept.generated_images},
          {"untrained_images", kept.untrained_images},
          {"train_images", kept.train_images},
          {"test_images", kept.test_images},
      };
      if (sets.labels.defined()) datasets.emplace_back("generated_labels", sets.labels);
      h5::write_datasets(o.features, datasets);
    });
  return report;
}

nlohmann::ordered_json to_json(const EvalReport& r) {
  nlohmann::ordered_json j;
  j["fid"] = r.figures.fid;
  j["fid_floor"] = r.figures.fid_floor;
  j["fid_untrained"] = r.figures.fid_untrained;
  if (r.figures.class_accuracy) j["class_accuracy"] = *r.figures.class_accuracy;
  if (r.figures.class_accuracy_untrained) j["class_accuracy_untrained"] = *r.figures.class_accuracy_untrained;
  j["far_share"] = r.figures.far_share;
  j["far_share_untrained"] = r.figures.far_share_untrained;
  j["far_threshold"] = r.figures.far_threshold;
  if (r.figures.noise_share) j["noise_share"] = *r.figures.noise_share;
  if (r.figures.noise_share_untrained) j["noise_share_untrained"] = *r.figures.noise_share_untrained;
  j["n"] = r.n;
  if (r.cfg_scale) j["cfg_scale"] = *r.cfg_scale;
  j["steps"] = r.steps;
  j["gam"] = r.gam;
  j["mu"] = r.mu;
  j["seed"] = r.seed;
  j["checkpoint"] = r.checkpoint;
  j["checkpoint_step"] = r.checkpoint_step;
  j["weights"] = r.weights;
  j["classifier"] = r.classifier;
  j["classifier_test_accuracy"] = r.classifier_test_accuracy;
  j["test"] = r.test;
  j["ranks"] = r.ranks;
  if (!r.features.empty()) j["features"] = r.features;
  return j;
}

}  // namespace difftrain
