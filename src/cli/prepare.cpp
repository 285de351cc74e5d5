// `difftrain prepare NAME`: writes a sharded HDF5 dataset. Each data source is one row of
// the table below: its name, its help, which options it takes, and its converter (data/).
#include <algorithm>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/command.h"
#include "difftrain/data/fashion_mnist.h"
#include "difftrain/data/image_folder.h"
#include "difftrain/data/prepare.h"
#include "difftrain/error.h"

namespace difftrain::cli {

namespace {

struct PrepareArgs {
  std::string name, out;
  std::optional<std::string> dataset;
  int64_t shards = 1;
  std::vector<std::string> from;
  std::optional<std::string> split;
  std::optional<int64_t> size;
  std::optional<int> channels;
};

struct Source {
  const char* name;
  const char* help;
  std::vector<const char*> options;  // of --from, --dataset, --split, --size, --channels: those it takes
  std::vector<std::string> (*write)(const PrepareArgs& a);
};

const std::vector<Source>& sources() {
  static const std::vector<Source> table{
      {"swissroll", "the toy data", {}, [](const PrepareArgs& a) { return prepare_swissroll(a.out, a.shards); }},
      {"reshard", "your own HDF5 files", {"--from", "--dataset"},
       [](const PrepareArgs& a) { return prepare_reshard(a.from, a.out, a.shards, a.dataset.value_or("x")); }},
      {"fashion-mnist", "Fashion-MNIST's IDX files", {"--from", "--split"},
       [](const PrepareArgs& a) {
         if (a.from.size() > 1) fail("prepare {}: --from takes one directory, got {}", a.name, a.from.size());
         return prepare_fashion_mnist(a.out, a.shards, a.split.value_or("train"),
                                      a.from.empty() ? kFashionMnistDir : a.from[0]);
       }},
      {"image-folder", "one subfolder of images per class", {"--from", "--size", "--channels"},
       [](const PrepareArgs& a) {
         if (a.from.size() > 1) fail("prepare {}: --from takes one directory, got {}", a.name, a.from.size());
         if (a.from.empty()) fail("prepare image-folder: give the folder of class subfolders with --from");
         if (!a.size) fail("prepare image-folder: give the output image size with --size");
         return prepare_image_folder(a.from[0], a.out, a.shards, {*a.size, a.channels.value_or(0)});
       }},
  };
  return table;
}

int prepare(const PrepareArgs& a) {
  const auto& table = sources();
  const auto source = std::find_if(table.begin(), table.end(), [&](const Source& s) { return a.name == s.name; });
  if (source == table.end()) {
    std::vector<std::string> names;
    for (const auto& s : table) names.emplace_back(s.name);
    fail("prepare: unknown dataset '{}' (expected {})", a.name, fmt::join(names, ", "));
  }
  // An option of another dataset is a mistake, not something to ignore.
  const auto only_for = [&](bool given, const char* option) {
    if (!given || std::find(source->options.begin(), source->options.end(), std::string(option)) != source->options.end())
      return;
    std::vector<std::string> takers;
    for (const auto& s : table)
      if (std::find(s.options.begin(), s.options.end(), std::string(option)) != s.options.end()) takers.emplace_back(s.name);
    fail("prepare {}: {} is for {}", a.name, option, fmt::join(takers, ", "));
  };
  only_for(!a.from.empty(), "--from");
  only_for(a.dataset.has_value(), "--dataset");
  only_for(a.split.has_value(), "--split");
  only_for(a.size.has_value(), "--size");
  only_for(a.channels.has_value(), "--channels");
  const auto written = source->write(a);
  fmt::print("wrote {} shard{} to {}\n", written.size(), written.size() == 1 ? "" : "s", a.out);
  return 0;
}

}  // namespace

Command add_prepare(CLI::App& app) {
  auto a = std::make_shared<PrepareArgs>();
  std::vector<std::string> names;
  for (const auto& s : sources()) names.push_back(fmt::format("{} ({})", s.name, s.help));
  auto* cmd = app.add_subcommand("prepare", "Write a sharded HDF5 dataset");
  cmd->add_option("NAME", a->name, fmt::format("{}", fmt::join(names, ", ")))->required();
  cmd->add_option("--out", a->out, "Output directory for shard-NNNNN.h5 files")->required();
  cmd->add_option("--shards", a->shards, "Number of shard files")->check(integer_in(1))->capture_default_str();
  cmd->add_option("--from", a->from,
                  "reshard: input HDF5 files (or globs, or directories); fashion-mnist: the IDX files' directory "
                  "(default /usr/share/datasets/fashion-mnist); image-folder: the folder of class subfolders");
  cmd->add_option("--dataset", a->dataset, "reshard: name of the dataset to copy (default x)");
  cmd->add_option("--split", a->split, "fashion-mnist: train (60000 images, the default) or test (10000)")
      ->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--size", a->size, "image-folder: centre-crop each image to a square and resize it to SIZE x SIZE")
      ->check(integer_in(std::numeric_limits<int64_t>::min()));
  cmd->add_option("--channels", a->channels,
                  "image-folder: 1 (grey) or 3 (RGB); default RGB if any image is stored in colour, else grey")
      ->check(CLI::IsMember({1, 3}));
  return {cmd, [a] { return prepare(*a); }};
}

}  // namespace difftrain::cli
