#include "difftrain/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <utility>

#include "difftrain/atomic_file.h"
#include "difftrain/comm/agreement.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"
#include "difftrain/models/registry.h"
#include "difftrain/sample.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/random_streams.h"
#include "difftrain/train/resume.h"
#include "difftrain/train/stop_signal.h"

namespace difftrain {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A checksum that changes with any bit of the tensor: its float32 bit patterns as
// integers, position-weighted, summed with wrap-around.
int64_t bit_checksum(const torch::Tensor& t) {
  const auto bits = t.detach().cpu().contiguous().view(torch::kInt32).reshape({-1}).to(torch::kInt64);
  const auto weights = torch::arange(bits.numel(), torch::kInt64).remainder(9973) + 1;
  return (bits * weights).sum().item<int64_t>();
}

// Labels index the model's class embedding: one out of range would read past it (or, at
// num_classes, silently train the "no label" row).
void check_label_range(ShardedDataset& labels, int64_t num_classes) {
  for (const auto& shard : labels.shards()) {
    if (shard.rows == 0) continue;
    const auto y = labels.read_stored(shard.first, shard.rows);
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
      parameterization_(parse_parameterization(config_.model.parameterization)),
      precision_(parse_precision(config_.train.precision)),
      loss_by_sigma_(schedule_.sigmas().min().item<double>(), schedule_.sigmas().max().item<double>() * (1 + 1e-9)) {
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
  if (dataset_->stored_dtype() == torch::kInt64)
    fail("{}: dataset '{}' holds int64 values (labels?); training data must be float32 or uint8", config_.data.path,
         config_.data.dataset);
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
  model_ = make_model(config_.model, sample_shape_, shape_source);
  model_->to(comm_.device());
  if (comm_.device().is_cuda()) set_tf32(t.tf32);
  auto shadow = make_model(config_.model, sample_shape_, shape_source);
  shadow->to(comm_.device());
  ema_ = std::make_unique<Ema>(shadow, *model_, t.ema_decay);
  optimizer_ = make_optimizer(model_->parameters(), t);
  // The EMA and the optimizer make the model's parameters views of one buffer, and the
  // buckets its gradients. Extras riding in the gradient all-reduce: this rank's loss, its
  // stop request, its failure, and its loss by noise level.
  buckets_ = std::make_unique<GradBuckets>(model_->parameters(), config_.dist.bucket_mb,
                                           /*extras=*/3 + 2 * loss_by_sigma_.bins());
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

namespace {
// Eager steps before the step is captured (train.cuda_graph): what LibTorch initialises on
// first use (library handles, workspaces, autotuned kernels) must exist before a capture,
// which may neither synchronise nor allocate outside its own memory pool.
constexpr int64_t kEagerStepsBeforeCapture = 3;
}  // namespace

void Trainer::stage_inputs(const std::vector<Batch>& micro_batches, int64_t step_index) {
  const auto accum = config_.train.grad_accum;
  if (static_cast<int64_t>(micro_batches.size()) != accum)
    fail("expected {} micro-batches (train.grad_accum), got {}", accum, micro_batches.size());
  inputs_.resize(static_cast<std::size_t>(accum));
  const auto device = comm_.device();
  for (int64_t m = 0; m < accum; ++m) {
    const auto& batch = micro_batches[m];
    auto& in = inputs_[m];
    if (!in.x0.defined() || in.x0.sizes() != batch.x.sizes()) {
      if (graph_)
        fail("a micro-batch of shape {} does not fit the captured step's {} (train.cuda_graph needs one shape)",
             batch.x.sizes(), in.x0.sizes());
      in.x0 = torch::empty(batch.x.sizes(), batch.x.options().device(device));
      std::vector<int64_t> sigma_shape(batch.x.dim(), 1);
      sigma_shape[0] = batch.x.size(0);
      in.sigma = torch::empty(sigma_shape, in.x0.options());
      in.eps = torch::empty_like(in.x0);
      if (model_->num_classes() > 0) in.labels = torch::empty({batch.x.size(0)}, in.x0.options().dtype(torch::kInt64));
    }
    in.x0.copy_(batch.x);
    const uint64_t counter = static_cast<uint64_t>((step_index - 1) * accum + m);
    auto stream = [&](Stream purpose) { return random_stream(config_.seed, comm_.rank(), purpose, counter, device); };
    // Dropout draws from the default generators, keyed like every other draw so that a
    // resumed run drops the same units: once per step, as a captured step cannot reseed them
    // between its micro-batches.
    if (m == 0) stream(Stream::dropout).seed_default_generators();
    auto sigma_draws = stream(Stream::sigma), eps_draws = stream(Stream::eps);
    const auto drawn = generate_train_sample(in.x0, schedule_, sigma_draws, eps_draws);
    in.sigma.copy_(drawn.sigma);
    in.eps.copy_(drawn.eps);
    if (in.labels.defined()) {
      auto drop_draws = stream(Stream::cond_drop);
      in.labels.copy_(drop_labels(batch.y.to(device), config_.train.cond_drop, model_->num_classes(), drop_draws));
    }
  }
}

void Trainer::forward_backward() {
  buckets_->zero_grad();
  // What every rank learns with the gradients (summed over ranks): [loss, stop requests,
  // failures, loss by sigma...].
  auto extras = buckets_->extras();
  copy_few(flags_, extras.narrow(0, 1, 2));
  const auto accum = static_cast<int64_t>(inputs_.size());
  for (int64_t m = 0; m < accum; ++m) {
    torch::Tensor per_example;
    {
      // The forward pass in bf16 when asked; backward runs outside, as torch.autocast
      // intends, and leaves fp32 gradients on the fp32 weights.
      AutocastScope autocast(precision_, comm_.device());
      per_example = training_loss_per_example(*model_, parameterization_, inputs_[m]);
    }
    // Scaled by 1 / (micro-batches x ranks), so that the gradients' sum over ranks is the
    // global batch's mean.
    const auto loss = per_example.mean() / static_cast<double>(accum * comm_.size());
    extras.narrow(0, 0, 1).add_(loss.detach().reshape({1}));
    loss_by_sigma_.bin_into(per_example, inputs_[m].sigma, extras.narrow(0, 3, 2 * loss_by_sigma_.bins()));
    // The last backward starts each bucket's all-reduce as soon as its gradients are in.
    if (m + 1 == accum) buckets_->arm(comm_);
    loss.backward();
  }
}

std::vector<const void*> Trainer::input_addresses() {
  std::vector<const void*> at{flags_.data_ptr(), buckets_->extras().data_ptr()};
  for (const auto& in : inputs_)
    for (const auto* t : {&in.x0, &in.sigma, &in.eps, &in.labels}) at.push_back(t->defined() ? t->data_ptr() : nullptr);
  return at;
}

bool Trainer::inputs_in_place() { return input_addresses() == captured_inputs_; }

void Trainer::capture_step(int64_t step_index, std::exception_ptr local_error) {
  std::exception_ptr failure = local_error;
  if (!failure) {
    try {
      auto graph = make_step_graph(comm_.device());
      graph->capture([this] {
        forward_backward();
        auto extras = buckets_->extras();
        buckets_->allreduce_sum(comm_, extras);
      });
      graph_ = std::move(graph);
      captured_inputs_ = input_addresses();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  // No rank may replay a step that another failed to record: its collectives would wait
  // for that rank forever.
  agree(failure, step_index);
}

Trainer::StepStats Trainer::step(const std::vector<Batch>& micro_batches, int64_t step_index,
                                 std::exception_ptr local_error) {
  StepStats stats;
  auto t0 = Clock::now();
  if (!local_error) {
    try {
      stage_inputs(micro_batches, step_index);
    } catch (...) {
      local_error = std::current_exception();
    }
  }
  float* flags = host_flags_.data_ptr<float>();
  flags[0] = stop_requested() ? 1.f : 0.f, flags[1] = local_error ? 1.f : 0.f;
  copy_few(host_flags_, flags_);
  if (config_.train.cuda_graph && !graph_ && steps_run_ == kEagerStepsBeforeCapture)
    capture_step(step_index, local_error);
  ++steps_run_;
  auto extras = buckets_->extras();
  // A rank that failed (reading its data, staging its inputs, or in the step) still takes
  // part in the sum, with its failure flag set, so that every rank learns of it and none
  // waits in a collective. Once the step is captured every rank replays it, the failing one
  // too (over the inputs of its last step, still in place): NCCL needs every rank's
  // collectives captured alike, or none.
  bool summed = false;
  if (graph_) {
    try {
      if (!inputs_in_place()) fail("the captured step's inputs moved (a defect: they must be copied into)");
      graph_->replay();  // forward_backward and the all-reduce below, as captured
      comm_.watch_device_work("a replayed step's gradient all-reduce");
      summed = true;
    } catch (...) {
      if (!local_error) local_error = std::current_exception();  // on the CPU, where the replay runs host code
    }
  } else if (!local_error) {
    try {
      forward_backward();
    } catch (...) {
      local_error = std::current_exception();
    }
  }
  stats.times.compute = seconds_since(t0);
  t0 = Clock::now();
  if (!summed) {
    if (local_error) {
      // Only the extras: buckets whose all-reduce backward started may still be in flight.
      extras.zero_();
      flags[1] = 1.f;
      copy_few(host_flags_, extras.narrow(0, 1, 2));
    }
    // Waits for the all-reduces backward started, and starts the rest (all of them, after a failure).
    buckets_->allreduce_sum(comm_, extras);
  }
  const auto shared = extras.cpu();  // the step's one read of the shared values
  const float* values = shared.data_ptr<float>();
  stats.loss = values[0];
  stats.stop = values[1] > 0;
  stats.loss_by_sigma = shared.narrow(0, 3, 2 * loss_by_sigma_.bins()).to(torch::kFloat64);  // a copy: the next step zeroes it
  stats.times.sync = seconds_since(t0);
  if (values[2] > 0) throw_shared_failure(local_error, step_index);

  t0 = Clock::now();
  // Every rank holds the same summed gradients, so every rank reaches the same verdict.
  auto& grads = buckets_->flat_grads();
  stats.grad_norm = grads.norm().item<double>();
  const bool finite = std::isfinite(stats.loss) && std::isfinite(stats.grad_norm);
  if (!finite) {
    stats.skipped = true;
    ++skipped_;
    if (++consecutive_bad_ >= config_.train.max_bad_steps)
      throw AgreedError(fmt::format(
          "step {}: {} consecutive steps had a non-finite loss or gradient norm (train.max_bad_steps); stopping, "
          "the last checkpoint holds finite weights",
          step_index, consecutive_bad_));
  } else {
    consecutive_bad_ = 0;
    torch::NoGradGuard no_grad;
    if (config_.train.grad_clip > 0 && stats.grad_norm > config_.train.grad_clip)
      grads.mul_(config_.train.grad_clip / (stats.grad_norm + 1e-6));
    optimizer_->set_lr(learning_rate(config_.train, step_index));
    optimizer_->step(grads);
  }
  stats.times.optim = seconds_since(t0);
  if (finite) {
    t0 = Clock::now();
    ema_->update();
    stats.times.ema = seconds_since(t0);
  }
  return stats;
}

void Trainer::write_sample_grid(int64_t step) {
  const int64_t classes = model_->num_classes();
  const int64_t n = classes > 0 ? classes * 8 : 64;
  const auto labels = classes > 0 ? class_labels(std::nullopt, classes, n) : torch::Tensor();
  // The same noise at every grid, so that successive pictures show the model change.
  auto noise = random_stream(config_.seed, 0, Stream::sample, 0, comm_.device());
  const GenerateParams params{std::min(config_.sample.steps, schedule_.size()),
                              {config_.sample.gam, config_.sample.mu},
                              config_.sample.cfg_scale};
  const auto path = fs::path(config_.run_dir) / "samples" / fmt::format("step-{:07d}.png", step);
  const auto samples = generate(ema_->model(), schedule_, parameterization_, sample_shape_, n, labels, params, noise,
                                fmt::format("step {}: sample grid {}", step, path.string()));
  fs::create_directories(path.parent_path());
  write_file_atomically(path.string(), samples_picture(samples.cpu(), labels, config_));
}

void Trainer::check_parameters_in_sync() {
  const auto named = model_->named_parameters();
  auto sums = torch::empty({2 * static_cast<int64_t>(named.size())}, torch::kInt64);
  auto* s = sums.data_ptr<int64_t>();
  for (std::size_t i = 0; i < named.size(); ++i) {
    const int64_t c = bit_checksum(named[i].value());
    // max(c) and max(~c) = ~min(c) over ranks: equal exactly when every rank has the same c.
    s[2 * i] = c;
    s[2 * i + 1] = ~c;
  }
  auto reduced = sums.to(comm_.device());
  comm_.allreduce_max(reduced);
  reduced = reduced.cpu();
  const auto* r = reduced.data_ptr<int64_t>();
  for (std::size_t i = 0; i < named.size(); ++i)
    if (r[2 * i] != ~r[2 * i + 1])
      throw AgreedError(fmt::format("parameters out of sync across ranks: '{}' differs (checksums range from {} to {})",
                                    named[i].key(), ~r[2 * i + 1], r[2 * i]));
}

namespace {

// A logging window's running sums, and the record that closes it.
struct LogWindow {
  double loss = 0;
  int64_t steps = 0, last_logged;
  StepTimes times;
  LossBySigma bins;
  Clock::time_point start = Clock::now();

  LogWindow(const LossBySigma& empty, int64_t after) : last_logged(after), bins(empty) {}
  void add(const Trainer::StepStats& stats) {
    times += stats.times;
    if (!stats.skipped) loss += stats.loss, ++steps, bins.add(stats.loss_by_sigma);
  }
  // Per-step averages since the last record; starts the next window.
  LogRecord close(int64_t step, const TrainConfig& t, const Trainer::StepStats& last, int64_t skipped) {
    const auto in_window = static_cast<double>(step - last_logged);
    LogRecord record;
    record.step = step, record.total_steps = t.steps;
    record.loss = steps ? loss / steps : NAN;
    record.grad_norm = last.grad_norm;
    record.lr = learning_rate(t, step);
    record.steps_per_s = in_window / seconds_since(start);
    record.skipped = skipped;
    record.times = times / in_window;
    record.log_sigma_edges = bins.log_sigma_edges();
    record.loss_sums = bins.sums();
    record.loss_counts = bins.counts();
    last_logged = step;
    loss = 0, steps = 0, times = StepTimes{}, start = Clock::now();
    bins.clear();
    return record;
  }
};

}  // namespace

void Trainer::make_loader() {
  if (loader_) return;
  const auto share = rank_share(dataset_->size(), comm_.rank(), comm_.size());
  LoaderExtras extras{std::move(labels_), config_.data.hflip};
  loader_ = std::make_unique<BatchLoader>(std::move(*dataset_), share, per_rank_batch_, config_.seed, comm_.rank(),
                                          start_position_, std::move(extras));
  dataset_.reset();
  labels_.reset();
}

std::vector<Batch> Trainer::next_micro_batches(std::exception_ptr& error) {
  std::vector<Batch> micro;
  if (error) return micro;
  try {
    for (int64_t m = 0; m < config_.train.grad_accum; ++m) micro.push_back(loader_->next());
  } catch (...) {
    error = std::current_exception();
  }
  return micro;
}

TrainResult Trainer::run() {
  const auto& t = config_.train;
  const bool leader = comm_.rank() == 0;
  Progress progress;
  make_loader();
  begin_training_phase();
  TrainResult result;
  result.start_step = start_step_;
  result.final_step = start_step_;
  int64_t last_saved = start_step_;
  LogWindow window(loss_by_sigma_, start_step_);
  // A failure of this rank's own between steps (rank 0 writing a checkpoint or metrics):
  // it rides in the next step's all-reduce, or in the agreement that ends the run.
  std::exception_ptr pending;
  for (int64_t s = start_step_ + 1; s <= t.steps; ++s) {
    auto t0 = Clock::now();
    std::exception_ptr local_error = std::exchange(pending, nullptr);
    const auto micro = next_micro_batches(local_error);
    const double data_time = seconds_since(t0);
    auto stats = step(micro, s, local_error);
    stats.times.data = data_time;
    window.add(stats);
    result.final_step = s;
    const bool stopping = stats.stop && s < t.steps;

    if (config_.dist.check_every > 0 && s % config_.dist.check_every == 0) check_parameters_in_sync();
    if (s % t.checkpoint_every == 0 || s == t.steps || stopping) {
      try {
        save(s);
        last_saved = s;
      } catch (...) {
        pending = std::current_exception();
      }
    }
    if (leader && t.sample_every > 0 && s % t.sample_every == 0 && !pending) {
      try {
        write_sample_grid(s);
      } catch (...) {
        pending = std::current_exception();
      }
    }
    if (s % t.log_every == 0 || s == t.steps || stopping) {
      t0 = Clock::now();
      const auto record = window.close(s, t, stats, skipped_);
      if (leader) {
        try {
          run_dir_->metrics().write(record);
        } catch (...) {
          if (!pending) pending = std::current_exception();
        }
        progress.update(record);
      }
      result.last_loss = record.loss;
      window.times.log += seconds_since(t0);  // shows in the next record
    }
    if (stopping) {
      result.preempted = true;
      break;
    }
  }
  if (leader) progress.finish();
  // A run resumed at its last step, or from a --resume file elsewhere, still leaves its
  // checkpoint here.
  if (!pending && (last_saved != result.final_step || !fs::exists(latest_checkpoint_path(config_.run_dir)))) {
    try {
      save(result.final_step);
    } catch (...) {
      pending = std::current_exception();
    }
  }
  // No rank leaves before rank 0's last checkpoint is written, and all learn if it failed.
  agree(pending, result.final_step);
  result.skipped_steps = skipped_;
  return result;
}

}  // namespace difftrain

namespace difftrain {

StepTimes Trainer::bench(int64_t steps, int64_t warmup, double& wall_s) {
  const auto& t = config_.train;
  make_loader();
  begin_training_phase();
  LogWindow window(loss_by_sigma_, 0);
  StepTimes total;
  int64_t timed = 0;
  auto start = Clock::now();
  for (int64_t s = 1; s <= warmup + steps; ++s) {
    if (s == warmup + 1) {
      comm_.barrier();  // every rank starts the clock together
      total = StepTimes{}, start = Clock::now();
    }
    auto t0 = Clock::now();
    std::exception_ptr local_error;
    const auto micro = next_micro_batches(local_error);
    const double data_time = seconds_since(t0);
    auto stats = step(micro, s, local_error);
    stats.times.data = data_time;
    t0 = Clock::now();
    window.add(stats);
    // What a logging step costs besides the write: its record, formatted as the metrics file has it.
    if (s % t.log_every == 0 && json_record(window.close(s, t, stats, skipped_)).empty()) fail("bench: empty record");
    stats.times.log = seconds_since(t0);
    total += stats.times;
    timed += s > warmup ? 1 : 0;
    if (stats.stop) break;  // every rank together: the stop request rode in the all-reduce
  }
  if (timed < steps)
    throw AgreedError(fmt::format("bench: stopped by a signal after {} of {} timed steps", timed, steps));
  wall_s = seconds_since(start);
  return total / static_cast<double>(steps);
}

}  // namespace difftrain
