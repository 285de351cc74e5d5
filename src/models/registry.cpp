#include "difftrain/models/registry.h"

#include <unistd.h>

#include <functional>
#include <new>
#include <type_traits>

#include <c10/util/Exception.h>
#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/memory.h"
#include "difftrain/models/dit.h"
#include "difftrain/models/mlp.h"
#include "difftrain/models/unet.h"

namespace difftrain {

namespace {

// One row per model type. `keys` are the model.* keys that apply to it besides type,
// parameterization and num_classes; `resolve` fills their defaults and checks them;
// `parameters` counts the weights before anything is allocated; `activations` estimates
// the values per example that a forward pass without autograd holds at its peak; `build` makes the module
// for examples of `sample_shape` (after `check_shape` accepted it).
struct ModelType {
  std::string name;
  std::vector<std::string> keys;
  std::function<void(ModelConfig&)> resolve;
  std::function<void(const ModelConfig&, const std::vector<int64_t>& sample_shape, const std::string& shape_source)>
      check_shape;
  std::function<long double(const ModelConfig&, const std::vector<int64_t>& sample_shape)> parameters;
  std::function<double(const ModelConfig&, const std::vector<int64_t>& sample_shape)> activations;
  std::function<std::shared_ptr<Denoiser>(const ModelConfig&, const std::vector<int64_t>& sample_shape)> build;
};

const std::vector<ModelType>& types() {
  static const std::vector<ModelType> all{
      {"mlp", {"hidden_dims"}, resolve_mlp_config,
       [](const ModelConfig&, const std::vector<int64_t>& shape, const std::string& source) {
         check_mlp_shape(shape, source);
       },
       mlp_parameter_count, mlp_activation_count,
       [](const ModelConfig& c, const std::vector<int64_t>& shape) -> std::shared_ptr<Denoiser> {
         return TimeInputMLP(shape[0], *c.hidden_dims).ptr();
       }},
      {"dit", {"patch", "depth", "head_dim", "num_heads", "mlp_ratio", "scaled_input"}, resolve_dit_config, check_dit_shape,
       dit_parameter_count, dit_activation_count,
       [](const ModelConfig& c, const std::vector<int64_t>& shape) -> std::shared_ptr<Denoiser> {
         return make_dit(c, shape).ptr();
       }},
      {"unet", {"ch", "ch_mult", "attn_res", "num_res_blocks", "dropout", "scaled_input"}, resolve_unet_config,
       check_unet_shape, unet_parameter_count, unet_activation_count,
       [](const ModelConfig& c, const std::vector<int64_t>& shape) -> std::shared_ptr<Denoiser> {
         return make_unet(c, shape).ptr();
       }},
  };
  return all;
}

const ModelType& find_type(const std::string& name) {
  for (const auto& t : types())
    if (t.name == name) return t;
  fail("config: key 'model.type': expected one of {}; got '{}'", fmt::join(model_types(), ", "), abbreviate(name));
}

template <typename T>
struct is_optional : std::false_type {};
template <typename T>
struct is_optional<std::optional<T>> : std::true_type {};

// LibTorch prefixes allocation failures with the source line and condition that noticed
// them ("[enforce fail at alloc_cpu.cpp:75] err == 0. "), which tell the user nothing.
std::string without_enforce_prefix(const std::string& text) {
  if (text.rfind("[enforce fail at", 0) != 0) return text;
  const auto end = text.find(". ", text.find("] "));
  return end == std::string::npos ? text : text.substr(end + 2);
}

// "model.type 'dit' with model.depth 6, model.patch 2": the keys that shaped a model.
std::string describe_keys(const ModelConfig& config, const ModelType& type) {
  ModelConfig copy = config;
  std::vector<std::string> parts{fmt::format("model.type '{}'", config.type)};
  visit_model_keys(copy, [&](const char* name, auto& member) {
    using T = std::decay_t<decltype(member)>;
    if constexpr (is_optional<T>::value) {
      if (member && std::find(type.keys.begin(), type.keys.end(), name) != type.keys.end())
        parts.push_back(abbreviate(fmt::format("model.{} {}", name, *member)));
    }
  });
  return fmt::format("{}", fmt::join(parts, ", "));
}

}  // namespace

std::vector<std::string> model_types() {
  std::vector<std::string> names;
  for (const auto& t : types()) names.push_back(t.name);
  return names;
}

void resolve_model_config(ModelConfig& m) {
  const ModelType& type = find_type(m.type);
  visit_model_keys(m, [&](const char* name, auto& member) {
    using T = std::decay_t<decltype(member)>;
    if constexpr (is_optional<T>::value) {
      if (member && std::find(type.keys.begin(), type.keys.end(), name) == type.keys.end())
        fail("config: key 'model.{}' does not apply to model type '{}'", name, m.type);
    }
  });
  if (m.num_classes < 0) fail("config: key 'model.num_classes': must be >= 0 (0 = unconditional), got {}", m.num_classes);
  type.resolve(m);
}

std::string describe_model(const ModelConfig& unresolved) {
  ModelConfig config = unresolved;
  resolve_model_config(config);
  return describe_keys(config, find_type(config.type));
}

namespace {

// The resolved config's type, once the shape is known to fit it (the counts index into it).
const ModelType& checked_type(ModelConfig& config, const std::vector<int64_t>& sample_shape,
                              const std::string& shape_source) {
  resolve_model_config(config);
  const ModelType& type = find_type(config.type);
  type.check_shape(config, sample_shape, shape_source);
  return type;
}

}  // namespace

long double parameter_count(const ModelConfig& unresolved, const std::vector<int64_t>& sample_shape,
                            const std::string& shape_source) {
  ModelConfig config = unresolved;
  return checked_type(config, sample_shape, shape_source).parameters(config, sample_shape);
}

double inference_activations(const ModelConfig& unresolved, const std::vector<int64_t>& sample_shape,
                             const std::string& shape_source) {
  ModelConfig config = unresolved;
  return checked_type(config, sample_shape, shape_source).activations(config, sample_shape);
}

std::shared_ptr<Denoiser> make_model(const ModelConfig& unresolved, const std::vector<int64_t>& sample_shape,
                                     const std::string& shape_source) {
  ModelConfig config = unresolved;  // resolving is idempotent: a parsed config passes through unchanged
  resolve_model_config(config);
  const ModelType& type = find_type(config.type);
  type.check_shape(config, sample_shape, shape_source);
  const long double parameters = type.parameters(config, sample_shape);
  const long double bytes = parameters * sizeof(float), memory = physical_memory_bytes();
  if (memory > 0 && bytes > memory)
    fail("config: {} makes a model of {:.3g} parameters, {} as float32, more than this machine's {} of memory",
         describe_keys(config, type), static_cast<double>(parameters), human_bytes(bytes), human_bytes(memory));
  try {
    return type.build(config, sample_shape);
  } catch (const c10::Error& e) {
    fail("config: {}: cannot build the model: {}", describe_keys(config, type), without_enforce_prefix(one_line(e)));
  } catch (const std::bad_alloc&) {
    fail("config: {}: out of memory while building the model", describe_keys(config, type));
  }
}

}  // namespace difftrain
