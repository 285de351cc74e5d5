// The step graph on a GPU: LibTorch's CUDA-graph capture. Built only against a CUDA
// LibTorch (DIFFTRAIN_TORCH_CUDA), like the other files that need LibTorch's CUDA headers.
#include <torch/version.h>

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include "difftrain/error.h"
#include "difftrain/train/step_graph.h"

// capture_begin's capture mode arrived in LibTorch 2.1; the default (global) mode would
// make the communicator's watchdog thread invalidate a capture by querying its events.
#define DIFFTRAIN_CUDA_GRAPHS (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))

namespace difftrain {
namespace {

class CudaStepGraph final : public StepGraph {
 public:
  void capture(std::function<void()> work) override {
#if DIFFTRAIN_CUDA_GRAPHS
    // On the current stream, which use_capturable_cuda_stream made a non-default one before
    // the model and its gradient hooks were built, and on which the eager steps ran. Nothing
    // of theirs may still be queued.
    c10::cuda::device_synchronize();
    const auto stream = c10::cuda::getCurrentCUDAStream();
    if (stream == c10::cuda::getDefaultCUDAStream(stream.device_index()))
      fail("train.cuda_graph: the step would be captured on the default stream");
    // Thread-local: the communicator's watchdog thread may query its own events meanwhile.
    // Backward's kernels, queued on this stream by the autograd engine's thread, are captured.
    graph_.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    try {
      work();
    } catch (...) {
      // The capture is abandoned, and LibTorch's allocator and generators may still believe
      // one is under way: the caller ends the run on every rank (Trainer::capture_step).
      cudaGraph_t abandoned = nullptr;
      cudaStreamEndCapture(stream.stream(), &abandoned);
      if (abandoned) cudaGraphDestroy(abandoned);
      throw;
    }
    graph_.capture_end();
#else
    (void)work;
    fail("train.cuda_graph needs LibTorch 2.1 or newer (this is {})", TORCH_VERSION);
#endif
  }

  void replay() override { graph_.replay(); }

 private:
  at::cuda::CUDAGraph graph_;
};

}  // namespace

std::unique_ptr<StepGraph> make_cuda_step_graph() { return std::make_unique<CudaStepGraph>(); }

void use_capturable_cuda_stream(const torch::Device& device) {
  c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()));
}

}  // namespace difftrain
