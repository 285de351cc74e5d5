// The one file that needs LibTorch's CUDA headers: built only against a CUDA LibTorch
// (DIFFTRAIN_TORCH_CUDA). NCCL's collectives go on the stream LibTorch's kernels are
// queued on, so they are ordered after the backward pass that wrote the gradients.
#include <c10/cuda/CUDAStream.h>

#include "difftrain/comm/nccl_communicator.h"

namespace difftrain {

cudaStream_t torch_current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace difftrain
