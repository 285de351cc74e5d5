#include "difftrain/io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/io/dict_checksum.h"
#include "difftrain/io/input_file.h"
#include "difftrain/io/torch_save.h"

namespace difftrain {

namespace {

c10::Dict<std::string, at::Tensor> to_dict(const torch::OrderedDict<std::string, torch::Tensor>& d) {
  c10::Dict<std::string, at::Tensor> out;
  for (const auto& item : d) out.insert(item.key(), item.value());
  return out;
}

torch::OrderedDict<std::string, torch::Tensor> from_dict(const c10::IValue& v, const std::string& path,
                                                         const char* key) {
  if (!v.isGenericDict()) fail("{}: checkpoint entry '{}' is not a dict of tensors", path, key);
  torch::OrderedDict<std::string, torch::Tensor> out;
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor())
      fail("{}: checkpoint entry '{}' is not a dict of tensors", path, key);
    out.insert(item.key().toStringRef(), item.value().toTensor());
  }
  return out;
}

// Names the first floating-point tensor under `v` holding a NaN or Inf: "model/net.0.bias".
std::optional<std::string> first_non_finite(const c10::IValue& v, const std::string& name) {
  if (v.isTensor()) {
    const auto& t = v.toTensor();
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) return name;
  } else if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) {
      const std::string key = item.key().isString() ? item.key().toStringRef() : fmt::format("{}", item.key().toInt());
      if (auto found = first_non_finite(item.value(), name + "/" + key)) return found;
    }
  } else if (v.isList()) {
    const auto list = v.toListRef();
    for (std::size_t i = 0; i < list.size(); ++i)
      if (auto found = first_non_finite(list[i], fmt::format("{}/{}", name, i))) return found;
  }
  return std::nullopt;
}

std::optional<std::string> first_non_finite(const Checkpoint& c) {
  if (auto found = first_non_finite(to_dict(c.model), "model")) return found;
  if (auto found = first_non_finite(to_dict(c.ema), "ema")) return found;
  return first_non_finite(c.optimizer, "optimizer");
}

}  // namespace

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step-{:07d}.pt", run_dir, step);
}

std::string latest_checkpoint_path(const std::string& run_dir) { return run_dir + "/checkpoints/latest.pt"; }

torch::OrderedDict<std::string, torch::Tensor> state_dict(const torch::nn::Module& module) {
  torch::OrderedDict<std::string, torch::Tensor> out;
  for (const auto& p : module.named_parameters()) out.insert(p.key(), p.value().detach().cpu().clone());
  for (const auto& b : module.named_buffers()) out.insert(b.key(), b.value().detach().cpu().clone());
  return out;
}

void load_state_dict(torch::nn::Module& module, const torch::OrderedDict<std::string, torch::Tensor>& state,
                     const std::string& source) {
  torch::NoGradGuard no_grad;
  auto targets = module.named_parameters();
  for (const auto& b : module.named_buffers()) targets.insert(b.key(), b.value());
  for (const auto& item : state)
    if (!targets.contains(item.key())) fail("{}: unexpected tensor '{}' for this model", source, item.key());
  for (auto& target : targets) {
    const auto* found = state.find(target.key());
    if (!found) fail("{}: missing tensor '{}' for this model", source, target.key());
    if (found->sizes() != target.value().sizes())
      fail("{}: tensor '{}' has shape {}, the model expects {}", source, target.key(), found->sizes(),
           target.value().sizes());
    target.value().copy_(*found);
  }
}

void save_checkpoint(const std::string& path, const Checkpoint& c) { save_checkpoint(std::vector<std::string>{path}, c); }

void save_checkpoint(const std::vector<std::string>& paths, const Checkpoint& c) {
  if (const auto bad = first_non_finite(c))
    fail("{}: not written: '{}' holds a NaN or Inf at step {}", paths.front(), *bad, c.step);
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("model", to_dict(c.model));
  d.insert("ema", to_dict(c.ema));
  d.insert("optimizer", c.optimizer);
  d.insert("step", c.step);
  d.insert("skipped_steps", c.skipped_steps);
  d.insert("config", c.config_yaml);
  d.insert("sample_shape", c10::List<int64_t>(c.sample_shape));
  c10::Dict<std::string, int64_t> data;
  data.insert("world_size", c.world_size);
  data.insert("position", c.data_position);
  d.insert("data", data);
  c10::impl::GenericDict rng(c10::StringType::get(), c10::AnyType::get());
  rng.insert("seed", c.seed);
  rng.insert("scheme", c.stream_scheme);
  d.insert("rng", rng);
  d.insert("retained", c10::List<int64_t>(c.retained_steps));
  insert_checksum(d, paths.front());
  const auto bytes = torch_save_bytes(d);
  for (const auto& path : paths) write_file_atomically(path, bytes);
}

namespace {

// A checksum proves only that the file is as it was written, not that what was written is
// possible: every number a resume acts on is checked against what a run can produce.
void check_fields(const Checkpoint& c, const std::string& path) {
  const auto refuse = [&](const char* entry, const std::string& why) {
    fail("{}: checkpoint entry '{}' {}: the file was not written by a run", path, entry, why);
  };
  if (c.step < 0) refuse("step", fmt::format("is {}, below 0", c.step));
  if (c.skipped_steps < 0 || c.skipped_steps > c.step)
    refuse("skipped_steps", fmt::format("is {}, outside [0, step = {}]", c.skipped_steps, c.step));
  if (c.world_size < 1) refuse("data.world_size", fmt::format("is {}, below 1", c.world_size));
  if (c.data_position < 0) refuse("data.position", fmt::format("is {}, below 0", c.data_position));
  if (c.world_size >= 1 && c.data_position > std::numeric_limits<int64_t>::max() / c.world_size)
    refuse("data.position", fmt::format("is {}: times data.world_size = {} it overflows int64", c.data_position, c.world_size));
  if (c.seed < 0) refuse("rng.seed", fmt::format("is {}, below 0", c.seed));
  if (c.config_yaml.empty()) refuse("config", "is empty");
  if (c.sample_shape.empty() || std::any_of(c.sample_shape.begin(), c.sample_shape.end(), [](int64_t d) { return d < 1; }))
    refuse("sample_shape", fmt::format("is [{}], not the shape of an example", fmt::join(c.sample_shape, ", ")));
  for (const int64_t s : c.retained_steps)
    if (s < 0) refuse("retained", fmt::format("names step {}", s));
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  // A directory opens as a stream on Linux and then throws std::ios_base::failure on read,
  // which would escape as an abort instead of a one-line error.
  if (!input_exists(path)) fail("{}: no such checkpoint", path);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, not a checkpoint file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open checkpoint", path);
  std::vector<char> bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    fail("{}: cannot read checkpoint: {}", path, e.what());
  }
  if (bytes.empty()) fail("{}: checkpoint file is empty", path);
  const c10::IValue value = load_torch_file(bytes, path, "checkpoint");
  if (!value.isGenericDict()) fail("{}: checkpoint is not a dict", path);
  auto d = value.toGenericDict();
  verify_checksum(d, path);
  auto need = [&](const char* key) {
    auto it = d.find(key);
    if (it == d.end()) fail("{}: checkpoint has no '{}' entry", path, key);
    return it->value();
  };
  Checkpoint c;
  try {
    c.model = from_dict(need("model"), path, "model");
    c.ema = from_dict(need("ema"), path, "ema");
    c.optimizer = need("optimizer");
    c.step = need("step").toInt();
    c.skipped_steps = need("skipped_steps").toInt();
    c.config_yaml = need("config").toStringRef();
    c.sample_shape = int_list(need("sample_shape"));
    auto data = need("data").toGenericDict();
    c.world_size = data.at("world_size").toInt();
    c.data_position = data.at("position").toInt();
    const auto rng = need("rng").toGenericDict();
    c.seed = rng.at("seed").toInt();
    c.stream_scheme = rng.contains("scheme") ? rng.at("scheme").toStringRef() : "unrecorded";
    if (auto it = d.find("retained"); it != d.end())
      c.retained_steps = int_list(it->value());
  } catch (const c10::Error&) {
    fail("{}: checkpoint entries have unexpected types", path);
  }
  if (const auto bad = first_non_finite(c)) fail("{}: '{}' holds a NaN or Inf: the file is damaged", path, *bad);
  check_fields(c, path);
  return c;
}

}  // namespace difftrain
