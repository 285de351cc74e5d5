#pragma once
// What this binary was built against, for `difftrain --version` and a run's start line:
// the same source builds against Debian's LibTorch 1.13, a CPU LibTorch 2.x or a CUDA one.
#include <string>

namespace difftrain {

// "LibTorch 2.14.1 (CUDA 13.0), NCCL 2.30.7" or "LibTorch 1.13.1 (CPU only), no NCCL".
std::string build_description();

}  // namespace difftrain
