#pragma once
// The training loop. Per step on every rank: batch -> (sigma, eps) from this rank's
// streams -> loss -> backward -> gradients averaged over ranks -> the same optimizer step
// everywhere -> EMA. It never knows which communication backend it has.
#include <memory>
#include <string>

#include "difftrain/config.h"
#include "difftrain/data/batch_loader.h"
#include "difftrain/diffusion.h"
#include "difftrain/dist/communicator.h"
#include "difftrain/dist/grad_buckets.h"
#include "difftrain/models/denoiser.h"
#include "difftrain/schedule.h"
#include "difftrain/train/ema.h"
#include "difftrain/train/metrics.h"

namespace difftrain {

struct TrainResult {
  int64_t start_step = 0;  // > 0 when resumed
  int64_t final_step = 0;
  double last_loss = 0;    // mean over the last logging window
  int64_t skipped_steps = 0;
};

class Trainer {
 public:
  // Builds everything this rank needs, reading only data metadata and (if resuming) the
  // checkpoint. Makes no collective call, so a rank that fails here cannot strand the
  // others inside one: the caller agrees on success first, then calls broadcast_weights().
  Trainer(Config config, Communicator& comm);
  ~Trainer();

  // Rank 0's weights (model and EMA) to every rank: the one collective of the set-up.
  void broadcast_weights();

  // Trains to config.train.steps, resuming from RUN/checkpoints/latest.pt if present.
  TrainResult run();

  // One optimizer step on the given per-rank micro-batches (all of this rank's examples for
  // the step). Public so that tests can drive it with fixed data.
  struct StepStats {
    double loss = 0, grad_norm = 0;
    bool skipped = false;
    StepTimes times;
  };
  StepStats step(const std::vector<torch::Tensor>& micro_batches, int64_t step_index);

  Denoiser& model() { return *model_; }
  Ema& ema() { return *ema_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const Schedule& schedule() const { return schedule_; }
  int64_t per_rank_batch() const { return per_rank_batch_; }

  // Cross-rank comparison of a checksum of every parameter; throws naming the first
  // parameter that differs on some rank.
  void check_parameters_in_sync();

 private:
  Config config_;
  Communicator& comm_;
  Schedule schedule_;
  Parameterization parameterization_;
  std::vector<int64_t> sample_shape_;
  std::shared_ptr<Denoiser> model_;
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<GradBuckets> buckets_;
  std::unique_ptr<BatchLoader> loader_;
  int64_t per_rank_batch_ = 0;  // per micro-batch
  int64_t start_step_ = 0;
  int64_t skipped_ = 0;

  void save(int64_t step);
  void resume_from(const std::string& path);
};

}  // namespace difftrain
