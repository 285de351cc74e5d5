// One training step, read top to bottom in Trainer::step: the batch with sigma and eps
// drawn for it, the loss, backward, the gradients summed over the ranks, skip or clip, the
// optimizer, the EMA. What distribution adds rides along: a rank's failure or stop request
// travels in the gradient all-reduce (train/step_extras.h), so every rank reaches the
// same verdict from the same summed values.
#include <chrono>
#include <cmath>

#include "difftrain/core/random_streams.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/trainer.h"

namespace difftrain {

namespace {

class Stopwatch {
 public:
  // Seconds since the last lap (or the start).
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// Eager steps before the step is captured (train.cuda_graph): what LibTorch initialises on
// first use (library handles, workspaces, autotuned kernels) must exist before a capture,
// which may neither synchronise nor allocate outside its own memory pool.
constexpr int64_t kEagerStepsBeforeCapture = 3;

// What `work` threw, or nothing.
template <typename F>
std::exception_ptr caught(F&& work) {
  try {
    work();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

}  // namespace

Trainer::StepStats Trainer::step(const std::vector<Batch>& micro_batches, int64_t step_index,
                                 std::exception_ptr local_error) {
  StepStats stats;
  Stopwatch watch;
  if (!local_error) local_error = caught([&] { stage_inputs(micro_batches, step_index); });  // x0, sigma, eps
  post_flags(local_error != nullptr);
  if (config_.train.cuda_graph && !graph_ && steps_run_ == kEagerStepsBeforeCapture)
    capture_step(step_index, local_error);
  ++steps_run_;
  // The loss and its gradients: eager, or replayed from the captured step with the all-reduce.
  bool summed = false;
  if (graph_)
    summed = replay_captured_step(local_error);
  else if (!local_error)
    local_error = caught([&] { forward_backward(); });
  stats.times.compute = watch.lap();
  if (!summed) allreduce_gradients(local_error);
  const auto shared = extras_.read(buckets_->extras());  // the step's one read of the summed values
  stats.loss = shared.loss, stats.stop = shared.stop, stats.loss_by_sigma = shared.loss_by_sigma;
  stats.times.sync = watch.lap();
  if (shared.failed) throw_shared_failure(local_error, step_index);

  stats.grad_norm = buckets_->flat_grads().norm().item<double>();
  stats.skipped = !apply_gradients(step_index, stats.loss, stats.grad_norm);
  stats.times.optim = watch.lap();
  if (!stats.skipped) {
    ema_->update();
    stats.times.ema = watch.lap();
  }
  return stats;
}

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

void Trainer::post_flags(bool failed) {
  float* flags = host_flags_.data_ptr<float>();
  flags[0] = stop_requested() ? 1.f : 0.f, flags[1] = failed ? 1.f : 0.f;
  copy_few(host_flags_, flags_);
}

void Trainer::forward_backward() {
  buckets_->zero_grad();
  auto extras = buckets_->extras();
  copy_few(flags_, extras_.flags(extras));
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
    extras_.loss(extras).add_(loss.detach().reshape({1}));
    loss_by_sigma_.bin_into(per_example, inputs_[m].sigma, extras_.loss_by_sigma(extras));
    // The last backward starts each bucket's all-reduce as soon as its gradients are in.
    if (m + 1 == accum) buckets_->arm(comm_);
    loss.backward();
  }
}

void Trainer::allreduce_gradients(std::exception_ptr local_error) {
  auto extras = buckets_->extras();
  if (local_error) {
    // Only the extras: buckets whose all-reduce backward started may still be in flight.
    extras.zero_();
    host_flags_.data_ptr<float>()[1] = 1.f;
    copy_few(host_flags_, extras_.flags(extras));
  }
  // Waits for the all-reduces backward started, and starts the rest (all of them, after a failure).
  buckets_->allreduce_sum(comm_, extras);
}

bool Trainer::apply_gradients(int64_t step_index, double loss, double grad_norm) {
  // Every rank holds the same summed gradients, so every rank reaches the same verdict.
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    ++skipped_;
    if (++consecutive_bad_ >= config_.train.max_bad_steps)
      throw AgreedError(fmt::format(
          "step {}: {} consecutive steps had a non-finite loss or gradient norm (train.max_bad_steps); stopping, "
          "the last checkpoint holds finite weights",
          step_index, consecutive_bad_));
    return false;
  }
  consecutive_bad_ = 0;
  torch::NoGradGuard no_grad;
  auto& grads = buckets_->flat_grads();
  if (config_.train.grad_clip > 0 && grad_norm > config_.train.grad_clip)
    grads.mul_(config_.train.grad_clip / (grad_norm + 1e-6));
  optimizer_->set_lr(learning_rate(config_.train, step_index));
  optimizer_->step(grads);
  return true;
}

}  // namespace difftrain
