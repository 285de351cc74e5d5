#pragma once
// PNG encoding into memory with stb_image_write: the caller writes the bytes with the
// checked atomic writer (stb's own file output ignores write errors).
#include <cstdint>
#include <vector>

namespace difftrain {

// `pixels`: height rows of width x channels bytes (channels 1, 3 or 4).
std::vector<char> encode_png(int width, int height, int channels, const uint8_t* pixels);

}  // namespace difftrain
