#include "difftrain/build_info.h"

#include <fmt/format.h>
#include <torch/version.h>

#ifdef DIFFTRAIN_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace difftrain {

std::string build_description() {
#ifdef DIFFTRAIN_TORCH_CUDA
  std::string text = fmt::format("LibTorch {} (CUDA)", TORCH_VERSION);
#else
  std::string text = fmt::format("LibTorch {} (CPU only)", TORCH_VERSION);
#endif
#ifdef DIFFTRAIN_WITH_NCCL
  // The versions of the headers compiled against; the CUDA runtime is the toolkit's.
  text += fmt::format(", CUDA {}.{}, NCCL {}.{}.{}", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, NCCL_MAJOR,
                      NCCL_MINOR, NCCL_PATCH);
#else
  text += ", no CUDA, no NCCL";
#endif
  return text;
}

}  // namespace difftrain
