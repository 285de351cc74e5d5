// `difftrain prepare`: the swissroll toy data equals the reference's points, resharding
// keeps every row, its order, its dtype and its labels, and files land atomically.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::ShardedDataset;
using difftrain::test::TempDir;
using difftrain::test::error_of;

std::string shard_name(int64_t k) { return fmt::format("shard-{:05d}.h5", k); }

// Every entry of `dir`, so a stray temporary file shows.
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> expected_listing(int64_t shards) {
  std::vector<std::string> names;
  for (int64_t k = 0; k < shards; ++k) names.push_back(shard_name(k));
  return names;
}

// One file's dataset exactly as stored.
torch::Tensor stored(const std::string& path, const std::string& name = "x") {
  // Labels open through the examples beside them, as every reader of labels does.
  if (name == "y") {
    auto labels = ShardedDataset::open(path, "x").labels();
    if (!labels) throw std::runtime_error(path + ": no labels");
    return labels->read_stored(0, labels->size());
  }
  auto ds = ShardedDataset::open(path, name);
  return ds.read_stored(0, ds.size());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---------------------------------------------------------------- swissroll

TEST(PrepareSwissroll, PointsAreTheReferenceSpiral) {
  const auto p = difftrain::swissroll_points();
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{100, 2}));
  ASSERT_EQ(p.scalar_type(), torch::kFloat32);
  // By hand: t = pi/2 + i/99 * 5 pi, point (t cos t, t sin t) / (5 pi).
  const double T = 5 * M_PI;
  for (int64_t i : {0, 1, 37, 50, 98, 99}) {
    const double t = M_PI / 2 + static_cast<double>(i) / 99.0 * T;
    EXPECT_NEAR(p[i][0].item<float>(), t * std::cos(t) / T, 2e-6) << "row " << i;
    EXPECT_NEAR(p[i][1].item<float>(), t * std::sin(t) / T, 2e-6) << "row " << i;
  }
  // The ends: t = pi/2 gives (0, 0.1); t = 5.5 pi gives (0, -1.1).
  EXPECT_NEAR(p[0][0].item<float>(), 0.0, 1e-6);
  EXPECT_NEAR(p[0][1].item<float>(), 0.1, 1e-6);
  EXPECT_NEAR(p[99][0].item<float>(), 0.0, 1e-5);
  EXPECT_NEAR(p[99][1].item<float>(), -1.1, 1e-6);
  // Radius t / (5 pi) grows linearly from 0.1 to 1.1.
  const auto radius = p.norm(2, 1);
  EXPECT_NEAR(radius[0].item<float>(), 0.1, 1e-6);
  EXPECT_NEAR(radius[99].item<float>(), 1.1, 1e-6);
  EXPECT_TRUE((radius.slice(0, 1) > radius.slice(0, 0, 99)).all().item<bool>());
}

TEST(PrepareSwissroll, CurveDistance) {
  const auto on_curve = difftrain::swissroll_curve_distance(difftrain::swissroll_points());
  ASSERT_EQ(on_curve.sizes(), (std::vector<int64_t>{100}));
  // The curve is a grid of 20001 t values, about 8.6e-4 apart at the outer end, so a point
  // on the curve is within half of that of a grid point.
  EXPECT_LT(on_curve.max().item<double>(), 4.5e-4);
  EXPECT_LT(on_curve.mean().item<double>(), 2.5e-4);

  // Known distances: the origin is 0.1 from the spiral's inner end; a point 0.05 off the
  // curve along its normal at t = 3 pi (where the curve is at (-0.6, 0)), on either side,
  // is 0.05 from it (the loops either side are 0.4 away).
  const double nx = -3 * M_PI / std::sqrt(9 * M_PI * M_PI + 1), ny = 1 / std::sqrt(9 * M_PI * M_PI + 1);
  const auto points = torch::tensor({0.0, 0.0, -0.6 + 0.05 * nx, 0.05 * ny, -0.6 - 0.05 * nx, -0.05 * ny,
                                     0.0, -1.4},
                                    torch::kFloat64)
                          .reshape({4, 2});
  const auto d = difftrain::swissroll_curve_distance(points);
  EXPECT_NEAR(d[0].item<double>(), 0.1, 1e-6);
  EXPECT_NEAR(d[1].item<double>(), 0.05, 1e-5);
  EXPECT_NEAR(d[2].item<double>(), 0.05, 1e-5);
  // Straight below the outer end (0, -1.1), which is the nearest point there.
  EXPECT_NEAR(d[3].item<double>(), 0.3, 1e-5);
}

TEST(PrepareSwissroll, WritesKNearEqualShardsOfTheReferencePoints) {
  const auto reference = difftrain::swissroll_points();
  for (int64_t k : {1, 2, 3, 7, 100}) {
    SCOPED_TRACE(fmt::format("{} shards", k));
    TempDir dir;
    const std::string out = dir / "data";  // created on demand
    const auto paths = difftrain::prepare_swissroll(out, k);
    ASSERT_EQ(static_cast<int64_t>(paths.size()), k);
    EXPECT_EQ(listing(out), expected_listing(k));
    std::vector<torch::Tensor> parts;
    int64_t smallest = 100, largest = 0;
    for (int64_t i = 0; i < k; ++i) {
      EXPECT_EQ(fs::path(paths[i]).filename().string(), shard_name(i));
      EXPECT_TRUE(fs::equivalent(paths[i], out + "/" + shard_name(i)));
      auto ds = ShardedDataset::open(paths[i], "x");
      EXPECT_EQ(ds.stored_dtype(), torch::kFloat32);
      EXPECT_EQ(ds.sample_shape(), std::vector<int64_t>{2});
      smallest = std::min(smallest, ds.size());
      largest = std::max(largest, ds.size());
      parts.push_back(ds.read_stored(0, ds.size()));
    }
    EXPECT_LE(largest - smallest, 1);
    const auto all = torch::cat(parts);
    ASSERT_EQ(all.size(0), 100);
    EXPECT_TRUE(torch::equal(all, reference));  // bitwise
    // And as one dataset through the directory.
    auto ds = ShardedDataset::open(out);
    EXPECT_TRUE(torch::equal(ds.read_stored(0, 100), reference));
  }
}

TEST(PrepareSwissroll, BadShardCountsAreErrors) {
  TempDir dir;
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_swissroll(dir / "a", 0); }), "0");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_swissroll(dir / "b", -2); }), "-2");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_swissroll(dir / "c", 101); }), "101");
  // Nothing half-written.
  for (const char* sub : {"a", "b", "c"})
    EXPECT_TRUE(!fs::exists(dir / sub) || fs::is_empty(dir / sub)) << sub;
}

// ---------------------------------------------------------------- reshard

TEST(PrepareReshard, OneFileIntoKShardsKeepsRowsOrderAndLabels) {
  TempDir dir;
  const auto x = torch::arange(50 * 3, torch::kFloat32).reshape({50, 3}) * 0.5 - 7;
  const auto y = torch::arange(50, torch::kLong) * 3 - 100;
  const std::string in = dir / "big.h5";
  difftrain::h5::write_datasets(in, {{"x", x}, {"y", y}});
  for (int64_t k : {1, 3, 4, 50}) {
    SCOPED_TRACE(fmt::format("{} shards", k));
    const std::string out = dir / fmt::format("out{}", k);
    const auto paths = difftrain::prepare_reshard({in}, out, k);
    ASSERT_EQ(static_cast<int64_t>(paths.size()), k);
    EXPECT_EQ(listing(out), expected_listing(k));
    std::vector<torch::Tensor> xs, ys;
    int64_t smallest = 50, largest = 0;
    for (const auto& p : paths) {
      auto ds = ShardedDataset::open(p, "x");
      EXPECT_EQ(ds.stored_dtype(), torch::kFloat32);
      smallest = std::min(smallest, ds.size());
      largest = std::max(largest, ds.size());
      xs.push_back(stored(p, "x"));
      ys.push_back(stored(p, "y"));
      EXPECT_EQ(ys.back().scalar_type(), torch::kInt64);
      EXPECT_EQ(ys.back().size(0), xs.back().size(0));
    }
    EXPECT_LE(largest - smallest, 1);
    EXPECT_TRUE(torch::equal(torch::cat(xs), x));
    EXPECT_TRUE(torch::equal(torch::cat(ys), y));
  }
}

TEST(PrepareReshard, Uint8StaysUint8) {
  TempDir dir;
  const auto x = (torch::arange(30 * 2 * 2, torch::kLong) * 37 % 256).to(torch::kUInt8).reshape({30, 2, 2});
  const std::string in = dir / "img.h5";
  difftrain::h5::write_datasets(in, {{"images", x}});
  const auto paths = difftrain::prepare_reshard({in}, dir / "out", 4, "images");
  ASSERT_EQ(paths.size(), 4u);
  std::vector<torch::Tensor> parts;
  for (const auto& p : paths) {
    auto ds = ShardedDataset::open(p, "images");
    EXPECT_EQ(ds.stored_dtype(), torch::kUInt8);
    EXPECT_EQ(ds.sample_shape(), (std::vector<int64_t>{2, 2}));
    parts.push_back(ds.read_stored(0, ds.size()));
    ASSERT_EQ(parts.back().scalar_type(), torch::kUInt8);
    // No labels in, no labels out; and no dataset under the default name.
    EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(p, "y"); }), p);
    EXPECT_MENTIONS(error_of([&] { ShardedDataset::open(p, "x"); }), p);
  }
  EXPECT_TRUE(torch::equal(torch::cat(parts), x));
}

TEST(PrepareReshard, SeveralFilesIntoKShards) {
  TempDir dir;
  std::vector<torch::Tensor> xs, ys;
  std::vector<std::string> inputs;
  int64_t first = 0;
  for (int64_t n : {5, 1, 7}) {
    xs.push_back(torch::arange(first * 4, (first + n) * 4, torch::kFloat32).reshape({n, 4}));
    ys.push_back(torch::arange(first, first + n, torch::kLong));
    first += n;
    inputs.push_back(dir / fmt::format("in-{}.h5", inputs.size()));
    difftrain::h5::write_datasets(inputs.back(), {{"x", xs.back()}, {"y", ys.back()}});
  }
  const auto x = torch::cat(xs), y = torch::cat(ys);
  for (int64_t k : {1, 2, 3, 5, 13}) {
    SCOPED_TRACE(fmt::format("{} shards", k));
    const std::string out = dir / fmt::format("out{}", k);
    const auto paths = difftrain::prepare_reshard(inputs, out, k);
    ASSERT_EQ(static_cast<int64_t>(paths.size()), k);
    EXPECT_EQ(listing(out), expected_listing(k));
    std::vector<torch::Tensor> got_x, got_y;
    for (const auto& p : paths) got_x.push_back(stored(p, "x")), got_y.push_back(stored(p, "y"));
    EXPECT_TRUE(torch::equal(torch::cat(got_x), x));
    EXPECT_TRUE(torch::equal(torch::cat(got_y), y));
  }
  // Inputs in another order come out in that order; a glob and a directory work as inputs.
  {
    const auto paths = difftrain::prepare_reshard({inputs[2], inputs[0]}, dir / "swapped", 2);
    EXPECT_TRUE(torch::equal(torch::cat({stored(paths[0]), stored(paths[1])}), torch::cat({xs[2], xs[0]})));
  }
  {
    const auto paths = difftrain::prepare_reshard({dir / "in-*.h5"}, dir / "globbed", 3);
    std::vector<torch::Tensor> got;
    for (const auto& p : paths) got.push_back(stored(p));
    EXPECT_TRUE(torch::equal(torch::cat(got), x));
  }
}

TEST(PrepareReshard, LabelsTravelOnlyWhenEveryInputHasThem) {
  TempDir dir;
  const auto a = torch::ones({4, 2}), b = torch::zeros({3, 2});
  difftrain::h5::write_datasets(dir / "a.h5", {{"x", a}, {"y", torch::arange(4, torch::kLong)}});
  difftrain::h5::write_datasets(dir / "b.h5", {{"x", b}});
  const auto paths = difftrain::prepare_reshard({dir / "a.h5", dir / "b.h5"}, dir / "out", 2);
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_TRUE(torch::equal(torch::cat({stored(paths[0]), stored(paths[1])}), torch::cat({a, b})));
  for (const auto& p : paths) error_of([&] { ShardedDataset::open(p, "y"); });
}

TEST(PrepareReshard, ErrorsNameTheProblem) {
  TempDir dir;
  const std::string in = dir / "in.h5";
  difftrain::h5::write_datasets(in, {{"x", torch::ones({6, 2})}});
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({in}, dir / "o1", 0); }), "0");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({in}, dir / "o2", 7); }), "7");
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({in}, dir / "o2", 7); }), "6");
  const std::string missing = dir / "missing.h5";
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({in, missing}, dir / "o3", 2); }), missing);
  error_of([&] { difftrain::prepare_reshard({}, dir / "o4", 2); });
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({in}, dir / "o5", 2, "images"); }), "images");
  // Nothing written by any failed call.
  for (const char* sub : {"o1", "o2", "o3", "o4", "o5"})
    EXPECT_TRUE(!fs::exists(dir / sub) || fs::is_empty(dir / sub)) << sub;
}

TEST(PrepareReshard, RefusesToWriteOverItsInputs) {
  TempDir dir;
  difftrain::prepare_swissroll(dir / "d", 2);
  const auto before = difftrain::ShardedDataset::open(dir / "d").read_stored(0, 100);
  EXPECT_MENTIONS(error_of([&] { difftrain::prepare_reshard({dir / "d"}, dir / "d", 4); }), "--out " + (dir / "d") + " is the input");
  // The inputs are intact.
  auto after = difftrain::ShardedDataset::open(dir / "d");
  EXPECT_EQ(after.shards().size(), 2u);
  EXPECT_TRUE(torch::equal(after.read_stored(0, 100), before));
}

TEST(PrepareSwissroll, FewerShardsReplaceMoreAndLeaveNoStaleOnes) {
  TempDir dir;
  difftrain::prepare_swissroll(dir / "d", 4);
  difftrain::prepare_swissroll(dir / "d", 2);
  auto d = difftrain::ShardedDataset::open(dir / "d");
  EXPECT_EQ(d.shards().size(), 2u);
  EXPECT_EQ(d.size(), 100);
  // Nothing else is left beside the output (no scratch directory).
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

// ---------------------------------------------------------------- atomic files

// One file through StagedFiles: `write` fills the temporary path it is given.
void write_through_staging(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  difftrain::StagedFiles file;
  file.stage(path, write);
  file.publish();
}

TEST(AtomicFile, AThrowingWriterLeavesThePreviousFileAndNoTemporary) {
  TempDir dir;
  const std::string path = dir / "target.txt";
  difftrain::write_file_atomically(path, std::string("old contents"));
  ASSERT_EQ(read_text(path), "old contents");
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"target.txt"});

  std::string tmp_seen;
  EXPECT_THROW(write_through_staging(path,
                                           [&](const std::string& tmp) {
                                             tmp_seen = tmp;
                                             std::ofstream(tmp) << "half of the new";
                                             throw std::runtime_error("disk on fire");
                                           }),
               std::runtime_error);
  EXPECT_EQ(read_text(path), "old contents");
  EXPECT_NE(tmp_seen, path);
  EXPECT_FALSE(fs::exists(tmp_seen));
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"target.txt"});

  // A difftrain::Error passes through unchanged too.
  const auto message = error_of([&] {
    write_through_staging(path, [&](const std::string& tmp) {
      std::ofstream(tmp) << "x";
      difftrain::fail("{}: refused", path);
    });
  });
  EXPECT_MENTIONS(message, "refused");
  EXPECT_EQ(read_text(path), "old contents");
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"target.txt"});
}

TEST(AtomicFile, ASuccessfulWriteReplacesTheFileFromATemporaryBesideIt) {
  TempDir dir;
  const std::string path = dir / "sub/dir/target.bin";  // parents created
  std::string tmp_seen;
  write_through_staging(path, [&](const std::string& tmp) {
    tmp_seen = tmp;
    EXPECT_FALSE(fs::exists(path));  // not visible until the rename
    std::ofstream(tmp, std::ios::binary) << "first";
  });
  EXPECT_EQ(read_text(path), "first");
  EXPECT_EQ(fs::path(tmp_seen).parent_path(), fs::path(path).parent_path());
  EXPECT_FALSE(fs::exists(tmp_seen));

  write_through_staging(path, [&](const std::string& tmp) {
    EXPECT_EQ(read_text(path), "first");  // the old file stays until the new one is whole
    std::ofstream(tmp, std::ios::binary) << "second";
  });
  EXPECT_EQ(read_text(path), "second");
  EXPECT_EQ(listing(dir / "sub/dir"), std::vector<std::string>{"target.bin"});

  const std::vector<char> bytes{'\0', '\1', '\xff', 'z'};
  difftrain::write_file_atomically(path, bytes);
  const auto text = read_text(path);
  EXPECT_EQ(std::vector<char>(text.begin(), text.end()), bytes);
}

TEST(AtomicFile, Hdf5WriteThatFailsLeavesNothing) {
  TempDir dir;
  const std::string path = dir / "f.h5";
  difftrain::h5::write_datasets(path, {{"x", torch::ones({3, 2})}});
  // float64 is not a dtype we write: the second dataset fails after the first was written.
  EXPECT_MENTIONS(error_of([&] {
                    difftrain::h5::write_datasets(path, {{"x", torch::zeros({5, 2})},
                                                         {"bad", torch::zeros({5, 2}, torch::kFloat64)}});
                  }),
                  "bad");
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"f.h5"});
  EXPECT_TRUE(torch::equal(stored(path), torch::ones({3, 2})));
}

}  // namespace
