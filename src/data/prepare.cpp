#include "difftrain/data/prepare.h"

#include <optional>

#include <fmt/format.h>

#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/partition.h"
#include "difftrain/data/sharded_dataset.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"

namespace difftrain {

namespace {

std::string shard_path(const std::string& out_dir, int64_t k) {
  return fmt::format("{}/shard-{:05d}.h5", out_dir, k);
}

void check_shard_count(int64_t shards, int64_t examples) {
  if (shards < 1) fail("prepare: --shards must be >= 1, got {}", shards);
  if (shards > examples) fail("prepare: --shards {} is more than the {} examples", shards, examples);
}

}  // namespace

std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, const torch::Tensor& x,
                                      const torch::Tensor& y, const std::string& name) {
  check_shard_count(shards, x.size(0));
  std::vector<std::string> paths;
  for (int64_t k = 0; k < shards; ++k) {
    const auto part = rank_share(x.size(0), static_cast<int>(k), static_cast<int>(shards));
    std::vector<std::pair<std::string, torch::Tensor>> datasets{{name, x.slice(0, part.begin, part.end)}};
    if (y.defined()) datasets.emplace_back("y", y.slice(0, part.begin, part.end));
    paths.push_back(shard_path(out_dir, k));
    h5::write_datasets(paths.back(), datasets);
  }
  return paths;
}

std::vector<std::string> prepare_swissroll(const std::string& out_dir, int64_t shards) {
  return write_shards(out_dir, shards, swissroll_points());
}

std::vector<std::string> prepare_reshard(const std::vector<std::string>& inputs, const std::string& out_dir,
                                         int64_t shards, const std::string& name) {
  if (inputs.empty()) fail("prepare reshard: give at least one input file with --from");
  std::string spec;
  for (const auto& in : inputs) spec += (spec.empty() ? "" : ",") + in;
  auto x = ShardedDataset::open(spec, name);
  // Labels travel along when every input has them.
  std::optional<ShardedDataset> y;
  try {
    y = ShardedDataset::open(spec, "y");
  } catch (const Error&) {
    y.reset();
  }
  if (y && y->size() != x.size()) fail("{}: 'y' has {} rows but '{}' has {}", spec, y->size(), name, x.size());
  check_shard_count(shards, x.size());
  // One output shard in memory at a time.
  std::vector<std::string> paths;
  for (int64_t k = 0; k < shards; ++k) {
    const auto part = rank_share(x.size(), static_cast<int>(k), static_cast<int>(shards));
    std::vector<std::pair<std::string, torch::Tensor>> datasets{{name, x.read_stored(part.begin, part.size())}};
    if (y) datasets.emplace_back("y", y->read_stored(part.begin, part.size()));
    paths.push_back(shard_path(out_dir, k));
    h5::write_datasets(paths.back(), datasets);
  }
  return paths;
}

}  // namespace difftrain
