#pragma once
// The device work of a training step (forward, backward, the gradient all-reduce), recorded
// once and replayed every step after. On a GPU the record is a CUDA graph: one launch
// replays every kernel and NCCL collective the work queued, with no host in between. On
// the CPU the record is the work itself, run again at each replay, so that the trainer's
// static-input step (train.cuda_graph) is the same code, and tested, on every device.
//
// The work may only touch tensors that outlive the graph, must read new inputs from where
// they were at capture (the caller copies each step's values into them), and must not
// wait on the host: a replay runs none of its host code, only what it queued.
#include <functional>
#include <memory>

#include <torch/torch.h>

namespace difftrain {

class StepGraph {
 public:
  virtual ~StepGraph() = default;
  // Records `work`. On a GPU it is not run: call replay() for that.
  virtual void capture(std::function<void()> work) = 0;
  // Runs what was recorded, on the caller's current stream.
  virtual void replay() = 0;
};

// For tensors on `device`: a CUDA graph on a GPU (with a CUDA LibTorch), else the work itself.
std::unique_ptr<StepGraph> make_step_graph(const torch::Device& device);

// On a GPU, makes a stream of LibTorch's pool (not the default stream, which cannot be
// captured) this thread's current stream on `device`, from now on. Call it before building
// the model and the gradient hooks: autograd runs each parameter's gradient accumulation on
// the stream that was current when its node was made, and a capture fails when backward
// crosses from the captured stream to another; the eager steps before the capture then also
// set up LibTorch's per-stream state (library workspaces) on the stream later captured.
// Nothing on the CPU.
void use_capturable_stream(const torch::Device& device);

}  // namespace difftrain
