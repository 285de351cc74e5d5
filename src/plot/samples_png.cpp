#include "difftrain/plot/samples_png.h"

#include <array>
#include <cmath>

#include "difftrain/error.h"
#include "difftrain/plot/png.h"

namespace difftrain {

namespace {

using Rgb = std::array<uint8_t, 3>;

}  // namespace

std::vector<char> scatter_png(const torch::Tensor& samples, const torch::Tensor& data, int size) {
  if (samples.dim() != 2 || samples.size(1) != 2) fail("scatter plot: expected points [n, 2], got {}", samples.sizes());
  auto all = data.defined() ? torch::cat({samples, data.to(samples.dtype())}) : samples;
  all = all.to(torch::kFloat64);
  // Frame the middle 99.8% of the points so a few stray samples do not shrink the picture.
  const auto lo = std::get<0>(all.kthvalue(std::max<int64_t>(1, all.size(0) / 1000), 0));
  const auto hi = std::get<0>(all.kthvalue(all.size(0) - all.size(0) / 1000, 0));
  const double cx = (lo[0].item<double>() + hi[0].item<double>()) / 2;
  const double cy = (lo[1].item<double>() + hi[1].item<double>()) / 2;
  const double span = 1.1 * std::max({hi[0].item<double>() - lo[0].item<double>(),
                                      hi[1].item<double>() - lo[1].item<double>(), 1e-6});
  std::vector<uint8_t> pixels(static_cast<std::size_t>(size) * size * 3, 255);
  auto dot = [&](double x, double y, int radius, Rgb color) {
    const int px = static_cast<int>((x - cx) / span * size + size / 2.0);
    const int py = static_cast<int>(size / 2.0 - (y - cy) / span * size);
    for (int dy = -radius; dy <= radius; ++dy)
      for (int dx = -radius; dx <= radius; ++dx) {
        const int u = px + dx, v = py + dy;
        if (dx * dx + dy * dy > radius * radius || u < 0 || v < 0 || u >= size || v >= size) continue;
        std::copy(color.begin(), color.end(), pixels.begin() + (static_cast<std::size_t>(v) * size + u) * 3);
      }
  };
  auto draw = [&](const torch::Tensor& points, int radius, Rgb color) {
    const auto p = points.to(torch::kFloat64).contiguous();
    const auto a = p.accessor<double, 2>();
    for (int64_t i = 0; i < p.size(0); ++i) dot(a[i][0], a[i][1], radius, color);
  };
  draw(samples, 2, Rgb{70, 130, 220});                  // samples: blue
  if (data.defined()) draw(data, 3, Rgb{220, 60, 40});  // data: red, on top
  return encode_png(size, size, 3, pixels.data());
}

std::vector<char> image_grid_png(const torch::Tensor& images, int64_t columns) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
    fail("image grid: expected images [n, 1 or 3, H, W], got {}", images.sizes());
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = columns > 0 ? std::min(columns, std::max<int64_t>(n, 1))
                                   : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t pad = 2, W = cols * (w + pad) + pad, H = rows * (h + pad) + pad;
  // [-1, 1] -> [0, 255], channels last.
  const auto pix = ((images.to(torch::kFloat32).clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
  std::vector<uint8_t> canvas(static_cast<std::size_t>(W * H * c), 0);
  const uint8_t* src = pix.data_ptr<uint8_t>();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t x0 = pad + (k % cols) * (w + pad), y0 = pad + (k / cols) * (h + pad);
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(src + ((k * h + y) * w) * c, w * c, canvas.begin() + ((y0 + y) * W + x0) * c);
  }
  return encode_png(static_cast<int>(W), static_cast<int>(H), static_cast<int>(c), canvas.data());
}

}  // namespace difftrain
