#include "difftrain/models/registry.h"

#include <unistd.h>

#include <new>

#include <c10/util/Exception.h>
#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/models/mlp.h"

namespace difftrain {

namespace {

// "7.2 TB": sizes to the nearest unit a person reads at a glance.
std::string human_bytes(long double bytes) {
  static const char* units[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000 && u < 6) bytes /= 1000, ++u;
  return u == 0 ? fmt::format("{} bytes", static_cast<int64_t>(bytes)) : fmt::format("{:.1f} {}", static_cast<double>(bytes), units[u]);
}

long double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<long double>(pages) * page : 0;
}

// LibTorch prefixes allocation failures with the source line and condition that noticed
// them ("[enforce fail at alloc_cpu.cpp:75] err == 0. "), which tell the user nothing.
std::string without_enforce_prefix(const std::string& text) {
  if (text.rfind("[enforce fail at", 0) != 0) return text;
  const auto end = text.find(". ", text.find("] "));
  return end == std::string::npos ? text : text.substr(end + 2);
}

// The MLP's weights and biases, counted before anything is allocated: widths that no
// machine can hold are refused with the key's name instead of an allocator's message (or
// the kernel's OOM killer). Counted in long double so that no width overflows it.
void check_mlp_fits(int64_t dim, const std::vector<int64_t>& hidden_dims) {
  long double parameters = 0, in = static_cast<long double>(dim) + 2;  // + sin/cos of log sigma
  for (const int64_t out : hidden_dims) parameters += (in + 1) * out, in = out;
  parameters += (in + 1) * dim;
  const long double bytes = parameters * sizeof(float), memory = physical_memory_bytes();
  if (memory > 0 && bytes > memory)
    fail("config: key 'model.hidden_dims': {} makes a model of {:.3g} parameters, {} as float32, more than this "
         "machine's {} of memory",
         abbreviate(fmt::format("[{}]", fmt::join(hidden_dims, ", "))), static_cast<double>(parameters),
         human_bytes(bytes), human_bytes(memory));
}

}  // namespace

std::shared_ptr<Denoiser> make_model(const ModelConfig& config, const std::vector<int64_t>& sample_shape,
                                     const std::string& shape_source) {
  if (config.type != "mlp") fail("config: key 'model.type': unknown model '{}'", abbreviate(config.type));
  if (sample_shape.size() != 1 || sample_shape[0] < 1)
    fail("{}: examples of shape [{}] do not fit model 'mlp', which takes examples of shape [dim] (a dataset of "
         "shape [n, dim])",
         shape_source, fmt::join(sample_shape, ", "));
  check_mlp_fits(sample_shape[0], config.hidden_dims);
  try {
    return TimeInputMLP(sample_shape[0], config.hidden_dims).ptr();
  } catch (const c10::Error& e) {
    fail("config: model.type '{}' with model.hidden_dims {}: cannot build the model: {}", config.type,
         abbreviate(fmt::format("[{}]", fmt::join(config.hidden_dims, ", "))), without_enforce_prefix(one_line(e)));
  } catch (const std::bad_alloc&) {
    fail("config: model.type '{}' with model.hidden_dims {}: out of memory while building the model", config.type,
         abbreviate(fmt::format("[{}]", fmt::join(config.hidden_dims, ", "))));
  }
}

}  // namespace difftrain
