#include "difftrain/models/registry.h"

#include <fmt/ranges.h>

#include "difftrain/error.h"
#include "difftrain/models/mlp.h"

namespace difftrain {

std::shared_ptr<Denoiser> make_model(const ModelConfig& config, const std::vector<int64_t>& sample_shape) {
  if (config.type == "mlp") {
    if (sample_shape.size() != 1)
      fail("model 'mlp' needs data of shape [n, dim]; got examples of shape [{}]", fmt::join(sample_shape, ", "));
    return TimeInputMLP(sample_shape[0], config.hidden_dims).ptr();
  }
  fail("config: key 'model.type': unknown model '{}'", config.type);
}

}  // namespace difftrain
