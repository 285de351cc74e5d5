#include "difftrain/eval/evaluate.h"

#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "difftrain/comm/agreement.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
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
};

// One set's Gaussian (and, given labels, its class accuracy) over every rank: this rank
// embeds its share, a batch at a time; the sums meet in all-reduces.
SetSummary summarize(const char* name, const ImageSource& source, const torch::Tensor& labels, const EmbedFn& embed,
                     int64_t feature_dim, int64_t n, int64_t batch, Communicator& comm) {
  FeatureMoments moments(feature_dim);
  auto matched = torch::zeros({1}, torch::kInt64);
  const RankShare share = rank_share(n, comm.rank(), comm.size());
  on_all_ranks(comm, [&] {
    for (int64_t begin = share.begin; begin < share.end; begin += batch) {
      const int64_t end = std::min(begin + batch, share.end);
      const auto images = source(begin, end);
      if (!images.defined() || images.dim() < 1 || images.size(0) != end - begin)
        fail("eval: the {} set gave {} for {} images", name,
             images.defined() ? fmt::format("shape {}", images.sizes()) : "nothing", end - begin);
      const auto e = embed(images);
      moments.add(e.features);
      if (labels.defined()) {
        if (!e.predicted.defined() || e.predicted.dim() != 1 || e.predicted.size(0) != end - begin)
          fail("eval: the {} set's embedding gave no class per image", name);
        matched += (e.predicted.cpu() == labels.narrow(0, begin, end - begin)).sum();
      }
    }
  });
  moments.allreduce(comm);
  matched = matched.to(comm.device());
  comm.allreduce_sum(matched);
  SetSummary out{Gaussian{}, std::nullopt};
  try {
    out.gaussian = moments.gaussian();
  } catch (const Error& e) {
    throw AgreedError(fmt::format("eval: the {} set: {}", name, e.what()));
  }
  if (labels.defined()) out.class_accuracy = static_cast<double>(matched.cpu().item<int64_t>()) / static_cast<double>(n);
  return out;
}

}  // namespace

QualityFigures measure_quality(const QualitySets& sets, const EmbedFn& embed, int64_t feature_dim, Communicator& comm,
                               int64_t batch) {
  on_all_ranks(comm, [&] {
    if (sets.n < 2) fail("eval: a covariance needs at least 2 images per set, got n = {}", sets.n);
    if (batch < 1) fail("eval: batch must be >= 1, got {}", batch);
    if (sets.labels.defined() && (sets.labels.dim() != 1 || sets.labels.size(0) != sets.n))
      fail("eval: expected {} labels, got shape {}", sets.n, sets.labels.sizes());
  });
  const torch::Tensor none;
  auto stats = [&](const char* name, const ImageSource& source, const torch::Tensor& labels) {
    return summarize(name, source, labels, embed, feature_dim, sets.n, batch, comm);
  };
  const auto test = stats("test", sets.test, none);
  const auto train = stats("train", sets.train, none);
  const auto generated = stats("generated", sets.generated, sets.labels);
  const auto untrained = stats("untrained", sets.untrained, sets.labels);
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
    return generate(*model, end - begin, slice, params, *shared_noise, what).cpu();
  };
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
  });
  report.figures =
      measure_quality(sets, classifier_embedding(classifier, report.classifier), ClassifierImpl::kFeatures, comm);
  return report;
}

nlohmann::ordered_json to_json(const EvalReport& r) {
  nlohmann::ordered_json j;
  j["fid"] = r.figures.fid;
  j["fid_floor"] = r.figures.fid_floor;
  j["fid_untrained"] = r.figures.fid_untrained;
  if (r.figures.class_accuracy) j["class_accuracy"] = *r.figures.class_accuracy;
  if (r.figures.class_accuracy_untrained) j["class_accuracy_untrained"] = *r.figures.class_accuracy_untrained;
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
  return j;
}

}  // namespace difftrain
