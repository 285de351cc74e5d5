// Built only against a CUDA LibTorch (DIFFTRAIN_TORCH_CUDA), which has the allocator's
// statistics; other builds answer -1 (train/bench.cpp). Not yet compiled: no session has had
// a CUDA LibTorch (launch/gpu-check.sh builds it).
#include <c10/cuda/CUDACachingAllocator.h>

#include "difftrain/train/bench.h"

namespace difftrain {

double peak_gpu_mb(const torch::Device& device) {
  if (!device.is_cuda()) return -1;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  // Entry 0 is StatType::AGGREGATE (all pools), whose namespace moved between LibTorch versions.
  return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20);
}

}  // namespace difftrain
