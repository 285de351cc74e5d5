// Built only against a CUDA LibTorch (DIFFTRAIN_TORCH_CUDA), which has the allocator's
// statistics; other builds answer -1 (train/bench.cpp).
#include <c10/cuda/CUDACachingAllocator.h>

#include "difftrain/train/bench.h"

namespace difftrain {

double peak_gpu_mb(const torch::Device& device) {
  if (!device.is_cuda()) return -1;
  using namespace c10::cuda::CUDACachingAllocator;
  const auto stats = getDeviceStats(device.index());
  return static_cast<double>(stats.allocated_bytes[static_cast<std::size_t>(StatType::AGGREGATE)].peak) / (1 << 20);
}

}  // namespace difftrain
