#include "difftrain/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "difftrain/core/diffusion.h"
#include "difftrain/error.h"
#include "difftrain/io/input_file.h"

namespace difftrain {
namespace {

// ---- typed reading of one YAML value -------------------------------------------------

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", abbreviate(node.Scalar()));
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

template <typename T>
T read_as(const YAML::Node& node, const std::string& where, const char* expected) {
  if (!node.IsScalar()) fail("{}: expected {}, got {}", where, expected, describe(node));
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    fail("{}: expected {}, got {}", where, expected, describe(node));
  }
}

void read(const YAML::Node& n, const std::string& w, std::string& out) {
  out = read_as<std::string>(n, w, "a string");
}
bool is_decimal_integer(const std::string& s) {
  const std::size_t digits = s.find_first_not_of("+-") == 1 ? 1 : 0;
  return s.size() > digits && s.find_first_not_of("0123456789", digits) == std::string::npos;
}
void read(const YAML::Node& n, const std::string& w, int64_t& out) {
  // yaml-cpp refuses a number beyond int64 like any other bad text; say why.
  if (n.IsScalar() && is_decimal_integer(n.Scalar()) && !YAML::convert<int64_t>::decode(n, out))
    fail("{}: expected an integer in [{}, {}], got {}", w, std::numeric_limits<int64_t>::min(),
         std::numeric_limits<int64_t>::max(), describe(n));
  out = read_as<int64_t>(n, w, "an integer");
}
void read(const YAML::Node& n, const std::string& w, bool& out) {
  out = read_as<bool>(n, w, "true or false");
}
void read(const YAML::Node& n, const std::string& w, double& out) {
  out = read_as<double>(n, w, "a number");
  if (!std::isfinite(out)) fail("{}: expected a finite number, got {}", w, describe(n));
}
template <typename T>
void read(const YAML::Node& n, const std::string& w, std::vector<T>& out) {
  if (!n.IsSequence()) fail("{}: expected a list, got {}", w, describe(n));
  out.clear();
  for (std::size_t i = 0; i < n.size(); ++i) {
    T value{};
    read(n[i], fmt::format("{}[{}]", w, i), value);
    out.push_back(value);
  }
}

// A choice (names.h): its name, from the table beside the enum.
template <typename E, std::enable_if_t<std::is_enum_v<E>, int> = 0>
void read(const YAML::Node& n, const std::string& w, E& out) {
  out = parse_name<E>(read_as<std::string>(n, w, "a string"), w);
}

template <typename T>
void read(const YAML::Node& n, const std::string& w, std::optional<T>& out) {
  T value{};
  read(n, w, value);
  out = value;
}

// ---- writing: shortest text that reads back to the same value ------------------------

std::string text(const std::string& v) {
  YAML::Emitter out;  // quotes only what needs quoting
  out << YAML::DoubleQuoted << v;
  return out.c_str();
}
std::string text(int64_t v) { return fmt::format("{}", v); }
std::string text(bool v) { return v ? "true" : "false"; }
std::string text(double v) {
  std::string s = fmt::format("{}", v);
  // Always a dot, so that YAML 1.1 readers (PyYAML) also see a float: "1.0e-08", "10.0".
  if (std::isfinite(v) && s.find('.') == std::string::npos) {
    const auto e = s.find('e');
    s.insert(e == std::string::npos ? s.size() : e, ".0");
  }
  return s;
}
template <typename E, std::enable_if_t<std::is_enum_v<E>, int> = 0>
std::string text(E v) {
  return text(std::string(name_of(v)));
}
template <typename T>
std::string text(const std::vector<T>& v) {
  std::vector<std::string> items;
  for (const auto& x : v) items.push_back(text(x));
  return fmt::format("[{}]", fmt::join(items, ", "));
}

template <typename T>
std::string text(const std::optional<T>& v) { return v ? text(*v) : "null"; }

// ---- the schema: one row per key ------------------------------------------------------

// Whether a resumed run may change the key. Those that may: how long and how often; the
// learning rate's peak and warm-up (a common cure for a run that diverges); gradient
// clipping (a guard rail, inactive while gradients are sane); the global batch and its split
// into micro-batches (the data position is counted in examples, so it carries over;
// accumulation is exact); the arithmetic's precision (weights, gradients and optimizer state
// stay fp32 either way); whether the step is replayed from a CUDA graph (the same arithmetic,
// launched otherwise); how ranks talk; how to sample. Everything else changes what is trained.
enum class OnResume { fixed, may_change };

struct Field {
  std::string key;
  OnResume on_resume;
  std::string choices;  // a choice's valid names, "a, b, c"; empty for other keys
  std::function<void(const YAML::Node&, const std::string& where)> set;
  std::function<std::string()> get;
};

template <typename T>
std::string choices_of() {
  if constexpr (std::is_enum_v<T>) return name_list<T>();
  return {};
}

template <typename T>
Field field(std::string key, T& target, OnResume on_resume = OnResume::fixed) {
  return Field{key, on_resume, choices_of<T>(), [&target](const YAML::Node& n, const std::string& w) { read(n, w, target); },
               [&target] { return text(target); }};
}

std::vector<Field> schema(Config& c) {
  constexpr auto free = OnResume::may_change;
  std::vector<Field> fields{
      field("run_dir", c.run_dir, free),
      field("seed", c.seed),
      field("data.path", c.data.path),
      field("data.dataset", c.data.dataset),
      field("data.hflip", c.data.hflip),
  };
  visit_model_keys(c.model, [&](const char* name, auto& member) { fields.push_back(field(std::string("model.") + name, member)); });
  std::vector<Field> rest{
      field("schedule.type", c.schedule.type),
      field("schedule.N", c.schedule.N),
      field("schedule.sigma_min", c.schedule.sigma_min),
      field("schedule.sigma_max", c.schedule.sigma_max),
      field("schedule.beta_start", c.schedule.beta_start),
      field("schedule.beta_end", c.schedule.beta_end),
      field("schedule.max_beta", c.schedule.max_beta),
      field("train.steps", c.train.steps, free),
      field("train.batch_size", c.train.batch_size, free),
      field("train.grad_accum", c.train.grad_accum, free),
      field("train.lr", c.train.lr, free),
      field("train.optimizer", c.train.optimizer),
      field("train.betas", c.train.betas),
      field("train.adam_eps", c.train.adam_eps),
      field("train.weight_decay", c.train.weight_decay),
      field("train.grad_clip", c.train.grad_clip, free),
      field("train.warmup_steps", c.train.warmup_steps, free),
      field("train.ema_decay", c.train.ema_decay),
      field("train.log_every", c.train.log_every, free),
      field("train.checkpoint_every", c.train.checkpoint_every, free),
      field("train.keep_checkpoints", c.train.keep_checkpoints, free),
      field("train.max_bad_steps", c.train.max_bad_steps, free),
      field("train.cond_drop", c.train.cond_drop),
      field("train.sample_every", c.train.sample_every, free),
      field("train.precision", c.train.precision, free),
      field("train.tf32", c.train.tf32, free),
      field("train.threads", c.train.threads, free),
      field("train.cuda_graph", c.train.cuda_graph, free),
      field("dist.backend", c.dist.backend, free),
      field("dist.bucket_mb", c.dist.bucket_mb, free),
      field("dist.check_every", c.dist.check_every, free),
      field("dist.timeout_s", c.dist.timeout_s, free),
      field("sample.steps", c.sample.steps, free),
      field("sample.gam", c.sample.gam, free),
      field("sample.mu", c.sample.mu, free),
      field("sample.n", c.sample.n, free),
      field("sample.cfg_scale", c.sample.cfg_scale, free),
      field("sample.class", c.sample.label, free),
  };
  for (auto& f : rest) fields.push_back(std::move(f));
  return fields;
}

Field& find_field(std::vector<Field>& fields, const std::string& key, const std::string& source) {
  for (auto& f : fields)
    if (f.key == key) return f;
  fail("{}: unknown key '{}'", source, abbreviate(key));
}

bool is_section(const std::vector<Field>& fields, const std::string& prefix) {
  for (const auto& f : fields)
    if (f.key.rfind(prefix + ".", 0) == 0) return true;
  return false;
}

// yaml-cpp keeps every entry of a key written twice in one mapping, and which one would
// win is invisible in the file: a repeated key is an error naming both lines. Checked for
// the whole mapping before any value is read, so it is reported whatever the values hold.
void check_key_names(const YAML::Node& map, const std::string& prefix, const std::string& source) {
  std::map<std::string, int> line_of;
  for (const auto& item : map) {
    const int line = item.first.Mark().line + 1;
    if (!item.first.IsScalar())
      fail("{}: line {}: expected a key name{}, got {}", source, line, prefix.empty() ? "" : " in '" + prefix + "'",
           describe(item.first));
    const auto [first, fresh] = line_of.emplace(item.first.Scalar(), line);
    if (!fresh)
      fail("{}: key '{}' appears twice (lines {} and {})", source,
           abbreviate(prefix.empty() ? item.first.Scalar() : prefix + "." + item.first.Scalar()), first->second, line);
  }
}

// Walks a mapping; every leaf must be a known key. A null value (`key:` or `key: null`)
// keeps the default.
void apply_map(std::vector<Field>& fields, const YAML::Node& map, const std::string& prefix,
               const std::string& source) {
  check_key_names(map, prefix, source);
  for (const auto& item : map) {
    const std::string name = item.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const YAML::Node& value = item.second;
    if (is_section(fields, key)) {
      if (value.IsNull()) continue;
      if (!value.IsMap()) fail("{}: key '{}': expected a mapping, got {}", source, key, describe(value));
      apply_map(fields, value, key, source);
      continue;
    }
    Field& f = find_field(fields, key, source);
    if (value.IsNull()) continue;
    f.set(value, fmt::format("{}: key '{}'", source, key));
  }
}

void apply_override(std::vector<Field>& fields, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("override '{}': expected key.sub=value", abbreviate(assignment));
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  Field& f = find_field(fields, key, "override");
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail("override '{}': value is not valid YAML: {}", abbreviate(assignment), e.msg);
  }
  if (node.IsNull()) fail("override '{}': empty value", abbreviate(assignment));
  f.set(node, fmt::format("override: key '{}'", key));
}

// ---- validation ---------------------------------------------------------------------------

void require(bool ok, const char* key, const std::string& what) {
  if (!ok) fail("config: key '{}': {}", key, what);
}

}  // namespace

void resolve(Config& c) {
  resolve_schedule_config(c.schedule);
  require(!c.run_dir.empty(), "run_dir", "must not be empty");
  require(c.seed >= 0, "seed", fmt::format("must be in [0, {}], got {}", std::numeric_limits<int64_t>::max(), c.seed));
  require(!c.data.path.empty(), "data.path", "must not be empty");
  require(!c.data.dataset.empty(), "data.dataset", "must not be empty");
  resolve_model_config(c.model);

  auto& t = c.train;
  require(t.steps >= 1, "train.steps", fmt::format("must be >= 1, got {}", t.steps));
  require(t.batch_size >= 1, "train.batch_size", fmt::format("must be >= 1, got {}", t.batch_size));
  require(t.grad_accum >= 1, "train.grad_accum", fmt::format("must be >= 1, got {}", t.grad_accum));
  require(t.lr > 0, "train.lr", fmt::format("must be > 0, got {}", t.lr));
  require(t.betas.size() == 2, "train.betas", fmt::format("expected 2 values, got {}", t.betas.size()));
  for (double b : t.betas) require(b >= 0 && b < 1, "train.betas", fmt::format("each must be in [0, 1), got {}", b));
  require(t.adam_eps > 0, "train.adam_eps", fmt::format("must be > 0, got {}", t.adam_eps));
  t.weight_decay = t.weight_decay.value_or(t.optimizer == OptimizerType::adamw ? 0.01 : 0.0);
  require(*t.weight_decay >= 0, "train.weight_decay", fmt::format("must be >= 0, got {}", *t.weight_decay));
  require(t.grad_clip >= 0, "train.grad_clip", fmt::format("must be >= 0 (0 = off), got {}", t.grad_clip));
  require(t.warmup_steps >= 0, "train.warmup_steps", fmt::format("must be >= 0, got {}", t.warmup_steps));
  require(t.ema_decay >= 0 && t.ema_decay < 1, "train.ema_decay",
          fmt::format("must be in [0, 1), got {}", t.ema_decay));
  require(t.log_every >= 1, "train.log_every", fmt::format("must be >= 1, got {}", t.log_every));
  require(t.checkpoint_every >= 1, "train.checkpoint_every",
          fmt::format("must be >= 1, got {}", t.checkpoint_every));
  require(t.keep_checkpoints >= 0, "train.keep_checkpoints",
          fmt::format("must be >= 0 (0 = keep all), got {}", t.keep_checkpoints));
  require(t.max_bad_steps >= 1, "train.max_bad_steps", fmt::format("must be >= 1, got {}", t.max_bad_steps));
  require(t.cond_drop >= 0 && t.cond_drop <= 1, "train.cond_drop",
          fmt::format("must be in [0, 1], got {}", t.cond_drop));
  require(t.sample_every >= 0, "train.sample_every", fmt::format("must be >= 0 (0 = off), got {}", t.sample_every));
  require(t.threads >= 0 && t.threads <= 4096, "train.threads",
          fmt::format("must be in [0, 4096] (0 = the node's cores / its ranks), got {}", t.threads));

  require(c.dist.bucket_mb > 0, "dist.bucket_mb", fmt::format("must be > 0, got {}", c.dist.bucket_mb));
  require(c.dist.check_every >= 0, "dist.check_every",
          fmt::format("must be >= 0 (0 = off), got {}", c.dist.check_every));
  require(c.dist.timeout_s >= 1 && c.dist.timeout_s <= 1e6, "dist.timeout_s",
          fmt::format("must be in [1, 1e6] seconds, got {}", c.dist.timeout_s));

  require(c.sample.steps >= 1, "sample.steps", fmt::format("must be >= 1, got {}", c.sample.steps));
  // sample.steps <= schedule.N is checked when sampling: the default 20 with a shorter
  // schedule must not make the training config an error.
  require(valid_gam(c.sample.gam), "sample.gam",
          fmt::format("must be in [{}, {}], got {}", kMinGam, kMaxGam, c.sample.gam));
  require(c.sample.mu >= 0 && c.sample.mu < 1, "sample.mu", fmt::format("must be in [0, 1), got {}", c.sample.mu));
  require(c.sample.n >= 1, "sample.n", fmt::format("must be >= 1, got {}", c.sample.n));
  require(c.sample.cfg_scale >= 0 && c.sample.cfg_scale <= kMaxCfgScale, "sample.cfg_scale",
          fmt::format("must be in [0, {}], got {}", kMaxCfgScale, c.sample.cfg_scale));
  parse_class_choice(c.sample.label, c.model.num_classes, "config: key 'sample.class'");
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Config config;
  auto fields = schema(config);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("{}: malformed YAML at line {}, column {}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (!root.IsNull()) {
    if (!root.IsMap()) fail("{}: expected a mapping of keys at the top level, got {}", source, describe(root));
    apply_map(fields, root, "", source);
  }
  for (const auto& o : overrides) apply_override(fields, o);
  resolve(config);
  return config;
}

Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  if (yaml_path.empty()) return parse_config("", "defaults", overrides);
  if (!input_exists(yaml_path)) fail("{}: no such config file", yaml_path);
  std::error_code ec;
  if (std::filesystem::is_directory(yaml_path, ec)) fail("{}: is a directory, not a config file", yaml_path);
  std::ifstream in(yaml_path);
  if (!in) fail("{}: cannot open config file", yaml_path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_config(buffer.str(), yaml_path, overrides);
}

std::vector<std::pair<std::string, std::string>> flatten(const Config& config) {
  Config copy = config;
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : schema(copy)) out.emplace_back(f.key, f.get());
  return out;
}

std::string describe_choices() {
  Config scratch;
  std::string out;
  for (const auto& f : schema(scratch))
    if (!f.choices.empty()) out += fmt::format("  {}: {}\n", f.key, f.choices);
  return out;
}

bool may_change_on_resume(const std::string& key) {
  Config scratch;
  for (const auto& f : schema(scratch))
    if (f.key == key) return f.on_resume == OnResume::may_change;
  fail("may_change_on_resume: unknown key '{}'", key);
}

std::string to_yaml(const Config& config) {
  std::string out, section;
  for (const auto& [key, value] : flatten(config)) {
    const auto dot = key.find('.');
    if (dot == std::string::npos) {
      out += fmt::format("{}: {}\n", key, value);
      continue;
    }
    const std::string head = key.substr(0, dot);
    if (head != section) out += fmt::format("{}:\n", head), section = head;
    if (value != "null") out += fmt::format("  {}: {}\n", key.substr(dot + 1), value);
  }
  return out;
}

}  // namespace difftrain
