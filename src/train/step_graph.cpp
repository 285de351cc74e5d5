#include "difftrain/train/step_graph.h"

#include "difftrain/error.h"

namespace difftrain {

#ifdef DIFFTRAIN_TORCH_CUDA
std::unique_ptr<StepGraph> make_cuda_step_graph();        // torch_cuda_graph.cpp
void use_capturable_cuda_stream(const torch::Device& device);  // torch_cuda_graph.cpp
#endif

namespace {

class RecordedWork final : public StepGraph {
 public:
  void capture(std::function<void()> work) override { work_ = std::move(work); }
  void replay() override {
    if (!work_) fail("step graph: replayed before anything was captured");
    work_();
  }

 private:
  std::function<void()> work_;
};

}  // namespace

std::unique_ptr<StepGraph> make_step_graph(const torch::Device& device) {
  if (!device.is_cuda()) return std::make_unique<RecordedWork>();
#ifdef DIFFTRAIN_TORCH_CUDA
  return make_cuda_step_graph();
#else
  fail("train.cuda_graph: {} needs a LibTorch built with CUDA", device.str());
#endif
}

void use_capturable_stream(const torch::Device& device) {
  if (!device.is_cuda()) return;
#ifdef DIFFTRAIN_TORCH_CUDA
  use_capturable_cuda_stream(device);
#else
  fail("train.cuda_graph: {} needs a LibTorch built with CUDA", device.str());
#endif
}

}  // namespace difftrain
