// Records one forward pass of a difftrain model, for tests/python/test_image_models_torch.py
// to repeat with PyTorch modules and compare:
//
//   model_probe OUT.pt C,H,W [model.KEY=VALUE ...]
//
// The model is built from the config (`make_model`) for examples of shape [C, H, W]; every
// parameter is then overwritten with seeded values of about 0.1 (an untrained DiT outputs
// exactly 0, which would compare nothing), buffers are kept as built. It runs in eval mode
// on a seeded batch: x [3, C, H, W], sigma [3], and for a conditional model labels [3]
// drawn from 0..num_classes ("no label" included). OUT.pt (difftrain's torch_save_bytes, so
// torch.load reads it) holds {"state": name -> tensor, "x", "sigma", "labels" (conditional
// models only), "out"}.
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "difftrain/config.h"
#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/io/torch_save.h"
#include "difftrain/models/registry.h"

namespace {

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    try {
      shape.push_back(std::stoll(part));
    } catch (const std::exception&) {
      difftrain::fail("model_probe: shape '{}': expected sizes separated by commas, e.g. 1,8,8", text);
    }
  }
  return shape;
}

int probe(int argc, char** argv) {
  using namespace difftrain;
  if (argc < 3) fail("usage: model_probe OUT.pt C,H,W [model.KEY=VALUE ...]");
  const std::string out_path = argv[1];
  const auto shape = parse_shape(argv[2]);
  const Config config = parse_config("", "model_probe", std::vector<std::string>(argv + 3, argv + argc));
  const int64_t batch = 3;

  torch::manual_seed(0);
  auto model = make_model(config.model, shape, "model_probe's shape");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(torch::randn(p.sizes(), gen) * 0.1);
  model->eval();

  std::vector<int64_t> x_shape{batch};
  x_shape.insert(x_shape.end(), shape.begin(), shape.end());
  const auto x = torch::randn(x_shape, gen);
  const auto sigma = torch::exp(torch::randn({batch}, gen));
  const auto labels = model->num_classes() > 0 ? torch::randint(0, model->num_classes() + 1, {batch}, gen)
                                               : torch::Tensor();
  const auto out = model->forward(x, sigma, labels);

  auto state = c10::impl::GenericDict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& p : model->named_parameters()) state.insert(p.key(), p.value().detach().clone());
  for (const auto& b : model->named_buffers()) state.insert(b.key(), b.value().detach().clone());
  auto result = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  result.insert("state", state);
  result.insert("x", x);
  result.insert("sigma", sigma);
  if (labels.defined()) result.insert("labels", labels);
  result.insert("out", out);
  write_file_atomically(out_path, torch_save_bytes(result));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return probe(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "model_probe: error: " << e.what() << "\n";
    return 1;
  }
}
