// LibTorch's current CUDA stream, for the NCCL communicator (which does not include
// LibTorch's CUDA headers): built only against a CUDA LibTorch (DIFFTRAIN_TORCH_CUDA).
// NCCL's own stream waits on it, so a collective runs after the kernels that wrote its input.
#include <c10/cuda/CUDAStream.h>

#include "difftrain/comm/nccl_communicator.h"

namespace difftrain {

cudaStream_t torch_current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace difftrain
