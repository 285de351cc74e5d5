// The step graph on a GPU: LibTorch's CUDA-graph capture. Built only against a CUDA
// LibTorch (DIFFTRAIN_TORCH_CUDA), like the other files that need LibTorch's CUDA headers.
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "difftrain/error.h"
#include "difftrain/train/step_graph.h"

namespace difftrain {
namespace {

class CudaStepGraph final : public StepGraph {
 public:
  void capture(std::function<void()> work) override {
    // A capture cannot run on the legacy default stream, and must find nothing of the
    // caller's still queued that it would wrongly depend on: it runs on a side stream
    // forked from, and joined back to, the caller's.
    const auto caller = c10::cuda::getCurrentCUDAStream();
    const auto side = c10::cuda::getStreamFromPool();
    c10::cuda::device_synchronize();
    at::cuda::CUDAEvent forked, joined;
    forked.record(caller);
    forked.block(side);
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      // Thread-local: the communicator's watchdog thread may query its own events meanwhile.
      // Backward's kernels, queued by the autograd engine's thread on this stream, are captured.
      graph_.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      try {
        work();
      } catch (...) {
        cudaGraph_t abandoned = nullptr;
        cudaStreamEndCapture(side.stream(), &abandoned);
        if (abandoned) cudaGraphDestroy(abandoned);
        throw;
      }
      graph_.capture_end();
    }
    joined.record(side);
    joined.block(caller);
  }

  void replay() override { graph_.replay(); }

 private:
  at::cuda::CUDAGraph graph_;
};

}  // namespace

std::unique_ptr<StepGraph> make_cuda_step_graph() { return std::make_unique<CudaStepGraph>(); }

}  // namespace difftrain
