"""Prints, one per line, the CMake arguments that build difftrain against the LibTorch
inside the PyTorch this Python imports (a pip wheel, or any PyTorch with its C++ files).

    cmake -S . -B build $(python launch/torch_cmake_args.py)

LibTorch's root goes into CMAKE_PREFIX_PATH (its CMake files find their libraries under
it). A CUDA wheel keeps the CUDA libraries and NCCL in pip's nvidia/ packages rather than
in a CUDA toolkit, so their places are named here: NVRTC (which LibTorch's CMake files look
for in the toolkit) and NCCL (so that difftrain links the very libnccl.so.2 that
libtorch_cuda.so loads, never a second one). nvcc itself comes from the CUDA toolkit
(CUDA_HOME, else /usr/local/cuda, else PATH): LibTorch's CMake files enable CUDA.
"""

import glob
import os
import shutil
import sys

try:
    import torch
except ImportError as e:
    sys.exit(f"torch_cmake_args: {sys.executable} cannot import torch ({e})")

root = os.path.dirname(torch.__file__)
if not os.path.isfile(os.path.join(root, "share", "cmake", "Torch", "TorchConfig.cmake")):
    sys.exit(f"torch_cmake_args: {root} has no share/cmake/Torch/TorchConfig.cmake: "
             "this PyTorch carries no LibTorch for C++")
# DIFFTRAIN_TORCH_PYTHON: the parity tests also run under this PyTorch (tests/CMakeLists.txt).
args = [f"-DCMAKE_PREFIX_PATH={root}", f"-DDIFFTRAIN_TORCH_PYTHON={sys.executable}"]

if torch.version.cuda:
    site = os.path.dirname(root)
    nvidia = os.path.join(site, "nvidia")
    major = torch.version.cuda.split(".")[0]

    def first(pattern):
        found = sorted(glob.glob(os.path.join(nvidia, pattern)))
        return found[0] if found else None

    nvrtc = first(f"cu{major}/lib/libnvrtc.so.*") or first("cuda_nvrtc/lib/libnvrtc.so.*")
    if nvrtc:
        args.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc}")
    nccl = first("nccl/lib/libnccl.so.2")
    if nccl:
        args.append(f"-DNCCL_ROOT={os.path.dirname(os.path.dirname(nccl))}")

    on_path = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
                  on_path and os.path.dirname(os.path.dirname(os.path.realpath(on_path)))]
    toolkit = next((c for c in candidates if c and os.path.isfile(os.path.join(c, "bin", "nvcc"))
                    and os.path.isfile(os.path.join(c, "include", "cuda_runtime.h"))), None)
    if toolkit is None:
        sys.exit(f"torch_cmake_args: PyTorch {torch.__version__} is built for CUDA {torch.version.cuda}, "
                 "and LibTorch's CMake files need nvcc and the CUDA headers: set CUDA_HOME to a CUDA toolkit")
    args += [f"-DCUDA_TOOLKIT_ROOT_DIR={toolkit}", f"-DCUDAToolkit_ROOT={toolkit}",
             f"-DCMAKE_CUDA_COMPILER={os.path.join(toolkit, 'bin', 'nvcc')}"]

print("\n".join(args))
