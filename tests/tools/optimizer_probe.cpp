// Records what difftrain's optimizer does, for tests/python/test_adamw_torch.py to repeat
// with torch.optim and compare:
//
//   optimizer_probe OUT.pt [train.KEY=VALUE ...]
//
// The optimizer is built from the config (`make_optimizer`) and stepped as the trainer
// does (`learning_rate`, `set_lr`, `step`) on a few parameters of different
// shapes, with gradients of changing scale. OUT.pt (difftrain's torch_save_bytes, so torch.load reads
// it) holds {"steps": [{"lr", "params_before", "grads", "state_before", "params_after",
// "state_after"}, ...]}, the states as `state_dict()` exports them for checkpoints.
#include <cmath>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "difftrain/config.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"
#include "difftrain/io/torch_save.h"
#include "difftrain/train/optimizer.h"

namespace {

c10::impl::GenericList tensor_list(const std::vector<torch::Tensor>& tensors) {
  c10::impl::GenericList out(c10::TensorType::get());
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

// The exported state as a checkpoint carries it: serialised now, so later steps (which
// update the optimizer's tensors in place) do not change what was recorded.
c10::IValue saved_state(const difftrain::FlatAdam& optimizer) {
  const auto bytes = difftrain::torch_save_bytes(optimizer.state_dict());
  return torch::pickle_load(bytes);
}

int probe(int argc, char** argv) {
  using namespace difftrain;
  if (argc < 2) fail("usage: optimizer_probe OUT.pt [train.KEY=VALUE ...]");
  const std::string out_path = argv[1];
  const Config config = parse_config("", "optimizer_probe", std::vector<std::string>(argv + 2, argv + argc));
  const int64_t steps = 8;

  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{4, 3}, {3}, {2, 2, 5}})
    params.push_back(torch::randn(shape).requires_grad_());
  flatten_storage(params);
  auto optimizer = make_optimizer(params, config.train);

  c10::impl::GenericList records(c10::AnyType::get());
  for (int64_t s = 1; s <= steps; ++s) {
    // Scales from tiny to large (Adam's eps matters for the tiny ones); parameter 1 gets a
    // zero gradient at step 3, so weight decay acts alone there.
    const double scale = std::pow(10.0, static_cast<double>(s % 4) * 1.5 - 3.0);
    std::vector<torch::Tensor> grads;
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto g = torch::randn(params[i].sizes()) * scale;
      if (s == 3 && i == 1) g.zero_();
      grads.push_back(g);
      params[i].mutable_grad() = g.clone();
    }
    const double lr = learning_rate(config.train, s);
    auto record = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
    record.insert("lr", lr);
    record.insert("params_before", tensor_list(params));
    record.insert("grads", tensor_list(grads));
    record.insert("state_before", saved_state(*optimizer));
    optimizer->set_lr(lr);
    optimizer->step();
    record.insert("params_after", tensor_list(params));
    record.insert("state_after", saved_state(*optimizer));
    records.push_back(record);
  }
  auto result = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  result.insert("steps", records);
  const auto bytes = torch_save_bytes(result);
  std::ofstream out(out_path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) fail("{}: cannot write", out_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return probe(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "optimizer_probe: error: " << e.what() << "\n";
    return 1;
  }
}
