#pragma once
// Pictures of samples, written as PNG with stb_image_write.
#include <string>

#include <torch/torch.h>

namespace difftrain {

// 2-d points: `samples` [n, 2] drawn over `data` [m, 2] (may be undefined), on a square
// canvas framing both.
void write_scatter_png(const std::string& path, const torch::Tensor& samples, const torch::Tensor& data,
                       int size = 640);

// Images [n, C, H, W] with values in [-1, 1] (C = 1 or 3), tiled into a near-square grid.
void write_image_grid_png(const std::string& path, const torch::Tensor& images);

}  // namespace difftrain
