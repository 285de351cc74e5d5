#pragma once
// The IDX format of the MNIST family: a 4-byte magic (0, 0, element type, number of
// dimensions), each dimension as a big-endian uint32, then the elements in row-major order.
// Files may be gzip-compressed (as distributed) or plain.
#include <string>

#include <torch/torch.h>

namespace difftrain {

// The unsigned-byte array of `path`, which must have exactly `dims` dimensions (magic
// 0x00000800 + dims). An error names the file and what is wrong with it: another magic, a
// file that ends early or runs on past the data, or a gzip stream that fails its checks.
torch::Tensor read_idx_ubyte(const std::string& path, int dims);

}  // namespace difftrain
