// The loop over steps that `train` (run) and `bench` share, and what run() does between
// steps: checkpoints, sample grids, the metrics log, stopping on a signal.
#include <chrono>
#include <filesystem>
#include <utility>

#include "difftrain/error.h"
#include "difftrain/train/log_window.h"
#include "difftrain/train/sample_grid.h"
#include "difftrain/train/stop_signal.h"
#include "difftrain/train/trainer.h"

namespace difftrain {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
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

std::exception_ptr Trainer::for_each_step(int64_t first, int64_t last, const AfterStep& after) {
  std::exception_ptr pending;
  for (int64_t s = first; s <= last; ++s) {
    const auto t0 = Clock::now();
    std::exception_ptr local_error = std::exchange(pending, nullptr);
    const auto micro = next_micro_batches(local_error);
    const double data_time = seconds_since(t0);
    auto stats = step(micro, s, local_error);
    stats.times.data = data_time;
    if (!after(s, stats, pending)) break;
  }
  return pending;
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
  // A failure of this rank's own between steps (rank 0 writing a checkpoint or metrics)
  // rides in the next step's all-reduce, or in the agreement that ends the run.
  std::exception_ptr pending = for_each_step(start_step_ + 1, t.steps, [&](int64_t s, StepStats& stats,
                                                                           std::exception_ptr& next) {
    window.add(stats);
    result.final_step = s;
    const bool stopping = stats.stop && s < t.steps;

    if (config_.dist.check_every > 0 && s % config_.dist.check_every == 0) check_parameters_in_sync();
    if (s % t.checkpoint_every == 0 || s == t.steps || stopping) {
      try {
        save(s);
        last_saved = s;
      } catch (...) {
        next = std::current_exception();
      }
    }
    if (leader && t.sample_every > 0 && s % t.sample_every == 0 && !next) {
      try {
        write_sample_grid(ema_->model(), schedule_, config_, sample_shape_, comm_.device(), s);
      } catch (...) {
        next = std::current_exception();
      }
    }
    if (s % t.log_every == 0 || s == t.steps || stopping) {
      const auto t0 = Clock::now();
      const auto record = window.close(s, t, stats, skipped_);
      if (leader) {
        try {
          run_dir_->metrics().write(record);
        } catch (...) {
          if (!next) next = std::current_exception();
        }
        progress.update(record);
      }
      result.last_loss = record.loss;
      window.add_log_time(seconds_since(t0));  // shows in the next record
    }
    result.preempted = stopping;
    return !stopping;
  });
  if (leader) progress.finish();
  // A run resumed at its last step, or from a --resume file elsewhere, still leaves its
  // checkpoint here.
  if (!pending &&
      (last_saved != result.final_step || !std::filesystem::exists(latest_checkpoint_path(config_.run_dir)))) {
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

StepTimes Trainer::bench(int64_t steps, int64_t warmup, double& wall_s) {
  const auto& t = config_.train;
  make_loader();
  begin_training_phase();
  LogWindow window(loss_by_sigma_, 0);
  StepTimes total;
  int64_t timed = 0;
  auto start = Clock::now();
  auto start_clock = [&] {
    comm_.barrier();  // every rank starts the clock together
    total = StepTimes{}, start = Clock::now();
  };
  if (warmup == 0) start_clock();
  for_each_step(1, warmup + steps, [&](int64_t s, StepStats& stats, std::exception_ptr&) {
    const auto t0 = Clock::now();
    window.add(stats);
    // What a logging step costs besides the write: its record, formatted as the metrics file has it.
    if (s % t.log_every == 0 && json_record(window.close(s, t, stats, skipped_)).empty()) fail("bench: empty record");
    stats.times.log = seconds_since(t0);
    total += stats.times;
    timed += s > warmup ? 1 : 0;
    if (stats.stop) return false;  // every rank together: the stop request rode in the all-reduce
    if (s == warmup) start_clock();
    return true;
  });
  if (timed < steps)
    throw AgreedError(fmt::format("bench: stopped by a signal after {} of {} timed steps", timed, steps));
  wall_s = seconds_since(start);
  return total / static_cast<double>(steps);
}

}  // namespace difftrain
