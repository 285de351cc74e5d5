#pragma once
// The trainer. Per step on every rank: batch -> (sigma, eps) from this rank's streams ->
// loss -> backward -> gradients averaged over ranks -> the same optimizer step everywhere
// -> EMA. It never knows which communication backend it has. Its parts live in files of
// their own: set-up and state (trainer.cpp), the step (train_step.cpp), its CUDA-graph
// capture (step_capture.cpp), the loop that run() and bench() share (train_loop.cpp), the
// cross-rank parameter checksums (parameter_checksums.cpp).
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "difftrain/comm/communicator.h"
#include "difftrain/comm/grad_buckets.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/schedule.h"
#include "difftrain/data/batch_loader.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/denoiser.h"
#include "difftrain/train/ema.h"
#include "difftrain/train/loss_by_sigma.h"
#include "difftrain/train/metrics.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/precision.h"
#include "difftrain/train/run_directory.h"
#include "difftrain/train/step_extras.h"
#include "difftrain/train/step_graph.h"
#include "difftrain/train/step_stats.h"

namespace difftrain {

struct TrainResult {
  int64_t start_step = 0;  // > 0 when resumed
  int64_t final_step = 0;
  double last_loss = 0;  // mean over the last logging window
  int64_t skipped_steps = 0;
  bool preempted = false;  // stopped early by a signal, after writing a checkpoint
};

class Trainer {
 public:
  // Builds everything this rank needs. Makes no collective call and touches no run
  // directory, so a rank that fails here cannot strand the others inside a collective nor
  // leave a directory behind: the caller agrees on success first, then calls synchronize().
  Trainer(Config config, Communicator& comm, TrainOptions options = {});
  ~Trainer();

  // The collective part of the set-up: rank 0 locks the run directory, finds and checks
  // the checkpoint to resume from and prepares the directory; then the starting step and
  // data position, the weights (model and EMA) and the optimizer state go from rank 0 to
  // every rank. A failure on rank 0 (an incompatible checkpoint, a busy run directory)
  // ends every rank together: RankError on rank 0, PeerError elsewhere.
  void synchronize();

  // Trains from the starting step to config.train.steps (or until a stop signal).
  TrainResult run();

  // The training loop for `difftrain bench`, with no run directory (synchronize() is not
  // needed): `warmup` untimed steps, then `steps` timed ones started together on every
  // rank; no checkpoints, sample grids or metrics file (a logging step formats its record
  // and drops it). Returns this rank's time per step by phase, and its wall time.
  StepTimes bench(int64_t steps, int64_t warmup, double& wall_s);

  // One optimizer step on this rank's micro-batches for the step. `local_error`, if set, is
  // a failure this rank met while getting them: it is shared with every rank through the
  // step's all-reduce, and the step throws RankError here and PeerError elsewhere.
  using StepStats = difftrain::StepStats;
  StepStats step(const std::vector<Batch>& micro_batches, int64_t step_index,
                 std::exception_ptr local_error = nullptr);

  Denoiser& model() { return *model_; }
  Ema& ema() { return *ema_; }
  FlatAdam& optimizer() { return *optimizer_; }
  const Schedule& schedule() const { return schedule_; }
  int64_t start_step() const { return start_step_; }
  // What every rank must agree on before training: {examples in the dataset, values per
  // example, model parameters}. Ranks that read different copies of the data differ here.
  std::vector<int64_t> fingerprint() const;
  int64_t per_rank_batch() const { return per_rank_batch_; }
  // Where every rank runs and which examples and shards it reads (train/placement.h): a
  // collective, before run(); the report on rank 0, "" elsewhere.
  std::string placement();

  // Cross-rank comparison of a checksum of every parameter; throws AgreedError naming the
  // first parameter that differs on some rank.
  void check_parameters_in_sync();

 private:
  Config config_;
  Communicator& comm_;
  TrainOptions options_;
  Schedule schedule_;
  Parameterization parameterization_;
  Precision precision_;
  std::vector<int64_t> sample_shape_;
  int64_t dataset_size_ = 0;
  std::optional<ShardedDataset> dataset_;  // moved into the loader when run() starts
  std::optional<ShardedDataset> labels_;   // conditional models: the labels beside dataset_
  std::shared_ptr<Denoiser> model_;
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<FlatAdam> optimizer_;
  std::unique_ptr<GradBuckets> buckets_;
  std::unique_ptr<BatchLoader> loader_;
  std::unique_ptr<RunDirectory> run_dir_;  // rank 0 only
  int64_t per_rank_batch_ = 0;         // per micro-batch
  int64_t start_step_ = 0;
  int64_t start_position_ = 0;  // examples of its share each rank had consumed at start_step_
  int64_t skipped_ = 0;
  int64_t consecutive_bad_ = 0;
  LossBySigma loss_by_sigma_;  // the bins; run() sums a logging window in a copy
  StepExtras extras_;          // what rides with the gradients (after loss_by_sigma_: sized by it)

  // The step's inputs, one per micro-batch, in storage that lives as long as the trainer:
  // each step copies its values in, so that a captured step finds them where it recorded them.
  std::vector<TrainSample> inputs_;
  torch::Tensor flags_;       // this rank's [stop requested, failed], on the device
  torch::Tensor host_flags_;  // the same, written on the host (pinned, on a GPU)
  std::unique_ptr<StepGraph> graph_;  // train.cuda_graph: captured after a few eager steps
  std::vector<const void*> captured_inputs_;  // where the captured step reads its inputs
  int64_t steps_run_ = 0;             // by this trainer (eager or replayed)

  void make_loader();  // once: the dataset moves into it
  // Copies the step's examples into inputs_ with their noise levels, noise and labels
  // drawn from this rank's streams for the step.
  void stage_inputs(const std::vector<Batch>& micro_batches, int64_t step_index);
  // This rank's [stop requested, failed] where the step's device work reads them.
  void post_flags(bool failed);
  // The step's device work over inputs_ (what train.cuda_graph captures with the
  // all-reduce): gradients into the buckets, this rank's loss, flags and loss by sigma into
  // their extras; the gradient all-reduce then sums them over every rank.
  void forward_backward();
  // The captured step's forward, backward and all-reduce, replayed; false (and `local_error`
  // set, unless it was) when it could not run.
  bool replay_captured_step(std::exception_ptr& local_error);
  // The gradient all-reduce after an eager backward: the buckets backward started are
  // waited for, the rest started. A rank that failed still takes part, its failure flag set
  // in the extras, so that every rank learns of it from the same sums.
  void allreduce_gradients(std::exception_ptr local_error);
  // Skips a step whose loss or gradient norm is not finite (stopping after
  // train.max_bad_steps in a row); else clips and takes the optimizer step. False: skipped.
  bool apply_gradients(int64_t step_index, double loss, double grad_norm);
  // Records forward_backward and the all-reduce as the step graph; every rank learns
  // whether every rank could (a failure here, or `local_error`, ends every rank together).
  void capture_step(int64_t step_index, std::exception_ptr local_error);
  // The memory the captured step reads (inputs_, flags_, the extras), and whether it is
  // still where the capture found it: a graph replays its reads from those addresses.
  std::vector<const void*> input_addresses();
  bool inputs_in_place();
  // The step's micro-batches, or none with `error` set when this rank cannot read them.
  std::vector<Batch> next_micro_batches(std::exception_ptr& error);
  // The loop run() and bench() share: for each step from `first` to `last`, this rank's
  // micro-batches, then the step; `after` sees each step's stats and returns whether to go
  // on, and may leave a failure of this rank's in `pending` for the next step to share.
  // Returns what is pending when the loop ends.
  using AfterStep = std::function<bool(int64_t step, StepStats& stats, std::exception_ptr& pending)>;
  std::exception_ptr for_each_step(int64_t first, int64_t last, const AfterStep& after);
  // Model, EMA and optimizer state from the checkpoint to resume from.
  void load_state(const ResumePoint& point);
  void save(int64_t step);
  // Every rank learns whether any rank holds a failure (a checkpoint it could not write);
  // the lowest failing rank throws RankError, the others PeerError (comm/agreement.h).
  void agree(std::exception_ptr failure, int64_t step);
  // After every rank learned that some rank failed: RankError here if it was this rank
  // (`failure`), PeerError otherwise.
  [[noreturn]] void throw_shared_failure(std::exception_ptr failure, int64_t step) const;
};

}  // namespace difftrain
