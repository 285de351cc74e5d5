// The sharded HDF5 reader, the rank partition and the batch loader: every example is
// read exactly where the index says, every rank sees its share once per epoch, and every
// bad input is one difftrain::Error naming the file at fault.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "difftrain/data/batch_loader.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::BatchLoader;
using difftrain::RankShare;
using difftrain::ShardedDataset;
using difftrain::rank_share;
using difftrain::test::TempDir;
using difftrain::test::error_of;

// Global row i holds i + 1000 * j in column j, so any misplaced or mis-scaled row shows,
// and column 0 of a batch tells which rows it holds. Exact in float32 for these sizes.
torch::Tensor indexed_rows(int64_t first, int64_t n, int64_t dim = 3) {
  auto i = torch::arange(first, first + n, torch::kFloat32).unsqueeze(1);
  auto j = torch::arange(dim, torch::kFloat32).unsqueeze(0) * 1000;
  return (i + j).contiguous();
}

// One file per size, named so that name order is shard order; returns all rows.
torch::Tensor write_indexed_shards(const std::string& dir, const std::vector<int64_t>& sizes, int64_t dim = 3,
                                   const std::string& stem = "shard") {
  std::vector<torch::Tensor> parts;
  int64_t first = 0;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    parts.push_back(indexed_rows(first, sizes[k], dim));
    first += sizes[k];
    difftrain::h5::write_datasets(fmt::format("{}/{}-{:03d}.h5", dir, stem, k), {{"x", parts.back()}});
  }
  return torch::cat(parts);
}

std::vector<int64_t> row_ids(const torch::Tensor& batch) {
  auto ids = batch.select(1, 0).to(torch::kLong).contiguous();
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v(end - begin);
  std::iota(v.begin(), v.end(), begin);
  return v;
}

torch::Tensor select_rows(const torch::Tensor& all, const std::vector<int64_t>& indices) {
  return all.index_select(0, torch::tensor(indices, torch::kLong));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// ---------------------------------------------------------------- ShardedDataset

TEST(ShardedDataset, UnequalShardsReadAsOneIndexSpace) {
  TempDir dir;
  const auto all = write_indexed_shards(dir.path(), {5, 1, 7});
  auto ds = ShardedDataset::open(dir.path());
  ASSERT_EQ(ds.size(), 13);
  EXPECT_EQ(ds.sample_shape(), std::vector<int64_t>{3});
  EXPECT_EQ(ds.stored_dtype(), torch::kFloat32);
  EXPECT_EQ(ds.bytes_per_sample(), 12);
  ASSERT_EQ(ds.shards().size(), 3u);
  EXPECT_EQ(ds.shards()[0].rows, 5);
  EXPECT_EQ(ds.shards()[1].rows, 1);
  EXPECT_EQ(ds.shards()[2].rows, 7);
  EXPECT_EQ(ds.shards()[0].first, 0);
  EXPECT_EQ(ds.shards()[1].first, 5);
  EXPECT_EQ(ds.shards()[2].first, 6);
  EXPECT_EQ(ds.shards()[1].path, dir / "shard-001.h5");

  const std::vector<std::vector<int64_t>> cases = {
      range(0, 13),                            // everything, in order
      {12, 0, 5, 6, 4, 11, 1},                 // unsorted, across every boundary
      {5, 5, 5},                               // the one-row shard, repeated
      {4, 5, 6, 4, 6, 12, 12, 0, 0},           // repeats across boundaries
      {12},                                    // last row alone
      {6, 7, 8, 9, 10, 11, 12, 0, 1, 2, 3, 4}  // whole shards, out of shard order
  };
  for (const auto& indices : cases) {
    const auto got = ds.read(indices);
    ASSERT_EQ(got.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(got, select_rows(all, indices))) << "indices " << fmt::format("{}", fmt::join(indices, ","));
  }

  // Pseudo-random index lists with repeats, from a fixed LCG so the test is reproducible.
  uint64_t state = 1234;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> indices(1 + trial * 3);
    for (auto& i : indices) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      i = static_cast<int64_t>((state >> 33) % 13);
    }
    EXPECT_TRUE(torch::equal(ds.read(indices), select_rows(all, indices)));
  }
  EXPECT_TRUE(torch::equal(ds.read_stored(3, 5), all.slice(0, 3, 8)));
}

TEST(ShardedDataset, MultiDimensionalSamplesKeepTheirShape) {
  TempDir dir;
  auto a = torch::arange(2 * 2 * 3 * 4, torch::kFloat32).reshape({2, 2, 3, 4});
  auto b = torch::arange(100, 100 + 3 * 2 * 3 * 4, torch::kFloat32).reshape({3, 2, 3, 4});
  difftrain::h5::write_datasets(dir / "a.h5", {{"x", a}});
  difftrain::h5::write_datasets(dir / "b.h5", {{"x", b}});
  auto ds = ShardedDataset::open(dir.path());
  EXPECT_EQ(ds.sample_shape(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(ds.bytes_per_sample(), 2 * 3 * 4 * 4);
  const auto all = torch::cat({a, b});
  const std::vector<int64_t> idx{4, 0, 2, 2, 1};
  EXPECT_TRUE(torch::equal(ds.read(idx), select_rows(all, idx)));
}

TEST(ShardedDataset, Uint8IsScaledToMinusOneOne) {
  TempDir dir;
  std::vector<uint8_t> values(256);
  std::iota(values.begin(), values.end(), 0);
  auto x = torch::tensor(std::vector<int64_t>(values.begin(), values.end())).to(torch::kUInt8).reshape({64, 4});
  difftrain::h5::write_datasets(dir / "u8a.h5", {{"x", x.slice(0, 0, 10)}});
  difftrain::h5::write_datasets(dir / "u8b.h5", {{"x", x.slice(0, 10, 64)}});
  auto ds = ShardedDataset::open(dir.path());
  EXPECT_EQ(ds.stored_dtype(), torch::kUInt8);
  EXPECT_EQ(ds.bytes_per_sample(), 4);
  const auto idx = range(0, 64);
  const auto got = ds.read(idx);
  ASSERT_EQ(got.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(got, x.to(torch::kFloat32) / 127.5 - 1, 0, 1e-6));
  EXPECT_EQ(got[0][0].item<float>(), -1.0f);   // 0
  EXPECT_EQ(got[63][3].item<float>(), 1.0f);   // 255
  EXPECT_NEAR(got[31][3].item<float>(), 127 / 127.5 - 1, 1e-7);
  EXPECT_NEAR(got[32][0].item<float>(), 128 / 127.5 - 1, 1e-7);
  EXPECT_GE(got.min().item<float>(), -1.0f);
  EXPECT_LE(got.max().item<float>(), 1.0f);
  // As stored, unscaled.
  const auto stored = ds.read_stored(8, 4);
  EXPECT_EQ(stored.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(stored, x.slice(0, 8, 12)));
}

TEST(ShardedDataset, Int64LabelsStayInt64) {
  TempDir dir;
  auto y = torch::arange(10, torch::kLong) * 7 - 20;
  difftrain::h5::write_datasets(dir / "l.h5", {{"x", indexed_rows(0, 10)}, {"y", y}});
  auto ds = *ShardedDataset::open(dir / "l.h5", "x").labels();
  EXPECT_EQ(ds.stored_dtype(), torch::kInt64);
  EXPECT_TRUE(ds.sample_shape().empty());
  const auto got = ds.read({9, 0, 3});
  EXPECT_EQ(got.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(got, select_rows(y, {9, 0, 3})));
  // Labels are not examples: opened as training data, they are refused by their type.
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(dir / "l.h5", "y"); }), "holds int64; examples are float32 or uint8");
}

// A file with x (float32 [n, 2]) and y of the given HDF5 type and dims, written from doubles
// (HDF5 converts them to the stored type).
void write_labels_as(const std::string& path, hid_t type, const std::vector<hsize_t>& dims, const std::vector<double>& y) {
  difftrain::h5::write_datasets(path, {{"x", indexed_rows(0, static_cast<int64_t>(dims[0]))}});
  difftrain::h5::silence_errors();
  difftrain::h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  difftrain::h5::Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  difftrain::h5::Handle ds(H5Dcreate2(file.get(), "y", type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                           H5Dclose);
  ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, y.data()), 0);
}

TEST(ShardedDataset, LabelsOfAnyIntegerTypeReadAsInt64AndFloatLabelsOnlyWhenWhole) {
  TempDir dir;
  const std::vector<double> classes{3, 0, 2, 1};
  const auto expected = torch::tensor({3, 0, 2, 1}, torch::kLong);
  struct Case {
    const char* name;
    hid_t type;
  };
  for (const auto& [name, type] : std::vector<Case>{{"uint8", H5T_STD_U8LE},
                                                   {"int16", H5T_STD_I16LE},
                                                   {"uint32", H5T_STD_U32LE},
                                                   {"int32", H5T_STD_I32BE},
                                                   {"float32", H5T_IEEE_F32LE},
                                                   {"float64", H5T_IEEE_F64LE}}) {
    const std::string path = dir / (std::string(name) + ".h5");
    write_labels_as(path, type, {4}, classes);
    auto y = ShardedDataset::open(path, "x").labels();
    ASSERT_TRUE(y) << name;
    const auto got = y->read({0, 1, 2, 3});
    EXPECT_EQ(got.scalar_type(), torch::kLong) << name;
    EXPECT_TRUE(torch::equal(got, expected)) << name << ": " << got;  // uint8 is not scaled like pixels
    EXPECT_TRUE(torch::equal(y->as_read(y->read_stored(0, 4)), expected)) << name;
  }
  // A float label that is no class id is refused, naming the file, y, its type, row and value.
  const std::string half = dir / "half.h5", big = dir / "big.h5", nan = dir / "nan.h5";
  write_labels_as(half, H5T_IEEE_F32LE, {4}, {0, 1, 4.5, 2});
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(half, "x").labels(); }),
                  half + ": dataset 'y' (float32) row 2 holds 4.5, not a class id");
  write_labels_as(big, H5T_IEEE_F64LE, {4}, {0, 1e30, 2, 3});
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(big, "x").labels(); }), "row 1 holds 1e+30, not a class id");
  write_labels_as(nan, H5T_IEEE_F64LE, {4}, {0, 1, 2, std::nan("")});
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(nan, "x").labels(); }), "row 3 holds nan");
  // One label per example: [n, 1] is refused by its shape, with the fix.
  const std::string column = dir / "column.h5";
  write_labels_as(column, H5T_STD_I64LE, {4, 1}, classes);
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(column, "x").labels(); }),
                  column + ": dataset 'y' (int64) has shape [4, 1]; labels are one class id per example, shape [n] (store "
                           "y.reshape(-1))");
}

TEST(ShardedDataset, LabelsBesideTheExamplesOpenPerFile) {
  TempDir dir;
  const std::string a = dir / "a.h5", b = dir / "b.h5";
  const auto ya = torch::arange(4, torch::kLong), yb = torch::arange(10, 13, torch::kLong);
  difftrain::h5::write_datasets(a, {{"x", indexed_rows(0, 4)}, {"y", ya}});
  difftrain::h5::write_datasets(b, {{"x", indexed_rows(4, 3)}, {"y", yb}});
  auto labels = ShardedDataset::open(a + "," + b).labels();
  ASSERT_TRUE(labels.has_value());
  ASSERT_EQ(labels->shards().size(), 2u);
  EXPECT_EQ(labels->shards()[1].path, b);
  EXPECT_TRUE(torch::equal(labels->read_stored(0, 7), torch::cat({ya, yb})));
  // A file without labels: no labels at all, rather than labels for only some examples.
  const std::string bare = dir / "bare.h5";
  difftrain::h5::write_datasets(bare, {{"x", indexed_rows(7, 2)}});
  EXPECT_FALSE(ShardedDataset::open(a + "," + bare).labels().has_value());
}

TEST(ShardedDataset, LabelRowsThatDifferFromExampleRowsNameTheFile) {
  TempDir dir;
  // 4 + 3 examples and 5 + 2 labels: equal totals, yet every label of b.h5 and the last
  // of a.h5 would pair with the wrong example.
  const std::string a = dir / "a.h5", b = dir / "b.h5";
  difftrain::h5::write_datasets(a, {{"x", indexed_rows(0, 4)}, {"y", torch::arange(5, torch::kLong)}});
  difftrain::h5::write_datasets(b, {{"x", indexed_rows(4, 3)}, {"y", torch::arange(2, torch::kLong)}});
  EXPECT_EQ(error_of([&] { ShardedDataset::open(b + "," + a).labels(); }),
            b + ": dataset 'y' has 2 rows but dataset 'x' has 3; every example needs one label");
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(a + "," + b).labels(); }),
                  a + ": dataset 'y' has 5 rows but dataset 'x' has 4");
  // prepare reshard carries labels along through the same check.
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({b, a}, dir / "out", 2); }), b + ": dataset 'y' has 2 rows");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(ShardedDataset, SymbolicLinkLoopIsNotAMissingFile) {
  TempDir dir;
  fs::create_symlink(dir / "b.h5", dir / "a.h5");
  fs::create_symlink(dir / "a.h5", dir / "b.h5");
  EXPECT_EQ(error_of([&] { ShardedDataset::open(dir / "a.h5"); }), dir / "a.h5" + ": symbolic link loop");
  EXPECT_EQ(error_of([&] { difftrain::h5::open_file(dir / "b.h5"); }), dir / "b.h5" + ": symbolic link loop");
  EXPECT_EQ(error_of([&] { ShardedDataset::open(dir / "c.h5"); }), dir / "c.h5" + ": no such file");
}

TEST(ShardedDataset, SpecAsDirectoryGlobFileOrCommaList) {
  TempDir dir;
  // Written out of name order, so only sorting by name gives a, b, c.
  const auto c = indexed_rows(100, 7), a = indexed_rows(0, 5), b = indexed_rows(50, 1);
  difftrain::h5::write_datasets(dir / "c.h5", {{"x", c}});
  difftrain::h5::write_datasets(dir / "a.h5", {{"x", a}});
  difftrain::h5::write_datasets(dir / "b.hdf5", {{"x", b}});
  write_text(dir / "notes.txt", "not a shard");

  auto read_all = [](const std::string& spec) {
    auto ds = ShardedDataset::open(spec);
    return ds.read(range(0, ds.size()));
  };
  EXPECT_TRUE(torch::equal(read_all(dir.path()), torch::cat({a, b, c})));
  EXPECT_TRUE(torch::equal(read_all(dir.path() + "/"), torch::cat({a, b, c})));
  EXPECT_TRUE(torch::equal(read_all(dir / "*.h5"), torch::cat({a, c})));
  EXPECT_TRUE(torch::equal(read_all(dir / "[bc].*"), torch::cat({b, c})));
  EXPECT_TRUE(torch::equal(read_all(dir / "c.h5"), c));
  EXPECT_TRUE(torch::equal(read_all(dir / "b.hdf5"), b));
  // A comma list keeps the order given, and may mix the kinds.
  EXPECT_TRUE(torch::equal(read_all((dir / "c.h5") + "," + (dir / "a.h5")), torch::cat({c, a})));
  EXPECT_TRUE(torch::equal(read_all((dir / "b.hdf5") + "," + dir.path()), torch::cat({b, a, b, c})));
  EXPECT_TRUE(torch::equal(read_all((dir / "c.h5") + ",," + (dir / "a*")), torch::cat({c, a})));

  const auto files = difftrain::expand_shard_spec(dir.path());
  EXPECT_EQ(files, (std::vector<std::string>{dir / "a.h5", dir / "b.hdf5", dir / "c.h5"}));
}

TEST(ShardedDataset, SpecsNamingNoFilesAreErrors) {
  TempDir dir;
  fs::create_directory(dir / "empty");
  write_text(dir / "empty/readme.txt", "x");
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(dir / "empty"); }), dir / "empty");
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(dir / "*.h5"); }), dir / "*.h5");
  error_of([&] { ShardedDataset::open(""); });
  error_of([&] { ShardedDataset::open(","); });
}

TEST(ShardedDataset, BadFilesAreErrorsNamingTheFile) {
  TempDir dir;
  difftrain::h5::write_datasets(dir / "good.h5", {{"x", indexed_rows(0, 4)}});

  const std::string missing = dir / "missing.h5";
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(missing); }), missing);
  // A missing file in a list is named too, not just the list.
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open((dir / "good.h5") + "," + missing); }), missing);

  const std::string empty = dir / "empty.h5";
  write_text(empty, "");
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(empty); }), empty);

  const std::string text = dir / "text.h5";
  write_text(text, "this is a text file, not HDF5\n");
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(text); }), text);
  // Found through a directory, the bad file is still named.
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(dir.path()); }), "empty.h5");

  const std::string truncated = dir / "truncated.h5";
  difftrain::h5::write_datasets(truncated, {{"x", indexed_rows(0, 4000)}});
  fs::resize_file(truncated, fs::file_size(truncated) / 2);
  EXPECT_MENTIONS(error_of([&] {
                    auto ds = ShardedDataset::open(truncated);
                    ds.read(range(0, ds.size()));
                  }),
                  truncated);

  const std::string good = dir / "good.h5";
  const auto no_dataset = error_of([&] { ShardedDataset::open(good, "images"); });
  EXPECT_MENTIONS(no_dataset, good);
  EXPECT_MENTIONS(no_dataset, "images");
}

TEST(ShardedDataset, ShardsMustAgreeOnShapeAndDtype) {
  TempDir dir;
  const std::string a = dir / "a.h5", b = dir / "b.h5", c = dir / "c.h5", d = dir / "d.h5";
  difftrain::h5::write_datasets(a, {{"x", indexed_rows(0, 5, 3)}});
  difftrain::h5::write_datasets(b, {{"x", indexed_rows(0, 5, 4)}});
  difftrain::h5::write_datasets(c, {{"x", torch::zeros({5, 3}, torch::kUInt8)}});
  difftrain::h5::write_datasets(d, {{"x", indexed_rows(0, 15).reshape({5, 3, 3})}});
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(a + "," + b); }), b);
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(a + "," + d); }), d);
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(a + "," + c); }), c);
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(c + "," + a); }), a);
}

TEST(ShardedDataset, UnsupportedStoredDtypeIsAnError) {
  // int64 is for labels; an int32 or float64 dataset cannot be read as is.
  TempDir dir;
  const std::string f = dir / "f64.h5";
  // write_datasets refuses float64, so write one through the C API.
  {
    difftrain::h5::silence_errors();
    difftrain::h5::Handle file(H5Fcreate(f.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    hsize_t dims[2] = {3, 2};
    difftrain::h5::Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
    difftrain::h5::Handle ds(
        H5Dcreate2(file.get(), "x", H5T_NATIVE_DOUBLE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    double data[6] = {1, 2, 3, 4, 5, 6};
    ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
  }
  EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(f); }), f);
}

TEST(ShardedDataset, NonFiniteRowsAreErrorsNamingFileAndRow) {
  TempDir dir;
  auto good = indexed_rows(0, 4);
  auto nan_rows = indexed_rows(4, 6);
  nan_rows[3][1] = std::numeric_limits<float>::quiet_NaN();
  auto inf_rows = indexed_rows(10, 3);
  inf_rows[0][2] = -std::numeric_limits<float>::infinity();
  const std::string g = dir / "a-good.h5", n = dir / "b-nan.h5", i = dir / "c-inf.h5";
  difftrain::h5::write_datasets(g, {{"x", good}});
  difftrain::h5::write_datasets(n, {{"x", nan_rows}});
  difftrain::h5::write_datasets(i, {{"x", inf_rows}});
  auto ds = ShardedDataset::open(dir.path());
  ASSERT_EQ(ds.size(), 13);

  // The bad rows are found only when read: the rest of the same files reads fine.
  EXPECT_TRUE(torch::equal(ds.read({0, 4, 5, 6, 8, 9, 11, 12}),
                           select_rows(torch::cat({good, nan_rows, inf_rows}), {0, 4, 5, 6, 8, 9, 11, 12})));

  const auto nan_error = error_of([&] { ds.read({1, 9, 7, 0}); });
  EXPECT_MENTIONS(nan_error, n);
  EXPECT_MENTIONS(nan_error, "row 3");
  const auto inf_error = error_of([&] { ds.read({12, 10}); });
  EXPECT_MENTIONS(inf_error, i);
  EXPECT_MENTIONS(inf_error, "row 0");
}

TEST(ShardedDataset, OutOfRangeIndexIsAnError) {
  TempDir dir;
  write_indexed_shards(dir.path(), {5, 1, 7});
  auto ds = ShardedDataset::open(dir.path());
  EXPECT_MENTIONS(error_of([&] { ds.read({0, 13}); }), "13");
  EXPECT_MENTIONS(error_of([&] { ds.read({-1, 2}); }), "-1");
  EXPECT_MENTIONS(error_of([&] { ds.read({100}); }), "100");
  // Still usable afterwards.
  EXPECT_TRUE(torch::equal(ds.read({12}), indexed_rows(12, 1)));
}

TEST(ShardedDataset, BytesReadCountsThePayloadRead) {
  TempDir dir;
  write_indexed_shards(dir.path(), {5, 1, 7}, 8);
  auto ds = ShardedDataset::open(dir.path());
  const int64_t row = 8 * 4;
  EXPECT_EQ(ds.bytes_per_sample(), row);
  EXPECT_EQ(ds.bytes_read(), 0);  // opening reads only metadata
  ds.read({0, 1, 2});
  EXPECT_EQ(ds.bytes_read(), 3 * row);
  ds.read({12, 5, 6});
  EXPECT_EQ(ds.bytes_read(), 6 * row);
  ds.read_stored(0, 13);
  EXPECT_EQ(ds.bytes_read(), 19 * row);
  // A repeated index is one row read from the file.
  ds.read({7, 7, 7, 7});
  EXPECT_EQ(ds.bytes_read(), 20 * row);
}

// ---------------------------------------------------------------- rank_share

TEST(Partition, SharesAreDisjointContiguousCoveringAndBalanced) {
  for (int64_t total : {1, 2, 3, 5, 7, 13, 64, 100, 101, 1000, 999983}) {
    for (int world : {1, 2, 3, 4, 5, 7, 8, 16}) {
      if (total < world) continue;
      int64_t expected_begin = 0, smallest = total, largest = 0;
      for (int r = 0; r < world; ++r) {
        const RankShare s = rank_share(total, r, world);
        EXPECT_EQ(s.begin, expected_begin) << total << " / " << world << " rank " << r;
        EXPECT_GE(s.size(), 1);
        EXPECT_EQ(s.size(), s.end - s.begin);
        smallest = std::min(smallest, s.size());
        largest = std::max(largest, s.size());
        expected_begin = s.end;
      }
      EXPECT_EQ(expected_begin, total) << total << " / " << world;
      EXPECT_LE(largest - smallest, 1) << total << " / " << world;
      EXPECT_TRUE(smallest == total / world) << total << " / " << world;
    }
  }
  EXPECT_EQ(rank_share(10, 0, 1).begin, 0);
  EXPECT_EQ(rank_share(10, 0, 1).end, 10);
}

TEST(Partition, FewerExamplesThanRanksIsAnError) {
  const auto message = error_of([] { rank_share(3, 0, 4); });
  EXPECT_MENTIONS(message, "3");
  EXPECT_MENTIONS(message, "4");
  error_of([] { rank_share(0, 0, 1); });
  error_of([] { rank_share(10, 2, 2); });
  error_of([] { rank_share(10, -1, 2); });
  error_of([] { rank_share(10, 0, 0); });
  EXPECT_EQ(rank_share(4, 3, 4).size(), 1);
}

// ---------------------------------------------------------------- BatchLoader

class BatchLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { all_ = write_indexed_shards(dir_.path(), {5, 1, 7, 10}); }
  ShardedDataset open() { return ShardedDataset::open(dir_.path()); }
  TempDir dir_;
  torch::Tensor all_;  // 23 rows
};

TEST_F(BatchLoaderTest, EveryIndexOfTheShareOncePerEpoch) {
  auto reference = open();
  for (int world : {1, 2, 3}) {
    for (int rank = 0; rank < world; ++rank) {
      const RankShare share = rank_share(23, rank, world);
      const int64_t n = share.size();
      for (int64_t batch : {int64_t{1}, int64_t{3}, int64_t{4}, n, n + 2}) {
        SCOPED_TRACE(fmt::format("world {} rank {} batch {}", world, rank, batch));
        BatchLoader loader(open(), share, batch, /*seed=*/5, rank);
        std::vector<int64_t> seen;
        const int64_t epochs = 4;
        while (static_cast<int64_t>(seen.size()) < epochs * n) {
          const int64_t position = loader.position();
          const auto expected_indices = loader.batch_indices(position);
          ASSERT_EQ(static_cast<int64_t>(expected_indices.size()), batch);
          const auto got = loader.next().x;
          ASSERT_EQ(got.sizes(), (std::vector<int64_t>{batch, 3}));
          ASSERT_TRUE(torch::equal(got, reference.read(expected_indices)));
          ASSERT_TRUE(torch::equal(got, select_rows(all_, expected_indices)));
          EXPECT_EQ(loader.position(), position + batch);
          seen.insert(seen.end(), expected_indices.begin(), expected_indices.end());
        }
        for (int64_t e = 0; e < epochs; ++e) {
          std::vector<int64_t> epoch(seen.begin() + e * n, seen.begin() + (e + 1) * n);
          std::sort(epoch.begin(), epoch.end());
          EXPECT_EQ(epoch, range(share.begin, share.end)) << "epoch " << e;
        }
      }
    }
  }
}

TEST_F(BatchLoaderTest, EpochsAreShuffledDifferently) {
  BatchLoader loader(open(), rank_share(23, 0, 1), 23, 0, 0);
  std::set<std::vector<int64_t>> orders;
  for (int64_t e = 0; e < 6; ++e) {
    const auto order = loader.batch_indices(e * 23);
    EXPECT_NE(order, range(0, 23)) << "epoch " << e << " is not shuffled";
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 6u);
}

TEST_F(BatchLoaderTest, RanksAndSeedsGiveDifferentOrdersAndTheSameOnesReproduce) {
  const RankShare share = rank_share(23, 0, 1);
  BatchLoader a(open(), share, 23, 0, 0), a2(open(), share, 23, 0, 0);
  BatchLoader rank1(open(), share, 23, 0, 1), seed1(open(), share, 23, 1, 0);
  for (int64_t e = 0; e < 3; ++e) {
    EXPECT_NE(a.batch_indices(e * 23), rank1.batch_indices(e * 23));
    EXPECT_NE(a.batch_indices(e * 23), seed1.batch_indices(e * 23));
    EXPECT_NE(rank1.batch_indices(e * 23), seed1.batch_indices(e * 23));
    EXPECT_EQ(a.batch_indices(e * 23), a2.batch_indices(e * 23));
  }
  // The same (seed, rank) gives the same batches, as data.
  BatchLoader b(open(), rank_share(23, 1, 2), 5, 77, 1), b2(open(), rank_share(23, 1, 2), 5, 77, 1);
  for (int i = 0; i < 7; ++i) EXPECT_TRUE(torch::equal(b.next().x, b2.next().x)) << "batch " << i;
}

TEST_F(BatchLoaderTest, StartingAtAPositionContinuesTheSameSequence) {
  const RankShare share = rank_share(23, 0, 1);
  const int64_t batch = 4;  // 23 is not a multiple: batch 5 straddles two epochs
  std::vector<torch::Tensor> from_zero;
  {
    BatchLoader loader(open(), share, batch, 9, 0);
    for (int i = 0; i < 16; ++i) from_zero.push_back(loader.next().x);
  }
  for (int64_t k : {1, 2, 5, 6, 11, 12}) {
    BatchLoader resumed(open(), share, batch, 9, 0, k * batch);
    EXPECT_EQ(resumed.position(), k * batch);
    for (int64_t i = k; i < k + 4; ++i)
      EXPECT_TRUE(torch::equal(resumed.next().x, from_zero[i])) << "resumed at batch " << k << ", batch " << i;
    EXPECT_EQ(resumed.position(), (k + 4) * batch);
  }
}

TEST_F(BatchLoaderTest, ReaderErrorsAreRethrownFromNext) {
  TempDir dir;
  auto rows = indexed_rows(0, 10);
  rows[6][0] = std::numeric_limits<float>::quiet_NaN();
  const std::string bad = dir / "bad.h5";
  difftrain::h5::write_datasets(bad, {{"x", rows}});

  {
    BatchLoader loader(ShardedDataset::open(bad), rank_share(10, 0, 1), 10, 0, 0);
    const auto message = error_of([&] { loader.next(); });
    EXPECT_MENTIONS(message, bad);
    EXPECT_MENTIONS(message, "row 6");
  }
  {
    // Batches before the bad row arrive; the error surfaces within the first epoch.
    BatchLoader loader(ShardedDataset::open(bad), rank_share(10, 0, 1), 2, 3, 0);
    int ok = 0;
    bool thrown = false;
    for (int i = 0; i < 5 && !thrown; ++i) {
      try {
        const auto indices = loader.batch_indices(loader.position());
        const auto got = loader.next().x;
        EXPECT_TRUE(torch::equal(got, select_rows(rows, indices)));
        ++ok;
      } catch (const difftrain::Error& e) {
        EXPECT_MENTIONS(e.what(), bad);
        thrown = true;
      }
    }
    EXPECT_TRUE(thrown);
    EXPECT_LT(ok, 5);
  }
}

// The two ways a loader reads: a share kept in memory (the default up to 1 GiB) and one read
// batch by batch (a larger share; here forced with a limit of 0 bytes). uint8 images with
// labels and flips, batches crossing epochs, a start position inside an epoch, two ranks.
TEST(BatchLoader, BatchesGatheredInMemoryEqualThoseReadBatchByBatch) {
  TempDir dir;
  const int64_t n = 41;
  const auto images = (torch::arange(n * 6, torch::kInt64) * 37 % 256).to(torch::kUInt8).reshape({n, 1, 2, 3});
  const auto labels = torch::arange(n, torch::kInt64) % 10;
  difftrain::h5::write_datasets(dir.path() + "/a.h5", {{"x", images.narrow(0, 0, 25)}, {"y", labels.narrow(0, 0, 25)}});
  difftrain::h5::write_datasets(dir.path() + "/b.h5", {{"x", images.narrow(0, 25, 16)}, {"y", labels.narrow(0, 25, 16)}});
  const int64_t batch = 3, prefetch = 2;
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE(fmt::format("rank {} of 2", rank));
    const auto share = rank_share(n, rank, 2);
    auto loader = [&](int64_t keep_in_memory_bytes) {
      auto ds = ShardedDataset::open(dir.path());
      difftrain::LoaderExtras extras{ds.labels(), /*hflip=*/true, keep_in_memory_bytes};
      return std::make_unique<BatchLoader>(std::move(ds), share, batch, /*seed=*/11, rank, /*start=*/5,
                                           std::move(extras), prefetch);
    };
    auto in_memory = loader(int64_t{1} << 30), streamed = loader(0);
    const int64_t row_bytes = 6;
    bool flipped = false;
    for (int k = 0; k < 3 * share.size() / batch; ++k) {  // three epochs
      const auto a = in_memory->next(), b = streamed->next();
      ASSERT_EQ(a.x.sizes(), (std::vector<int64_t>{batch, 1, 2, 3}));
      ASSERT_TRUE(torch::equal(a.x, b.x)) << "batch " << k;
      ASSERT_TRUE(torch::equal(a.y, b.y)) << "batch " << k;
      // Each row is its stored image or its mirror image, with its own label.
      for (int64_t i = 0; i < batch; ++i) {
        const int64_t row = a.y[i].item<int64_t>();
        std::vector<int64_t> candidates;
        for (int64_t r = row; r < n; r += 10) candidates.push_back(r);
        bool found = false;
        for (auto r : candidates) {
          const auto stored = images[r].to(torch::kFloat32) / 127.5 - 1;
          if (torch::allclose(a.x[i], stored)) found = true;
          if (torch::allclose(a.x[i], stored.flip({2}))) found = flipped = true;
        }
        ASSERT_TRUE(found) << "batch " << k << " row " << i;
      }
      if (k == 0) {
        // The whole share was read before the first batch; batch by batch, only what was asked.
        EXPECT_EQ(in_memory->bytes_read(), share.size() * row_bytes);
        EXPECT_LE(streamed->bytes_read(), (1 + prefetch) * batch * row_bytes);
      }
    }
    EXPECT_TRUE(flipped) << "no image was flipped: the test would not see the flips differ";
  }
}

TEST_F(BatchLoaderTest, BadArgumentsAreErrors) {
  error_of([&] { BatchLoader(open(), rank_share(23, 0, 1), 0, 0, 0); });
  error_of([&] { BatchLoader(open(), RankShare{3, 3}, 2, 0, 0); });
}

// ---------------------------------------------------------------- several ranks, one process

struct MultiRankCase {
  std::vector<int64_t> shard_sizes;
  int world;
};

// Test names (and so ctest's) show the case, not the struct's bytes.
void PrintTo(const MultiRankCase& c, std::ostream* os) {
  *os << "shards [" << fmt::format("{}", fmt::join(c.shard_sizes, ", ")) << "], " << c.world << " ranks";
}

class MultiRankData : public ::testing::TestWithParam<MultiRankCase> {};

TEST_P(MultiRankData, OneEpochOfAllRanksCoversTheDatasetOnceAndEachReadsItsShare) {
  const auto& param = GetParam();
  TempDir dir;
  const int64_t dim = 64;
  const auto all = write_indexed_shards(dir.path(), param.shard_sizes, dim);
  const int64_t total = all.size(0);
  const int64_t batch = 8, prefetch = 2;
  std::vector<int64_t> union_of_epochs;
  for (int rank = 0; rank < param.world; ++rank) {
    SCOPED_TRACE(fmt::format("rank {} of {}", rank, param.world));
    auto ds = ShardedDataset::open(dir.path());  // each rank opens its own
    const int64_t row_bytes = ds.bytes_per_sample();
    ASSERT_EQ(ds.size(), total);
    const RankShare share = rank_share(total, rank, param.world);
    const int64_t n = share.size();
    BatchLoader loader(std::move(ds), share, batch, 2024, rank, 0, {}, prefetch);
    std::vector<int64_t> seen;
    while (static_cast<int64_t>(seen.size()) < n) {
      const auto got = loader.next().x;
      const auto ids = row_ids(got);
      ASSERT_TRUE(torch::equal(got, select_rows(all, ids)));
      seen.insert(seen.end(), ids.begin(), ids.end());
    }
    union_of_epochs.insert(union_of_epochs.end(), seen.begin(), seen.begin() + n);

    // At least the share was read; at most the batches handed out plus those read ahead.
    const int64_t bytes = loader.bytes_read();
    const int64_t handed_out = (n + batch - 1) / batch;
    EXPECT_GE(bytes, n * row_bytes);
    EXPECT_LE(bytes, (handed_out + prefetch) * batch * row_bytes);
    const double fair = static_cast<double>(total) / param.world * row_bytes;
    EXPECT_NEAR(static_cast<double>(bytes), fair, static_cast<double>((prefetch + 1) * batch + 1) * row_bytes);
    EXPECT_LT(std::abs(bytes - fair) / fair, 0.08) << bytes << " bytes read, fair share " << fair;
  }
  std::sort(union_of_epochs.begin(), union_of_epochs.end());
  EXPECT_EQ(union_of_epochs, range(0, total));
}

TEST_P(MultiRankData, ReadingExactlyTheShareReadsTotalOverWorldBytes) {
  const auto& param = GetParam();
  TempDir dir;
  write_indexed_shards(dir.path(), param.shard_sizes, 16);
  int64_t sum = 0;
  for (int rank = 0; rank < param.world; ++rank) {
    auto ds = ShardedDataset::open(dir.path());
    const RankShare share = rank_share(ds.size(), rank, param.world);
    for (int64_t p = share.begin; p < share.end; p += 37)
      ds.read(range(p, std::min(p + 37, share.end)));
    EXPECT_EQ(ds.bytes_read(), share.size() * ds.bytes_per_sample());
    EXPECT_LE(std::abs(ds.bytes_read() - ds.size() * ds.bytes_per_sample() / param.world), ds.bytes_per_sample());
    sum += ds.bytes_read();
  }
  auto ds = ShardedDataset::open(dir.path());
  EXPECT_EQ(sum, ds.size() * ds.bytes_per_sample());
}

INSTANTIATE_TEST_SUITE_P(
    ShardsVersusRanks, MultiRankData,
    ::testing::Values(MultiRankCase{{900, 400}, 2},                                  // as many files as ranks
                      MultiRankCase{{900, 400}, 4},                                  // fewer files than ranks
                      MultiRankCase{{300, 100, 400, 100, 500, 900, 200, 600}, 2},   // more files than ranks
                      MultiRankCase{{300, 100, 400, 100, 500, 900, 200, 600}, 4},
                      MultiRankCase{{1301}, 4}),                                     // one file, odd size
    [](const ::testing::TestParamInfo<MultiRankCase>& info) {
      return fmt::format("{}files_{}ranks", info.param.shard_sizes.size(), info.param.world);
    });

}  // namespace
