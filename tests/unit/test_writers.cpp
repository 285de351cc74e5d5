// Every writer on a full disk: the failure is one Error naming the file, the previous file
// stays byte for byte, and no temporary or half line is left. The disk is a small tmpfs
// the tests mount and fill themselves (skipped where mounting is not allowed). Also the
// metrics file as JSON, and trimming it on resume.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/train/metrics.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::test::error_of;
using difftrain::test::TempDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

difftrain::LogRecord record_at(int64_t step) {
  difftrain::LogRecord r;
  r.step = step, r.total_steps = 1000, r.loss = 0.25, r.grad_norm = 1.5, r.lr = 0.001, r.steps_per_s = 100;
  r.skipped = 2, r.times = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625};
  return r;
}

// A 512 KiB tmpfs under a scratch directory; fill_leaving() uses up all but a few pages.
class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_ / "fs";
    fs::create_directories(root_);
    if (::mount("tmpfs", root_.c_str(), "tmpfs", 0, "size=512k") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs to fill (" << std::strerror(errno) << "); needs root";
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(root_.c_str(), MNT_DETACH);
  }
  std::string path(const std::string& name) const { return root_ + "/" + name; }

  // Writes a filler file until the filesystem is full, then gives back `free_bytes`.
  void fill_leaving(off_t free_bytes) {
    const std::string filler = path("filler");
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    const std::vector<char> chunk(1 << 14, 'f');
    off_t size = 0;
    for (ssize_t n; (n = ::write(fd, chunk.data(), chunk.size())) > 0;) size += n;
    ASSERT_EQ(errno, ENOSPC);
    ASSERT_GE(size, free_bytes);
    ASSERT_EQ(::ftruncate(fd, size - free_bytes), 0);
    ::close(fd);
    ASSERT_LE(free_space(), static_cast<uint64_t>(free_bytes) + 4096);
  }
  uint64_t free_space() const {
    struct statvfs s;
    ::statvfs(root_.c_str(), &s);
    return static_cast<uint64_t>(s.f_bavail) * s.f_frsize;
  }
  // Entries of the filesystem besides the filler: what a failed write left behind.
  std::vector<std::string> written() const {
    auto names = listing(root_);
    names.erase(std::remove(names.begin(), names.end(), "filler"), names.end());
    return names;
  }

 private:
  TempDir dir_;
  std::string root_;
  bool mounted_ = false;
};

TEST_F(FullDisk, AtomicWriteFailsNamingTheFileAndKeepsThePreviousOne) {
  const std::string target = path("config.yaml");
  difftrain::write_file_atomically(target, std::string("previous\n"));
  fill_leaving(8192);
  const std::vector<char> big(64 << 10, 'n');
  const auto message = error_of([&] { difftrain::write_file_atomically(target, big); });
  EXPECT_MENTIONS(message, target);
  EXPECT_MENTIONS(message, "No space left on device");
  EXPECT_EQ(read_bytes(target), "previous\n");
  EXPECT_EQ(written(), std::vector<std::string>{"config.yaml"});
}

TEST_F(FullDisk, Hdf5WriteFailsNamingTheFileAndKeepsThePreviousOne) {
  const std::string target = path("samples.h5");
  const auto previous = torch::arange(40, torch::kFloat32).reshape({20, 2});
  difftrain::h5::write_datasets(target, {{"samples", previous}});
  const std::string before = read_bytes(target);
  fill_leaving(8192);
  // 16 KiB of rows: HDF5 accepts them into its cache and writes them when the file closes.
  const auto message = error_of([&] { difftrain::h5::write_datasets(target, {{"samples", torch::ones({2048, 2})}}); });
  EXPECT_MENTIONS(message, target);
  EXPECT_MENTIONS(message, "No space left on device");
  EXPECT_TRUE(read_bytes(target) == before) << "the previous file changed";
  EXPECT_EQ(written(), std::vector<std::string>{"samples.h5"});
  auto reread = difftrain::ShardedDataset::open(target, "samples");
  EXPECT_TRUE(torch::equal(reread.read_stored(0, 20), previous));
}

TEST_F(FullDisk, PreparedShardsStayWhenTheNewOnesDoNotFit) {
  const std::string out = path("shards");
  difftrain::write_shards(out, 2, torch::arange(20, torch::kFloat32).reshape({10, 2}));
  const std::string shard0 = read_bytes(out + "/shard-00000.h5"), shard1 = read_bytes(out + "/shard-00001.h5");
  fill_leaving(8192);
  const auto message = error_of([&] { difftrain::write_shards(out, 3, torch::ones({6000, 2})); });
  EXPECT_MENTIONS(message, out);
  EXPECT_MENTIONS(message, "No space left on device");
  EXPECT_EQ(listing(out), (std::vector<std::string>{"shard-00000.h5", "shard-00001.h5"}));
  EXPECT_TRUE(read_bytes(out + "/shard-00000.h5") == shard0) << "shard 0 changed";
  EXPECT_TRUE(read_bytes(out + "/shard-00001.h5") == shard1) << "shard 1 changed";
  EXPECT_EQ(written(), std::vector<std::string>{"shards"});  // no scratch directory
}

TEST_F(FullDisk, MetricsAppendThatFailsLeavesNoHalfLine) {
  const std::string run = path("run");
  fs::create_directories(run);
  difftrain::MetricsLog log(run);
  log.write(record_at(1));
  fill_leaving(4096);
  // Appends fill the last free page, then one fails part way through its line.
  std::string message;
  int64_t step = 2;
  for (; step < 200 && message.empty(); ++step) {
    try {
      log.write(record_at(step));
    } catch (const difftrain::Error& e) {
      message = e.what();
    }
  }
  ASSERT_FALSE(message.empty()) << "200 appends to a full disk all reported success";
  EXPECT_MENTIONS(message, run + "/metrics.jsonl");
  EXPECT_MENTIONS(message, "No space left on device");
  const std::string text = read_bytes(run + "/metrics.jsonl");
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const auto lines = lines_of(run + "/metrics.jsonl");
  ASSERT_EQ(static_cast<int64_t>(lines.size()), step - 2);  // every record but the failed one
  for (std::size_t i = 0; i < lines.size(); ++i)
    EXPECT_EQ(nlohmann::json::parse(lines[i]).at("step"), static_cast<int64_t>(i) + 1) << lines[i];
}

// ---------------------------------------------------------------- several files at once

TEST(StagedFiles, ARenameThatFailsPutsBackTheFilesAlreadyReplaced) {
  TempDir dir;
  const std::string picture = dir / "samples.png", samples = dir / "samples.h5";
  write_bytes(picture, "old picture");
  fs::create_directories(samples + "/in-the-way");  // a non-empty directory: no file renames over it
  {
    difftrain::StagedFiles files;
    files.stage(picture, std::vector<char>{'n', 'e', 'w'});
    files.stage(samples, std::vector<char>{'n', 'e', 'w'});
    EXPECT_MENTIONS(error_of([&] { files.publish(); }), samples);
  }
  EXPECT_EQ(read_bytes(picture), "old picture");
  EXPECT_EQ(listing(dir.path()), (std::vector<std::string>{"samples.h5", "samples.png"}));
}

TEST(StagedFiles, AFailedStageLeavesEveryTargetAndNoTemporary) {
  TempDir dir;
  const std::string picture = dir / "samples.png", samples = dir / "samples.h5";
  write_bytes(picture, "old picture");
  {
    difftrain::StagedFiles files;
    files.stage(picture, std::vector<char>{'n', 'e', 'w'});
    EXPECT_MENTIONS(error_of([&] { files.stage(samples, [&](const std::string&) { difftrain::fail("{}: no", samples); }); }),
                    "no");
  }  // never published
  EXPECT_EQ(read_bytes(picture), "old picture");
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"samples.png"});
}

TEST(StagedFiles, PublishReplacesEveryTarget) {
  TempDir dir;
  const std::string picture = dir / "samples.png", samples = dir / "samples.h5";
  write_bytes(picture, "old picture");
  difftrain::StagedFiles files;
  files.stage(picture, std::vector<char>{'p'});
  files.stage(samples, std::vector<char>{'s'});
  EXPECT_EQ(read_bytes(picture), "old picture");  // nothing visible before publish
  EXPECT_FALSE(fs::exists(samples));
  files.publish();
  EXPECT_EQ(read_bytes(picture), "p");
  EXPECT_EQ(read_bytes(samples), "s");
  EXPECT_EQ(listing(dir.path()), (std::vector<std::string>{"samples.h5", "samples.png"}));
}

// ---------------------------------------------------------------- metrics as JSON

TEST(Metrics, RecordsAreJsonInTheDocumentedLayoutWithNullForNonFinite) {
  auto r = record_at(7);
  r.loss = NAN, r.grad_norm = INFINITY;
  EXPECT_EQ(difftrain::json_record(r),
            "{\"step\": 7, \"loss\": null, \"grad_norm\": null, \"lr\": 0.001, \"steps_per_s\": 100.0, "
            "\"skipped_steps\": 2, \"time_s\": {\"data\": 0.5, \"compute\": 0.25, \"sync\": 0.125, \"optim\": 0.0625, "
            "\"ema\": 0.03125, \"log\": 0.015625}}");
  const auto parsed = nlohmann::json::parse(difftrain::json_record(record_at(3)));
  EXPECT_EQ(parsed.at("step"), 3);
  EXPECT_EQ(parsed.at("loss"), 0.25);
  EXPECT_EQ(parsed.at("time_s").at("optim"), 0.0625);
  EXPECT_EQ(parsed.at("time_s").at("log"), 0.015625);
}

TEST(Metrics, ResumeKeepsRecordsThroughTheStepWhateverTheirKeysAndDropsATornLastLine) {
  TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  const std::string s10 = difftrain::json_record(record_at(10)), s20 = difftrain::json_record(record_at(20)),
                    s30 = difftrain::json_record(record_at(30));
  const std::string event = R"({"event": "resume", "step": 20, "world_size": 2})";
  // The last line was cut short by a crash mid-append; the text "step": 5 in it would fool a
  // text search.
  write_bytes(path, s10 + "\n" + s20 + "\n" + event + "\n" + s30 + "\n" + R"({"step": 5, "loss": 0.)");
  difftrain::keep_metrics_through(path, 20);
  EXPECT_EQ(lines_of(path), (std::vector<std::string>{s10, s20, event}));
  EXPECT_EQ(listing(dir.path()), std::vector<std::string>{"metrics.jsonl"});

  write_bytes(path, s10 + "\n" + s20 + "\n" + R"({"step": 2)");
  difftrain::keep_metrics_through(path, 1000);
  EXPECT_EQ(read_bytes(path), s10 + "\n" + s20 + "\n");
}

TEST(Metrics, AGarbledLineBeforeTheEndIsAnErrorNamingIt) {
  TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  const std::string s10 = difftrain::json_record(record_at(10));
  const std::string before = s10 + "\n{\"loss\": 0.5}\n" + s10 + "\n";
  write_bytes(path, before);
  const auto message = error_of([&] { difftrain::keep_metrics_through(path, 20); });
  EXPECT_MENTIONS(message, path);
  EXPECT_MENTIONS(message, "line 2");
  EXPECT_EQ(read_bytes(path), before);
}

}  // namespace
