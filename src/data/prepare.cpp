#include "difftrain/data/prepare.h"

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <regex>

#include <fmt/format.h>

#include "difftrain/data/class_names.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/io/input_file.h"

namespace difftrain {

namespace {

std::string shard_path(const std::string& out_dir, int64_t k) {
  return fmt::format("{}/shard-{:05d}.h5", out_dir, k);
}

// Writes the K shards into a scratch directory beside `out_dir`, then replaces whatever
// shard-*.h5 files `out_dir` held with them: a failed prepare leaves the old shards, and a
// smaller K never leaves stale shards behind to be read with the new ones.
std::vector<std::string> publish_shards(const std::string& out_dir, int64_t shards,
                                        const std::function<void(int64_t k, const std::string& path)>& write) {
  namespace fs = std::filesystem;
  const fs::path out = fs::absolute(out_dir).lexically_normal();
  const fs::path scratch = out.parent_path() / fmt::format(".{}.tmp.{}", out.filename().string(), ::getpid());
  std::vector<std::string> paths;
  try {
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    for (int64_t k = 0; k < shards; ++k) write(k, shard_path(scratch.string(), k));
    fs::create_directories(out);
    // The new shards replace the old ones name for name (a rename over an existing name
    // needs no space, even on a full disk); only then do the old ones beyond K go.
    for (int64_t k = 0; k < shards; ++k) {
      paths.push_back(shard_path(out_dir, k));
      fs::rename(shard_path(scratch.string(), k), paths.back());
    }
    static const std::regex shard_file(R"(shard-(\d+)\.h5)");
    std::smatch index;
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string name = e.path().filename().string();
      if (std::regex_match(name, index, shard_file) && std::stoll(index[1]) >= shards) fs::remove(e.path());
    }
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(scratch, ec);
    fail("prepare: cannot write the shards of {}: {}", out_dir, one_line(e));
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);
  return paths;
}

void check_shard_count(int64_t shards, int64_t examples) {
  if (shards < 1) fail("prepare: --shards must be >= 1, got {}", shards);
  if (shards > examples) fail("prepare: --shards {} is more than the {} examples", shards, examples);
}

}  // namespace

std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, int64_t examples,
                                      const ShardRows& rows, const std::vector<std::string>& class_names) {
  check_shard_count(shards, examples);
  h5::StringLists attributes;
  if (!class_names.empty()) attributes.emplace_back(kClassNamesAttribute, class_names);
  return publish_shards(out_dir, shards, [&](int64_t k, const std::string& path) {
    const auto part = rank_share(examples, static_cast<int>(k), static_cast<int>(shards));
    h5::write_datasets(path, rows(part.begin, part.end), attributes);
  });
}

std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, const torch::Tensor& x,
                                      const torch::Tensor& y, const std::string& name,
                                      const std::vector<std::string>& class_names) {
  return write_shards(
      out_dir, shards, x.size(0),
      [&](int64_t begin, int64_t end) {
        h5::Datasets datasets{{name, x.slice(0, begin, end)}};
        if (y.defined()) datasets.emplace_back("y", y.slice(0, begin, end));
        return datasets;
      },
      class_names);
}

std::vector<std::string> prepare_swissroll(const std::string& out_dir, int64_t shards) {
  return write_shards(out_dir, shards, swissroll_points());
}

std::vector<std::string> prepare_reshard(const std::vector<std::string>& inputs, const std::string& out_dir,
                                         int64_t shards, const std::string& name) {
  if (inputs.empty()) fail("prepare reshard: give at least one input file with --from");
  for (const auto& in : inputs)
    if (std::error_code ec; std::filesystem::is_directory(in, ec)) refuse_output_inside_input(in, out_dir, "prepare reshard");
  std::string spec;
  for (const auto& in : inputs) spec += (spec.empty() ? "" : ",") + in;
  auto x = ShardedDataset::open(spec, name);
  // Labels, and the names of their classes, travel along when every input has them.
  std::optional<ShardedDataset> y = x.labels("y");
  std::vector<std::string> paths;
  for (const auto& shard : x.shards()) paths.push_back(shard.path);
  const auto class_names = y ? read_class_names(paths) : std::nullopt;
  // Writing over the inputs would destroy rows before they are read.
  namespace fs = std::filesystem;
  const auto out = fs::weakly_canonical(out_dir);
  for (const auto& shard : x.shards())
    if (fs::weakly_canonical(shard.path).parent_path() == out)
      fail("prepare reshard: --out {} holds the input {}; write the shards to another directory", out_dir, shard.path);
  return write_shards(
      out_dir, shards, x.size(),
      [&](int64_t begin, int64_t end) {
        h5::Datasets datasets{{name, x.read_stored(begin, end - begin)}};
        if (y) datasets.emplace_back("y", y->as_read(y->read_stored(begin, end - begin)));  // int64
        return datasets;
      },
      class_names.value_or(std::vector<std::string>{}));
}

}  // namespace difftrain
