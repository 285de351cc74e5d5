#pragma once
// Pictures of samples, encoded as PNG with stb_image_write into memory: the caller writes
// the bytes with the checked atomic writer (stb's own file output ignores write errors).
#include <vector>

#include <torch/torch.h>

namespace difftrain {

// 2-d points: `samples` [n, 2] drawn over `data` [m, 2] (may be undefined), on a square
// canvas framing both.
std::vector<char> scatter_png(const torch::Tensor& samples, const torch::Tensor& data, int size = 640);

// Images [n, C, H, W] with values in [-1, 1] (C = 1 or 3), tiled row by row into a grid of
// `columns` columns (0: a near-square grid).
std::vector<char> image_grid_png(const torch::Tensor& images, int64_t columns = 0);

}  // namespace difftrain
