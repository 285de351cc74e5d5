#include "difftrain/data/image_folder.h"

#include <stb_image.h>
#include <stb_image_resize.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "difftrain/data/prepare.h"
#include "difftrain/error.h"
#include "difftrain/io/input_file.h"

namespace difftrain {

namespace {

namespace fs = std::filesystem;

struct Image {
  std::string path;
  int64_t label;
};

struct Listing {
  std::vector<std::string> classes;
  std::vector<Image> images;
};

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

bool image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* known : {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm"})
    if (ext == known) return true;
  return false;
}

// One class folder's images, ordered as torchvision's ImageFolder orders them: by
// directory, then by file name within it.
std::vector<fs::path> class_images(const fs::path& dir) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory()) continue;
    if (!image_extension(it->path()))
      fail("{}: not an image file (expected .png, .jpg, .jpeg, .bmp, .pgm or .ppm)", it->path().string());
    files.push_back(it->path());
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return std::make_pair(a.parent_path().string(), a.filename().string()) <
           std::make_pair(b.parent_path().string(), b.filename().string());
  });
  if (files.empty()) fail("{}: class folder holds no images", dir.string());
  return files;
}

Listing list_folder(const std::string& root) {
  if (!input_exists(root)) fail("{}: no such directory", root);
  if (!fs::is_directory(root)) fail("{}: not a directory (expected one subfolder of images per class)", root);
  std::vector<fs::path> class_dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    if (hidden(e.path())) continue;
    if (!e.is_directory())
      fail("{}: a file at the top of the image folder; each image belongs in its class's subfolder",
           e.path().string());
    class_dirs.push_back(e.path());
  }
  if (class_dirs.empty()) fail("{}: holds no class folders (expected one subfolder of images per class)", root);
  std::sort(class_dirs.begin(), class_dirs.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  Listing listing;
  for (const auto& dir : class_dirs) {
    const auto label = static_cast<int64_t>(listing.classes.size());
    listing.classes.push_back(dir.filename().string());
    for (const auto& f : class_images(dir)) listing.images.push_back({f.string(), label});
  }
  return listing;
}

// stb_image decodes at most 2^30 bytes of pixels; it refuses a larger PNG, but its reason
// ("too large") is overwritten by "unknown image type" when it goes on to try the other
// formats. The PNG header says the size: width and height in IHDR, then the colour type.
constexpr uint64_t kMaxDecodedBytes = uint64_t{1} << 30;

std::optional<std::string> too_large_png(const std::string& path) {
  unsigned char header[26] = {};
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(header), sizeof header)) return std::nullopt;
  static const unsigned char signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  if (std::memcmp(header, signature, sizeof signature) != 0) return std::nullopt;
  const auto word = [&](int at) {
    return uint64_t{header[at]} << 24 | uint64_t{header[at + 1]} << 16 | uint64_t{header[at + 2]} << 8 | header[at + 3];
  };
  const uint64_t width = word(16), height = word(20);
  const int colour_type = header[25];
  const uint64_t channels = colour_type == 2 || colour_type == 3 ? 3 : colour_type == 4 ? 2 : colour_type == 6 ? 4 : 1;
  if (width * height * channels <= kMaxDecodedBytes) return std::nullopt;
  return fmt::format("the image is {}x{} pixels with {} channel{}, too large to decode (at most {} bytes of pixels, "
                     "e.g. {}x{} grey)",
                     width, height, channels, channels == 1 ? "" : "s", kMaxDecodedBytes, 32768, 32768);
}

[[noreturn]] void undecodable(const std::string& path) {
  if (const auto why = too_large_png(path)) fail("{}: cannot decode image: {}", path, *why);
  const char* reason = stbi_failure_reason();
  fail("{}: cannot decode image: {}", path, reason ? reason : "unknown reason");
}

// Reads only the headers: whether any image is stored in colour (3 or 4 channels). Also
// finds unreadable files before anything is decoded.
bool any_in_colour(const std::vector<Image>& images) {
  bool colour = false;
  for (const auto& image : images) {
    int w = 0, h = 0, channels = 0;
    if (!stbi_info(image.path.c_str(), &w, &h, &channels)) undecodable(image.path);
    colour = colour || channels >= 3;
  }
  return colour;
}

// The image at `path`, centre-cropped to a square and resized, into `out` [C, size, size].
void load_square(const std::string& path, int size, int channels, torch::Tensor out) {
  int w = 0, h = 0, stored = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> pixels(stbi_load(path.c_str(), &w, &h, &stored, channels),
                                                         stbi_image_free);
  if (!pixels) undecodable(path);
  const int side = std::min(w, h);
  const int64_t row_bytes = int64_t{w} * channels;
  const unsigned char* crop = pixels.get() + ((h - side) / 2) * row_bytes + int64_t{(w - side) / 2} * channels;
  auto hwc = torch::empty({size, size, channels}, torch::kUInt8);
  if (side == size) {
    for (int r = 0; r < size; ++r)
      std::memcpy(hwc.data_ptr<uint8_t>() + int64_t{r} * size * channels, crop + r * row_bytes, size * channels);
  } else if (!stbir_resize_uint8_generic(crop, side, side, static_cast<int>(row_bytes), hwc.data_ptr<uint8_t>(),
                                         size, size, size * channels, channels, STBIR_ALPHA_CHANNEL_NONE, 0,
                                         STBIR_EDGE_CLAMP, side > size ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE,
                                         STBIR_COLORSPACE_LINEAR, nullptr)) {
    fail("{}: cannot resize its {}x{} centre square to {}x{}", path, side, side, size, size);
  }
  out.copy_(hwc.permute({2, 0, 1}));
}

}  // namespace

std::vector<std::string> prepare_image_folder(const std::string& from_dir, const std::string& out_dir,
                                              int64_t shards, const ImageFolderOptions& options) {
  if (options.size < 1 || options.size > 4096)
    fail("prepare image-folder: --size must be in [1, 4096], got {}", options.size);
  if (options.channels != 0 && options.channels != 1 && options.channels != 3)
    fail("prepare image-folder: --channels must be 1 or 3, got {}", options.channels);
  refuse_output_inside_input(from_dir, out_dir, "prepare image-folder");
  const Listing listing = list_folder(from_dir);
  const bool colour = any_in_colour(listing.images);
  const int channels = options.channels ? options.channels : colour ? 3 : 1;
  const int size = static_cast<int>(options.size);
  return write_shards(
      out_dir, shards, static_cast<int64_t>(listing.images.size()),
      [&](int64_t begin, int64_t end) {
        auto x = torch::empty({end - begin, channels, size, size}, torch::kUInt8);
        auto y = torch::empty({end - begin}, torch::kInt64);
        for (int64_t i = begin; i < end; ++i) {
          load_square(listing.images[i].path, size, channels, x[i - begin]);
          y.data_ptr<int64_t>()[i - begin] = listing.images[i].label;
        }
        return h5::Datasets{{"x", x}, {"y", y}};
      },
      listing.classes);
}

}  // namespace difftrain
