#pragma once
// `difftrain prepare image-folder`: a folder of images, one subfolder per class (the
// torchvision ImageFolder layout), as sharded HDF5 of square uint8 images.
#include <cstdint>
#include <string>
#include <vector>

namespace difftrain {

struct ImageFolderOptions {
  int64_t size = 0;   // output images are size x size
  int channels = 0;   // 1 (grey) or 3 (RGB); 0: RGB when any image is stored in colour, else grey
};

// Class i is the i-th subfolder of `from_dir` in sorted (byte) order; its images (.png,
// .jpg, .jpeg, .bmp, .pgm, .ppm, case-insensitive, in subfolders too) come in sorted
// order. Each image is centre-cropped to a square and resized (area average down, linear
// up) to uint8 x [n, C, size, size] with int64 y [n] and the folder names as class names.
// Names starting with '.' are skipped; any other file that is not an image, a file at the
// top level, an empty class folder, or an image that cannot be decoded is an error naming
// the path. One shard's images are in memory at a time. Returns the paths written.
std::vector<std::string> prepare_image_folder(const std::string& from_dir, const std::string& out_dir,
                                              int64_t shards, const ImageFolderOptions& options);

}  // namespace difftrain
