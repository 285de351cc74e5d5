// `difftrain prepare fashion-mnist` and `prepare image-folder`: the IDX reader, the
// Fashion-MNIST conversion (on small generated files, and on Debian's package when it is
// installed), the image-folder conversion (class order, crop and resize, channels), the
// class names stored with the data, and one-line errors that leave no files behind.
#include <gtest/gtest.h>
#include <stb_image_write.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "difftrain/data/class_names.h"
#include "difftrain/data/fashion_mnist.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/idx_file.h"
#include "difftrain/data/image_folder.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/sharded_dataset.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::ShardedDataset;
using difftrain::test::error_of;
using difftrain::test::TempDir;

// ---------------------------------------------------------------- writing test files

std::vector<unsigned char> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                                     const std::vector<uint8_t>& data) {
  std::vector<unsigned char> bytes;
  auto put = [&](uint32_t v) {
    for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<unsigned char>(v >> shift));
  };
  put(magic);
  for (auto d : dims) put(d);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

void write_gzip(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

void write_plain(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Image i of a generated Fashion-MNIST-shaped split: pixel (r, c) = (i * 7 + r * 3 + c) % 256.
uint8_t generated_pixel(int64_t i, int64_t r, int64_t c) { return static_cast<uint8_t>((i * 7 + r * 3 + c) % 256); }

// A Fashion-MNIST-like directory of gzip IDX files: `n` images, labels i % 10.
void write_fashion_split(const std::string& dir, const std::string& prefix, int64_t n, int64_t labels_n = -1) {
  fs::create_directories(dir);
  std::vector<uint8_t> pixels, labels;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < 28; ++r)
      for (int64_t c = 0; c < 28; ++c) pixels.push_back(generated_pixel(i, r, c));
  for (int64_t i = 0; i < (labels_n < 0 ? n : labels_n); ++i) labels.push_back(static_cast<uint8_t>(i % 10));
  write_gzip(dir + "/" + prefix + "-images-idx3-ubyte.gz",
             idx_bytes(0x803, {static_cast<uint32_t>(n), 28, 28}, pixels));
  write_gzip(dir + "/" + prefix + "-labels-idx1-ubyte.gz",
             idx_bytes(0x801, {static_cast<uint32_t>(labels.size())}, labels));
}

// Every entry under `dir`, recursively, so a stray temporary or scratch folder shows.
std::vector<std::string> everything_under(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    names.push_back(fs::relative(e.path(), dir).string());
  std::sort(names.begin(), names.end());
  return names;
}

torch::Tensor stored(const std::string& spec, const std::string& name) {
  // Labels open through the examples beside them, as every reader of labels does.
  if (name == "y") {
    auto labels = ShardedDataset::open(spec, "x").labels();
    if (!labels) throw std::runtime_error(spec + ": no labels");
    return labels->read_stored(0, labels->size());
  }
  auto ds = ShardedDataset::open(spec, name);
  return ds.read_stored(0, ds.size());
}

// Shard paths of a prepared directory.
std::vector<std::string> shard_paths(const std::string& dir) {
  std::vector<std::string> paths;
  const auto data = ShardedDataset::open(dir);
  for (const auto& s : data.shards()) paths.push_back(s.path);
  return paths;
}

void expect_class_names_in_every_shard(const std::vector<std::string>& paths, const std::vector<std::string>& names) {
  ASSERT_FALSE(paths.empty());
  for (const auto& p : paths) {
    const auto got = difftrain::h5::read_string_list(p, difftrain::kClassNamesAttribute);
    ASSERT_TRUE(got.has_value()) << p;
    EXPECT_EQ(*got, names) << p;
  }
}

// Whether dataset `name` of `path` is stored contiguously (not chunked).
bool contiguous(const std::string& path, const std::string& name) {
  difftrain::h5::Lock lock(difftrain::h5::library_mutex());
  const auto file = difftrain::h5::open_file(path);
  difftrain::h5::Handle ds(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  difftrain::h5::Handle plist(H5Dget_create_plist(ds.get()), H5Pclose);
  return H5Pget_layout(plist.get()) == H5D_CONTIGUOUS;
}

// ---------------------------------------------------------------- IDX files

TEST(IdxFile, ReadsGzippedAndPlainFiles) {
  TempDir dir;
  std::vector<uint8_t> data(3 * 2 * 4);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(255 - 10 * i);
  const auto bytes = idx_bytes(0x803, {3, 2, 4}, data);
  write_gzip(dir / "a.gz", bytes);
  write_plain(dir / "a", bytes);
  for (const std::string& path : {dir / "a.gz", dir / "a"}) {
    SCOPED_TRACE(path);
    const auto t = difftrain::read_idx_ubyte(path, 3);
    ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 2, 4}));
    ASSERT_EQ(t.scalar_type(), torch::kUInt8);
    EXPECT_EQ(t[0][0][0].item<int64_t>(), 255);
    EXPECT_EQ(t[1][1][2].item<int64_t>(), 255 - 10 * (8 + 4 + 2));  // row-major
    EXPECT_EQ(t[2][1][3].item<int64_t>(), 255 - 10 * 23);
  }
  const auto labels = difftrain::read_idx_ubyte(
      (write_gzip(dir / "l.gz", idx_bytes(0x801, {4}, {9, 0, 3, 7})), dir / "l.gz"), 1);
  EXPECT_TRUE(torch::equal(labels, torch::tensor({9, 0, 3, 7}, torch::kUInt8)));
}

TEST(IdxFile, DamagedFilesAreErrorsNamingTheFile) {
  TempDir dir;
  std::vector<uint8_t> data(5 * 4 * 4, 17);
  const auto good = idx_bytes(0x803, {5, 4, 4}, data);

  // A labels file where images are expected, and a type byte that is not unsigned bytes.
  write_gzip(dir / "labels.gz", idx_bytes(0x801, {3}, {1, 2, 3}));
  auto message = error_of([&] { difftrain::read_idx_ubyte(dir / "labels.gz", 3); });
  EXPECT_MENTIONS(message, dir / "labels.gz");
  EXPECT_MENTIONS(message, "0x00000801");
  write_gzip(dir / "floats.gz", idx_bytes(0xD03, {5, 4, 4}, data));
  EXPECT_MENTIONS(error_of([&] { difftrain::read_idx_ubyte(dir / "floats.gz", 3); }), dir / "floats.gz");

  // The data ends before the header's count, inside the header, or runs on past it.
  write_gzip(dir / "short.gz", std::vector<unsigned char>(good.begin(), good.end() - 3));
  message = error_of([&] { difftrain::read_idx_ubyte(dir / "short.gz", 3); });
  EXPECT_MENTIONS(message, dir / "short.gz");
  EXPECT_MENTIONS(message, "truncated");
  write_gzip(dir / "header.gz", std::vector<unsigned char>(good.begin(), good.begin() + 9));
  EXPECT_MENTIONS(error_of([&] { difftrain::read_idx_ubyte(dir / "header.gz", 3); }), dir / "header.gz");
  auto longer = good;
  longer.push_back(0);
  write_gzip(dir / "long.gz", longer);
  EXPECT_MENTIONS(error_of([&] { difftrain::read_idx_ubyte(dir / "long.gz", 3); }), dir / "long.gz");

  // A gzip file cut short, and one with a flipped byte in its compressed data.
  write_gzip(dir / "good.gz", good);
  const auto compressed = read_bytes(dir / "good.gz");
  ASSERT_GT(compressed.size(), 30u);
  write_plain(dir / "cut.gz", std::vector<unsigned char>(compressed.begin(), compressed.end() - 10));
  message = error_of([&] { difftrain::read_idx_ubyte(dir / "cut.gz", 3); });
  EXPECT_MENTIONS(message, dir / "cut.gz");
  auto flipped = compressed;
  flipped[flipped.size() - 6] ^= 0xff;  // inside the trailer's CRC
  write_plain(dir / "crc.gz", flipped);
  message = error_of([&] { difftrain::read_idx_ubyte(dir / "crc.gz", 3); });
  EXPECT_MENTIONS(message, dir / "crc.gz");
  EXPECT_MENTIONS(message, "gzip");
  EXPECT_EQ(message.find(dir / "crc.gz"), message.rfind(dir / "crc.gz")) << message;  // named once

  // A header whose sizes are absurd fails without trying to allocate them.
  write_gzip(dir / "huge.gz", idx_bytes(0x803, {0xffffffffu, 0xffffffffu, 28}, data));
  EXPECT_MENTIONS(error_of([&] { difftrain::read_idx_ubyte(dir / "huge.gz", 3); }), dir / "huge.gz");
  write_gzip(dir / "big.gz", idx_bytes(0x803, {60000, 280, 28}, data));
  message = error_of([&] { difftrain::read_idx_ubyte(dir / "big.gz", 3); });
  EXPECT_MENTIONS(message, dir / "big.gz");
  EXPECT_MENTIONS(message, "470400000");  // the promised bytes

  EXPECT_MENTIONS(error_of([&] { difftrain::read_idx_ubyte(dir / "missing.gz", 3); }), dir / "missing.gz");
}

// ---------------------------------------------------------------- Fashion-MNIST

TEST(PrepareFashionMnist, GeneratedFilesBecomeShardsWithLabelsAndClassNames) {
  TempDir dir;
  write_fashion_split(dir / "src", "train", 23);
  write_fashion_split(dir / "src", "t10k", 7);
  const auto paths = difftrain::prepare_fashion_mnist(dir / "out", 3, "train", dir / "src");
  ASSERT_EQ(paths.size(), 3u);
  auto x = ShardedDataset::open(dir / "out");
  EXPECT_EQ(x.size(), 23);
  EXPECT_EQ(x.stored_dtype(), torch::kUInt8);
  EXPECT_EQ(x.sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  const auto images = x.read_stored(0, 23);
  for (int64_t i : {0, 8, 22})
    for (auto [r, c] : {std::pair<int64_t, int64_t>{0, 0}, {13, 27}, {27, 5}})
      EXPECT_EQ(images[i][0][r][c].item<int64_t>(), generated_pixel(i, r, c)) << i << " " << r << " " << c;
  const auto y = stored(dir / "out", "y");
  ASSERT_EQ(y.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(y, torch::arange(23, torch::kLong) % 10));
  expect_class_names_in_every_shard(paths, difftrain::fashion_mnist_class_names());
  // Stored contiguously: the loader's random single rows are then read straight from the
  // file (chunked layouts measured several times slower; see tests/bench/bench_loader.cpp).
  for (const auto& p : paths) EXPECT_TRUE(contiguous(p, "x") && contiguous(p, "y")) << p;
  EXPECT_EQ(difftrain::fashion_mnist_class_names().at(0), "T-shirt/top");
  EXPECT_EQ(difftrain::fashion_mnist_class_names().at(9), "Ankle boot");

  // The test split reads the t10k files.
  difftrain::prepare_fashion_mnist(dir / "test", 1, "test", dir / "src");
  EXPECT_EQ(ShardedDataset::open(dir / "test").size(), 7);
}

TEST(PrepareFashionMnist, BadFilesAreOneLineErrorsNamingTheFileAndWriteNothing) {
  TempDir dir;
  auto expect_fails = [&](const std::string& src, const std::string& names_file, const std::string& text) {
    SCOPED_TRACE(src);
    const std::string out = dir / ("out-" + fs::path(src).filename().string());
    const auto message = error_of([&] { difftrain::prepare_fashion_mnist(out, 2, "train", src); });
    EXPECT_MENTIONS(message, names_file);
    EXPECT_MENTIONS(message, text);
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_FALSE(fs::exists(out));
  };
  // Counts that disagree.
  write_fashion_split(dir / "mismatch", "train", 6, 5);
  expect_fails(dir / "mismatch", dir / "mismatch/train-labels-idx1-ubyte.gz", "6 images");
  // A label outside [0, 9].
  write_fashion_split(dir / "label", "train", 4);
  write_gzip(dir / "label/train-labels-idx1-ubyte.gz", idx_bytes(0x801, {4}, {0, 9, 10, 1}));
  expect_fails(dir / "label", dir / "label/train-labels-idx1-ubyte.gz", "label 10 of image 2");
  // Images that are not 28x28.
  fs::create_directories(dir / "dims");
  write_gzip(dir / "dims/train-images-idx3-ubyte.gz", idx_bytes(0x803, {2, 27, 28}, std::vector<uint8_t>(2 * 27 * 28)));
  write_gzip(dir / "dims/train-labels-idx1-ubyte.gz", idx_bytes(0x801, {2}, {0, 1}));
  expect_fails(dir / "dims", dir / "dims/train-images-idx3-ubyte.gz", "27x28");
  // A truncated images file.
  write_fashion_split(dir / "cut", "train", 3);
  const auto whole = read_bytes(dir / "cut/train-images-idx3-ubyte.gz");
  write_plain(dir / "cut/train-images-idx3-ubyte.gz", std::vector<unsigned char>(whole.begin(), whole.begin() + whole.size() / 2));
  expect_fails(dir / "cut", dir / "cut/train-images-idx3-ubyte.gz", "");
  // Images and labels swapped.
  write_fashion_split(dir / "swap", "train", 3);
  fs::rename(dir / "swap/train-images-idx3-ubyte.gz", dir / "swap/tmp");
  fs::rename(dir / "swap/train-labels-idx1-ubyte.gz", dir / "swap/train-images-idx3-ubyte.gz");
  fs::rename(dir / "swap/tmp", dir / "swap/train-labels-idx1-ubyte.gz");
  expect_fails(dir / "swap", dir / "swap/train-images-idx3-ubyte.gz", "magic");
  // No package: the message says how to get it.
  fs::create_directories(dir / "empty");
  expect_fails(dir / "empty", dir / "empty/train-images-idx3-ubyte.gz", "install Debian's dataset-fashion-mnist");
  // A failed prepare keeps the shards a previous one wrote.
  write_fashion_split(dir / "ok", "train", 5);
  difftrain::prepare_fashion_mnist(dir / "keep", 2, "train", dir / "ok");
  error_of([&] { difftrain::prepare_fashion_mnist(dir / "keep", 2, "train", dir / "label"); });
  EXPECT_EQ(ShardedDataset::open(dir / "keep").size(), 5);
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_fashion_mnist(dir / "o", 1, "validation", dir / "ok"); }),
                  "validation");
}

TEST(PrepareFashionMnist, DebianPackageTestSplit) {
  if (!fs::exists(std::string(difftrain::kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed";
  TempDir dir;
  const auto paths = difftrain::prepare_fashion_mnist(dir / "out", 2, "test");
  ASSERT_EQ(paths.size(), 2u);
  const auto x = stored(dir / "out", "x");
  const auto y = stored(dir / "out", "y");
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{10000}));
  EXPECT_TRUE(torch::equal(torch::bincount(y), torch::full({10}, 1000, torch::kLong)));
  EXPECT_EQ(x.min().item<int64_t>(), 0);
  EXPECT_EQ(x.max().item<int64_t>(), 255);
  // Read with Python: d = gzip.open('.../t10k-images-idx3-ubyte.gz').read(), pixel (r, c)
  // of image i is d[16 + i*784 + r*28 + c]; l = gzip.open('.../t10k-labels-idx1-ubyte.gz')
  // .read(), label i is l[8 + i]. Image 1234 is in shard 0, image 7000 in shard 1.
  EXPECT_EQ(x[1234][0][14][14].item<int64_t>(), 171);
  EXPECT_EQ(x[1234].sum().item<int64_t>(), 63457);
  EXPECT_EQ(y[1234].item<int64_t>(), 4);  // Coat
  EXPECT_EQ(x[7000][0][14][14].item<int64_t>(), 162);
  EXPECT_EQ(x[7000].sum().item<int64_t>(), 73456);
  EXPECT_EQ(y[7000].item<int64_t>(), 8);  // Bag
  EXPECT_EQ(y[0].item<int64_t>(), 9);     // Ankle boot
  EXPECT_EQ(x[0][0][14][12].item<int64_t>(), 98);
  expect_class_names_in_every_shard(paths, difftrain::fashion_mnist_class_names());
}

// ---------------------------------------------------------------- image folders

// A w x h image with `channels` channels whose pixel (r, c) is colour(r, c) (per channel).
template <typename F>
void write_png(const std::string& path, int w, int h, int channels, F colour) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<unsigned char> pixels;
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      const std::vector<unsigned char> v = colour(r, c);
      for (int k = 0; k < channels; ++k) pixels.push_back(v[k]);
    }
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, channels, pixels.data(), w * channels), 0) << path;
}

using Px = std::vector<unsigned char>;
Px grey(int v) { return Px{static_cast<unsigned char>(v)}; }

std::vector<std::string> top_level(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Three classes created out of sorted order; file names whose byte order is not their
// numeric order; a 12x8 grey picture, left half black and right half white; a 6x10 grey
// one, black but for two white rows at the top and bottom (cut by the centre crop); a
// 5x5 red RGB one; a 3x3 grey one (resized up).
void write_folder(const std::string& root) {
  write_png(root + "/coat/1.png", 5, 5, 3, [](int, int) { return Px{255, 0, 0}; });
  write_png(root + "/boot/2_tall.png", 6, 10, 1, [](int r, int) { return grey(r < 2 || r >= 8 ? 255 : 0); });
  write_png(root + "/boot/10_half.png", 12, 8, 1, [](int, int c) { return grey(c < 6 ? 0 : 255); });
  write_png(root + "/dress/a.png", 3, 3, 1, [](int, int) { return Px{90}; });
}

TEST(PrepareImageFolder, ClassesByFolderNameCropResizeAndChannels) {
  TempDir dir;
  write_folder(dir / "images");
  const auto paths = difftrain::prepare_image_folder(dir / "images", dir / "out", 2, {4, 0});
  ASSERT_EQ(paths.size(), 2u);
  expect_class_names_in_every_shard(paths, {"boot", "coat", "dress"});
  const auto x = stored(dir / "out", "x");
  const auto y = stored(dir / "out", "y");
  // One colour image makes the whole set RGB.
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{4, 3, 4, 4}));
  ASSERT_EQ(x.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(y, torch::tensor({0, 0, 1, 2}, torch::kLong)));
  // "10_half.png" sorts before "2_tall.png". Its centre square is columns 2..9: four black
  // columns, then four white; area-averaged 2:1, two black columns then two white.
  const auto half = x[0];
  EXPECT_TRUE(torch::equal(half.slice(2, 0, 2), torch::zeros({3, 4, 2}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(half.slice(2, 2, 4), torch::full({3, 4, 2}, 255, torch::kUInt8)));
  // The tall picture's centre square is rows 2..7, all black.
  EXPECT_TRUE(torch::equal(x[1], torch::zeros({3, 4, 4}, torch::kUInt8)));
  // Red stays red; the uniform 3x3 stays uniform when resized up.
  EXPECT_TRUE(torch::equal(x[2][0], torch::full({4, 4}, 255, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(x[2].slice(0, 1, 3), torch::zeros({2, 4, 4}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(x[3], torch::full({3, 4, 4}, 90, torch::kUInt8)));

  // --channels 1: grey, red by stb's luma weights (77 r + 150 g + 29 b) / 256 = 76.
  difftrain::prepare_image_folder(dir / "images", dir / "grey", 1, {4, 1});
  const auto g = stored(dir / "grey", "x");
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{4, 1, 4, 4}));
  EXPECT_TRUE(torch::equal(g[0][0], x[0][0]));
  EXPECT_TRUE(torch::equal(g[2], torch::full({1, 4, 4}, 76, torch::kUInt8)));

  // Only grey images: grey by default. Size 8 keeps the 12x8 picture's centre as it is.
  fs::remove_all(dir / "images/coat");
  difftrain::prepare_image_folder(dir / "images", dir / "auto", 1, {8, 0});
  const auto a = stored(dir / "auto", "x");
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{3, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(a[0][0].slice(1, 0, 4), torch::zeros({8, 4}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(a[0][0].slice(1, 4, 8), torch::full({8, 4}, 255, torch::kUInt8)));
  expect_class_names_in_every_shard(shard_paths(dir / "auto"), {"boot", "dress"});
  EXPECT_TRUE(torch::equal(stored(dir / "auto", "y"), torch::tensor({0, 0, 1}, torch::kLong)));
}

TEST(PrepareImageFolder, ClassAndFileOrderIsByteOrderOfNamesWhateverTheDirectoryOrder) {
  // Twelve classes of twelve 1x1 pictures, created in a scrambled order, so that neither
  // the creation order nor a file system's hash order is likely to be the sorted one.
  // Byte order: "B" < "a", "10" < "9". Picture (class k, file j) in sorted order has
  // the value 12 k + j.
  const std::vector<std::string> classes{"10", "9", "B", "a", "ab", "b", "c0", "c1", "d", "e", "x", "y"};
  const std::vector<std::string> files{"0.png",  "1.png",  "10.png", "11.png", "2.png", "3.png",
                                       "4.png",  "5.png",  "6.png",  "7.png",  "8.png", "9.png"};
  ASSERT_TRUE(std::is_sorted(classes.begin(), classes.end()));
  ASSERT_TRUE(std::is_sorted(files.begin(), files.end()));
  TempDir dir;
  std::vector<int> scramble{7, 2, 11, 0, 5, 9, 3, 10, 1, 6, 8, 4};
  for (int k : scramble)
    for (int j : scramble)
      write_png(dir / ("images/" + classes[k] + "/" + files[j]), 1, 1, 1, [&](int, int) { return grey(12 * k + j); });
  difftrain::prepare_image_folder(dir / "images", dir / "out", 3, {1, 0});
  const auto x = stored(dir / "out", "x");
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{144, 1, 1, 1}));
  EXPECT_TRUE(torch::equal(x.flatten().to(torch::kLong), torch::arange(144, torch::kLong)));
  EXPECT_TRUE(torch::equal(stored(dir / "out", "y"), torch::arange(144, torch::kLong).div(12, "floor")));
  expect_class_names_in_every_shard(shard_paths(dir / "out"), classes);
}

TEST(PrepareImageFolder, CorruptImageIsAnErrorNamingItAndLeavesNoFiles) {
  TempDir dir;
  write_folder(dir / "images");
  // Random bytes named .png: refused before anything is decoded.
  std::mt19937 rng(3);
  std::vector<unsigned char> noise(300);
  for (auto& b : noise) b = static_cast<unsigned char>(rng());
  write_plain(dir / "images/dress/b.png", noise);
  auto message = error_of([&] { difftrain::prepare_image_folder(dir / "images", dir / "out", 2, {4, 0}); });
  EXPECT_MENTIONS(message, dir / "images/dress/b.png");
  EXPECT_MENTIONS(message, "cannot decode image");
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_EQ(top_level(dir.path()), std::vector<std::string>{"images"});  // no output, no scratch directory

  // A PNG whose header is whole but whose pixels are cut off fails only when decoded, after
  // the first shard was written: that shard goes too, and earlier shards of `out` stay.
  fs::remove(dir / "images/dress/b.png");
  difftrain::prepare_image_folder(dir / "images", dir / "out", 2, {4, 0});
  const auto before = stored(dir / "out", "x");
  write_png(dir / "images/dress/b.png", 40, 40, 3, [](int r, int c) {
    return Px{static_cast<unsigned char>(r * 6), static_cast<unsigned char>(c * 6), 9};
  });
  const auto big = read_bytes(dir / "images/dress/b.png");
  write_plain(dir / "images/dress/b.png", std::vector<unsigned char>(big.begin(), big.begin() + big.size() / 2));
  message = error_of([&] { difftrain::prepare_image_folder(dir / "images", dir / "out", 2, {4, 0}); });
  EXPECT_MENTIONS(message, dir / "images/dress/b.png");
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_TRUE(torch::equal(stored(dir / "out", "x"), before));
  EXPECT_EQ(everything_under(dir / "out"), (std::vector<std::string>{"shard-00000.h5", "shard-00001.h5"}));
  EXPECT_EQ(top_level(dir.path()), (std::vector<std::string>{"images", "out"}));  // no scratch directory left
}

// An output directory that is the input tree, or inside it (directly, or through a symbolic
// link), is refused before anything is written: the shards would become part of the tree.
TEST(PrepareFromATree, OutputInsideTheInputIsRefusedAndWritesNothing) {
  TempDir dir;
  write_folder(dir / "images");
  fs::create_directory_symlink(dir / "images/coat", dir / "link_into_images");
  write_fashion_split(dir / "fm", "train", 3);
  const auto images_before = everything_under(dir / "images");
  const auto fm_before = everything_under(dir / "fm");
  for (const std::string& out : std::vector<std::string>{dir / "images", dir / "images/boot", dir / "images/new/sub",
                                                        dir / "link_into_images", dir / "images/../images/coat"}) {
    SCOPED_TRACE(out);
    const auto message = error_of([&] { difftrain::prepare_image_folder(dir / "images", out, 2, {4, 0}); });
    EXPECT_MENTIONS(message, "prepare image-folder: --out " + out);
    EXPECT_MENTIONS(message, "the input " + (dir / "images"));
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_EQ(everything_under(dir / "images"), images_before);
  }
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_fashion_mnist(dir / "fm/out", 2, "train", dir / "fm"); }),
                  "prepare fashion-mnist: --out " + (dir / "fm/out") + " lies inside the input " + (dir / "fm"));
  EXPECT_EQ(everything_under(dir / "fm"), fm_before);
  // reshard reads every shard of a directory it is given.
  difftrain::prepare_image_folder(dir / "images", dir / "shards", 2, {4, 0});
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({dir / "shards"}, dir / "shards/again", 2); }),
                  "prepare reshard: --out " + (dir / "shards/again") + " lies inside the input " + (dir / "shards"));
  EXPECT_FALSE(fs::exists(dir / "shards/again"));
  // Beside the input is fine.
  EXPECT_EQ(difftrain::prepare_image_folder(dir / "images", dir / "images-shards", 1, {4, 0}).size(), 1u);
}

TEST(PrepareImageFolder, BadLayoutsAreErrorsNamingThePath) {
  TempDir dir;
  auto fails = [&](const std::string& root, const std::string& names) {
    SCOPED_TRACE(root);
    const auto message = error_of([&] { difftrain::prepare_image_folder(root, dir / "out", 1, {4, 0}); });
    EXPECT_MENTIONS(message, names);
    EXPECT_FALSE(fs::exists(dir / "out"));
  };
  fs::create_directories(dir / "empty");
  fails(dir / "empty", dir / "empty");
  fails(dir / "missing", dir / "missing");
  write_png(dir / "noimages/a/x.png", 2, 2, 1, [](int, int) { return Px{1}; });
  fs::create_directories(dir / "noimages/b");
  fails(dir / "noimages", dir / "noimages/b");
  write_png(dir / "toplevel/a/x.png", 2, 2, 1, [](int, int) { return Px{1}; });
  write_png(dir / "toplevel/stray.png", 2, 2, 1, [](int, int) { return Px{1}; });
  fails(dir / "toplevel", dir / "toplevel/stray.png");
  write_png(dir / "text/a/x.png", 2, 2, 1, [](int, int) { return Px{1}; });
  std::ofstream(dir / "text/a/notes.txt") << "not an image";
  fails(dir / "text", dir / "text/a/notes.txt");
  write_png(dir / "ok/a/x.png", 2, 2, 1, [](int, int) { return Px{1}; });
  std::ofstream(dir / "ok/a/.hidden") << "metadata";
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_image_folder(dir / "ok", dir / "o", 1, {0, 0}); }), "--size");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_image_folder(dir / "ok", dir / "o", 1, {4, 2}); }), "--channels");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_image_folder(dir / "ok", dir / "o", 2, {4, 0}); }), "--shards 2");
  // Names starting with '.' are skipped: this folder converts.
  difftrain::prepare_image_folder(dir / "ok", dir / "o", 1, {4, 0});
  EXPECT_EQ(ShardedDataset::open(dir / "o").size(), 1);
}

// A PNG whose header declares more pixels than can be decoded is refused as too large,
// with its size, not as an "unknown image type".
TEST(PrepareImageFolder, AnImageTooLargeToDecodeSaysItsSize) {
  TempDir dir;
  write_png(dir / "images/a/small.png", 2, 2, 1, [](int, int) { return Px{1}; });
  std::vector<unsigned char> header{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t side : {100000u, 100000u})
    for (int shift : {24, 16, 8, 0}) header.push_back(static_cast<unsigned char>(side >> shift));
  for (unsigned char b : {8, 0, 0, 0, 0, 0, 0, 0, 0}) header.push_back(b);  // depth 8, grey; CRC
  write_plain(dir / "images/a/huge.png", header);
  const auto message = error_of([&] { difftrain::prepare_image_folder(dir / "images", dir / "out", 1, {4, 0}); });
  EXPECT_MENTIONS(message, (dir / "images/a/huge.png") + ": cannot decode image: the image is 100000x100000 pixels with 1 "
                                                          "channel, too large to decode (at most 1073741824 bytes");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// ---------------------------------------------------------------- class names on reshard

TEST(PrepareReshard, ClassNamesTravelWithTheLabels) {
  TempDir dir;
  const auto x = torch::arange(12, torch::kFloat32).reshape({6, 2});
  const auto y = torch::tensor({0, 1, 1, 0, 1, 0}, torch::kLong);
  difftrain::write_shards(dir / "in", 2, x, y, "x", {"cat", "dög"});
  const auto paths = difftrain::prepare_reshard({dir / "in"}, dir / "out", 3);
  expect_class_names_in_every_shard(paths, {"cat", "dög"});
  EXPECT_TRUE(torch::equal(stored(dir / "out", "y"), y));

  // Inputs that name their classes differently are an error naming both files.
  difftrain::write_shards(dir / "other", 1, x, y, "x", {"dog", "cat"});
  const auto message = error_of([&] {
    difftrain::prepare_reshard({dir / "in/shard-00000.h5", dir / "other/shard-00000.h5"}, dir / "mixed", 1);
  });
  EXPECT_MENTIONS(message, dir / "other/shard-00000.h5");
  EXPECT_MENTIONS(message, dir / "in/shard-00000.h5");
  EXPECT_EQ(difftrain::read_class_names({dir / "in/shard-00000.h5", dir / "in/shard-00001.h5"}),
            (std::vector<std::string>{"cat", "dög"}));
  // Without labels there are no class names to keep.
  difftrain::write_shards(dir / "unlabelled", 1, x);
  EXPECT_FALSE(difftrain::read_class_names(shard_paths(dir / "unlabelled")).has_value());
}

}  // namespace
