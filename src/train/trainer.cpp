#include "difftrain/train/trainer.h"

#include <algorithm>
#include <utility>

#include "difftrain/comm/agreement.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"
#include "difftrain/memory.h"
#include "difftrain/models/registry.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/placement.h"
#include "difftrain/train/resume.h"

// The trainer's set-up (the data's checks; model, EMA, optimizer and gradient buckets; the
// run directory, through synchronize()) and its state (checkpoints in and out).
namespace difftrain {

namespace {

// What a rank holds while training on the CPU, in float32 values: the parameters, their
// gradients (the buckets), Adam's two moments and the EMA copy (5 per parameter), and the
// micro-batch's activations, which autograd keeps for backward (about twice the peak of a
// forward pass without autograd). The ranks of a node share its memory. Refused before
// anything is allocated: past what is free, the kernel's OOM killer ends the run without a
// word. (On a GPU the allocator's own error names the device and the size.)
void require_memory_for_training(const Config& c, const std::vector<int64_t>& shape, const std::string& shape_source,
                                 int64_t micro_batch, int local_ranks) {
  const long double parameters = parameter_count(c.model, shape, shape_source);
  const long double state = 5 * parameters * sizeof(float);
  const long double activations =
      2.0L * micro_batch * inference_activations(c.model, shape, shape_source) * sizeof(float);
  const auto available = available_memory_bytes();
  if (!available) return;
  const long double share = *available / std::max(local_ranks, 1);
  if (state + activations > share)
    fail("config: {}: training needs about {} per rank ({:.3g} parameters: {} for the weights, gradients, Adam "
         "moments and EMA; {} for the activations of a micro-batch of {}), but {} is available{} (MemAvailable); shrink "
         "the model or train.batch_size, or raise train.grad_accum",
         describe_model(c.model), human_bytes(state + activations), static_cast<double>(parameters), human_bytes(state),
         human_bytes(activations), micro_batch, human_bytes(share),
         local_ranks > 1 ? fmt::format(" to each of this node's {} ranks", local_ranks) : "");
}

// Labels index the model's class embedding: one out of range would read past it (or, at
// num_classes, silently train the "no label" row).
void check_label_range(ShardedDataset& labels, int64_t num_classes) {
  for (const auto& shard : labels.shards()) {
    if (shard.rows == 0) continue;
    const auto y = labels.as_read(labels.read_stored(shard.first, shard.rows));
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    if (lo < 0 || hi >= num_classes)
      fail("{}: dataset 'y' holds label {}, outside [0, {}] (model.num_classes {})", shard.path, lo < 0 ? lo : hi,
           num_classes - 1, num_classes);
  }
}

}  // namespace

Trainer::Trainer(Config config, Communicator& comm, TrainOptions options)
    : config_(std::move(config)),
      comm_(comm),
      options_(std::move(options)),
      schedule_(make_schedule(config_.schedule)),
      parameterization_(config_.model.parameterization),
      precision_(config_.train.precision),
      loss_by_sigma_(schedule_.sigmas().min().item<double>(), schedule_.sigmas().max().item<double>() * (1 + 1e-9)),
      extras_(loss_by_sigma_.bins()) {
  const auto& t = config_.train;
  const int64_t parts = comm_.size() * t.grad_accum;
  if (t.batch_size % parts != 0)
    fail("config: key 'train.batch_size': {} does not divide evenly over {} rank{} x {} micro-batch{} (train.grad_accum)",
         t.batch_size, comm_.size(), comm_.size() == 1 ? "" : "s", t.grad_accum, t.grad_accum == 1 ? "" : "es");
  per_rank_batch_ = t.batch_size / parts;
  if (options_.fresh && !options_.resume.empty()) fail("train: --fresh and --resume exclude each other");

  dataset_ = ShardedDataset::open(config_.data.path, config_.data.dataset);
  sample_shape_ = dataset_->sample_shape();
  dataset_size_ = dataset_->size();
  rank_share(dataset_->size(), comm_.rank(), comm_.size());  // every rank needs at least one example
  const bool images = sample_shape_.size() == 3, points = sample_shape_ == std::vector<int64_t>{2};
  if (t.sample_every > 0 && !images && !points)
    fail("config: key 'train.sample_every': draws images [C, H, W] or 2-d points, but {} holds examples of shape {}",
         config_.data.path, c10::IntArrayRef(sample_shape_));
  if (config_.model.num_classes > 0) {
    labels_ = dataset_->labels();
    if (!labels_)
      fail("config: key 'model.num_classes': {} makes a class-conditional model, but {} has no labels (dataset 'y')",
           config_.model.num_classes, config_.data.path);
    check_label_range(*labels_, config_.model.num_classes);
  }


  // A captured step must find the gradient hooks on the stream it is captured on.
  if (t.cuda_graph) use_capturable_stream(comm_.device());
  // Every rank builds the same initial weights from the same stream; synchronize() then
  // makes them identical by construction, whatever the ranks' libraries do.
  random_stream(config_.seed, 0, Stream::init, 0).seed_default_generators();
  const std::string shape_source = fmt::format("{} (dataset '{}')", dataset_->shards().front().path, config_.data.dataset);
  if (comm_.device().is_cpu())
    require_memory_for_training(config_, sample_shape_, shape_source, per_rank_batch_, comm_.local_size());
  model_ = make_model(config_.model, sample_shape_, shape_source);
  model_->to(comm_.device());
  if (comm_.device().is_cuda()) set_tf32(t.tf32);
  auto shadow = make_model(config_.model, sample_shape_, shape_source);
  shadow->to(comm_.device());
  // Each model's parameters become views of one buffer, here and only here: the EMA and the
  // optimizer work on those buffers, and the buckets lay the gradients out the same way,
  // with the step's extras (train/step_extras.h) ahead of them.
  flatten_storage(model_->parameters());
  flatten_storage(shadow->parameters());
  ema_ = std::make_unique<Ema>(shadow, *model_, t.ema_decay);
  optimizer_ = make_optimizer(model_->parameters(), t);
  buckets_ = std::make_unique<GradBuckets>(model_->parameters(), config_.dist.bucket_mb, extras_.size());
  host_flags_ = torch::zeros({2}, torch::TensorOptions(torch::kFloat32).pinned_memory(comm_.device().is_cuda()));
  flags_ = comm_.device().is_cuda() ? host_flags_.to(comm_.device()) : host_flags_;
}

Trainer::~Trainer() = default;

std::vector<int64_t> Trainer::fingerprint() const {
  int64_t values = 1, params = 0;
  for (auto d : sample_shape_) values *= d;
  for (const auto& p : model_->parameters()) params += p.numel();
  return {dataset_size_, values, params};
}

std::string Trainer::placement() {
  return describe_placement(comm_, dataset_->shards(), rank_share(dataset_size_, comm_.rank(), comm_.size()));
}

void Trainer::load_state(const ResumePoint& point) {
  const Checkpoint& c = point.checkpoint;
  load_state_dict(*model_, c.model, point.path + " (model)");
  load_state_dict(ema_->model(), c.ema, point.path + " (ema)");
  optimizer_->load_state_dict(c.optimizer);
}

void Trainer::synchronize() {
  std::string failure;
  if (comm_.rank() == 0) {
    try {
      run_dir_ = std::make_unique<RunDirectory>(config_, options_, sample_shape_, comm_.size());
      if (const auto* point = run_dir_->resume_point()) load_state(*point);
      run_dir_->prepare();
    } catch (const std::exception& e) {
      failure = one_line(e);
      if (run_dir_) run_dir_->abandon(), run_dir_.reset();
    }
  }
  // [rank 0 failed, start step, skipped steps, data position]
  auto header = torch::zeros({4}, torch::kInt64);
  header[0] = failure.empty() ? 0 : 1;
  if (const auto* point = run_dir_ ? run_dir_->resume_point() : nullptr) {
    const Checkpoint& c = point->checkpoint;
    header[1] = c.step, header[2] = c.skipped_steps, header[3] = c.data_position;
  }
  comm_.broadcast(header, 0);
  if (header[0].item<int64_t>() != 0) {
    if (comm_.rank() == 0) throw RankError(failure);
    throw PeerError("rank 0 failed to set up the run directory");
  }
  start_step_ = header[1].item<int64_t>();
  skipped_ = header[2].item<int64_t>();
  start_position_ = header[3].item<int64_t>();
  if (run_dir_) run_dir_->forget_resume_point();  // its weights are loaded: free them
  {
    torch::NoGradGuard no_grad;
    for (auto* module : {static_cast<Denoiser*>(model_.get()), &ema_->model()}) {
      for (auto& p : module->parameters()) comm_.broadcast(p, 0);
      for (auto& b : module->buffers()) comm_.broadcast(b, 0);
    }
  }
  optimizer_->broadcast(comm_);
  ema_->set_updates(start_step_ - skipped_);
}

void Trainer::agree(std::exception_ptr failure, int64_t step) {
  const int64_t failing = lowest_failing_rank(comm_, failure != nullptr);
  if (failing >= 0) throw_shared_failure(failing == comm_.rank() ? failure : nullptr, step);
}

void Trainer::throw_shared_failure(std::exception_ptr failure, int64_t step) const {
  if (!failure) throw PeerError(fmt::format("step {}: another rank failed", step));
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    throw RankError(fmt::format("rank {}, step {}: {}", comm_.rank(), step, one_line(e)));
  }
}

void Trainer::save(int64_t step) {
  if (comm_.rank() != 0) return;
  Checkpoint c;
  c.step = step;
  c.config_yaml = to_yaml(config_);
  c.sample_shape = sample_shape_;
  c.model = state_dict(*model_);
  c.ema = state_dict(ema_->model());
  c.optimizer = optimizer_->state_dict();
  c.world_size = comm_.size();
  c.data_position = loader_ ? loader_->position() : start_position_;
  c.seed = config_.seed;
  c.skipped_steps = skipped_;
  run_dir_->save(std::move(c));
}

}  // namespace difftrain
