#include "difftrain/plot/png.h"

#include <stb_image_write.h>

#include "difftrain/error.h"

namespace difftrain {

std::vector<char> encode_png(int width, int height, int channels, const uint8_t* pixels) {
  std::vector<char> png;
  const auto append = [](void* out, void* data, int size) {
    auto& bytes = *static_cast<std::vector<char>*>(out);
    bytes.insert(bytes.end(), static_cast<const char*>(data), static_cast<const char*>(data) + size);
  };
  if (!stbi_write_png_to_func(append, &png, width, height, channels, pixels, width * channels))
    fail("png: cannot encode a {}x{} picture with {} channels", width, height, channels);
  return png;
}

}  // namespace difftrain
