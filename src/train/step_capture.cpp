// train.cuda_graph: the step's device work (forward, backward and the gradient all-reduce,
// over inputs copied into tensors that stay in place) recorded once after a few eager
// steps, then replayed every step with one launch.
#include "difftrain/error.h"
#include "difftrain/train/trainer.h"

namespace difftrain {

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

bool Trainer::replay_captured_step(std::exception_ptr& local_error) {
  // A rank that failed (reading its data, staging its inputs) replays too, over the inputs
  // of its last step, still in place, with its failure flag set: NCCL needs every rank's
  // collectives captured alike, or none, so every rank replays every step.
  try {
    if (!inputs_in_place()) fail("the captured step's inputs moved (a defect: they must be copied into)");
    graph_->replay();  // forward_backward and the all-reduce, as captured
    comm_.watch_device_work("a replayed step's gradient all-reduce");
    return true;
  } catch (...) {
    if (!local_error) local_error = std::current_exception();  // on the CPU, where the replay runs host code
    return false;
  }
}

}  // namespace difftrain
