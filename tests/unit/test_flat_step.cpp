// The flat step: parameters become views of one buffer without changing what a module or a
// checkpoint sees, and the fused Adam/AdamW pass equals both the same update as tensor
// operations and LibTorch's own per-parameter optimizers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/version.h>

#include "difftrain/config.h"
#include "difftrain/error.h"
#include "difftrain/flat_buffer.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/io/torch_save.h"
#include "difftrain/models/registry.h"
#include "difftrain/train/optimizer.h"
#include "test_util.h"

namespace difftrain {
namespace {

using ::testing::HasSubstr;

std::vector<torch::Tensor> copies(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

TEST(FlatBuffer, ParametersBecomeConsecutiveViewsAndKeepValuesNamesAndGradients) {
  torch::manual_seed(0);
  auto model = make_model(ModelConfig{}, {2});
  const auto before = state_dict(*model);
  const auto params = model->parameters();
  ASSERT_GT(params.size(), 2u);
  const auto buffer = flatten_storage(params);
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  ASSERT_EQ(buffer.numel(), total);

  // The module's own tensors now live in the buffer, one after the other.
  const auto* next = buffer.data_ptr<float>();
  for (const auto& p : model->parameters()) {
    EXPECT_EQ(p.data_ptr<float>(), next);
    EXPECT_TRUE(p.requires_grad());
    next += p.numel();
  }
  // Same names, shapes and values; a checkpoint's state dict does not change.
  const auto after = state_dict(*model);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& item : before) EXPECT_TRUE(torch::equal(item.value(), after[item.key()])) << item.key();
  // Each saved tensor owns just its values, not the whole buffer.
  for (const auto& item : after) EXPECT_EQ(item.value().storage().nbytes(), item.value().numel() * 4u) << item.key();

  // Asking again finds the same buffer instead of moving the values once more.
  EXPECT_EQ(flatten_storage(model->parameters()).data_ptr(), buffer.data_ptr());
  EXPECT_EQ(flat_view(model->parameters(), "test").data_ptr(), buffer.data_ptr());
  // Writing the buffer writes the parameters, and autograd still reaches them.
  {
    torch::NoGradGuard no_grad;
    buffer.add_(1.0);
  }
  EXPECT_TRUE(torch::equal(model->parameters()[0], before[model->named_parameters()[0].key()] + 1));
  model->forward(torch::randn({4, 2}), torch::ones({4})).sum().backward();
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.grad().defined());
}

TEST(FlatBuffer, TensorsOutOfOrderOrOfOtherTypesAreMovedOrRefused) {
  auto a = torch::randn({3}), b = torch::randn({2, 2});
  const auto a0 = a.clone(), b0 = b.clone();
  const auto buffer = flatten_storage({a, b});
  EXPECT_TRUE(torch::equal(buffer, torch::cat({a0, b0.reshape({-1})})));
  // The same tensors in the other order are not the buffer's layout: flat_view refuses them
  // and leaves them where they are; flatten_storage makes a new buffer.
  EXPECT_THAT(test::error_of([&] { flat_view({b, a}, "the optimizer"); }),
              HasSubstr("the optimizer: the 2 tensors are not views of one flat buffer"));
  EXPECT_EQ(a.data_ptr(), buffer.data_ptr());
  const auto swapped = flatten_storage({b, a});
  EXPECT_NE(swapped.data_ptr(), buffer.data_ptr());
  EXPECT_TRUE(torch::equal(swapped, torch::cat({b0.reshape({-1}), a0})));
  EXPECT_THROW(flatten_storage({torch::zeros({2}), torch::zeros({2}, torch::kFloat64)}), std::exception);
  EXPECT_THROW(flatten_storage({}), std::exception);
  EXPECT_THROW(flat_view({}, "test"), std::exception);
}

struct Buffers {
  torch::Tensor values, grads, exp_avg, exp_avg_sq;
  Buffers clone() const { return {values.clone(), grads.clone(), exp_avg.clone(), exp_avg_sq.clone()}; }
};

// Gradients from tiny to large, so that eps matters for some values and not for others.
Buffers random_buffers(int64_t n) {
  return {torch::randn({n}), torch::randn({n}) * torch::pow(10.0, torch::randint(-6, 3, {n})), torch::zeros({n}),
          torch::zeros({n})};
}

TEST(FlatAdam, FusedPassEqualsTheTensorOperations) {
  torch::manual_seed(1);
  for (const bool decoupled : {true, false}) {
    // Large enough to be split over threads.
    auto fused = random_buffers(100003), ops = fused.clone();
    const auto initial = fused.values.clone();
    auto scratch = torch::empty_like(initial);
    AdamHyper h;
    h.lr = 0.01, h.beta1 = 0.8, h.beta2 = 0.95, h.eps = 1e-6, h.weight_decay = 0.1, h.decoupled = decoupled;
    for (int64_t step = 1; step <= 5; ++step) {
      h.step = step;
      fused.grads = torch::randn_like(fused.grads), ops.grads = fused.grads.clone();
      adam_update_fused_cpu(fused.values, fused.grads, fused.exp_avg, fused.exp_avg_sq, h);
      adam_update_tensor_ops(ops.values, ops.grads, ops.exp_avg, ops.exp_avg_sq, h, scratch);
      // ATen's vectorised kernels may fuse a multiply and an add (one rounding, not two), so
      // a value can differ by an ulp or two of the buffer's scale; a wrong formula moves the
      // parameters by about lr.
      for (const auto& [a, b] : {std::pair{fused.values, ops.values}, {fused.exp_avg, ops.exp_avg},
                                 {fused.exp_avg_sq, ops.exp_avg_sq}})
        EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-6 * b.abs().max().item<double>()))
            << (decoupled ? "adamw" : "adam") << " step " << step << ": max diff " << (a - b).abs().max().item<double>();
    }
    EXPECT_GT((fused.values - initial).abs().min().item<double>(), 0) << "some value was not updated";
  }
}

// The kernel FlatAdam calls on a GPU (torch.optim's fused=True), run on the CPU where
// LibTorch 2.x has it there too: it lands where the own fused pass does.
TEST(FlatAdam, PyTorchsFusedKernelEqualsTheOwnPass) {
  if (TORCH_VERSION_MAJOR < 2) {
    auto b = random_buffers(8);
    EXPECT_THROW(adam_update_torch_fused(b.values, b.grads, b.exp_avg, b.exp_avg_sq, AdamHyper{}), Error);
    GTEST_SKIP() << "LibTorch " << TORCH_VERSION << " has no fused Adam kernel";
  }
  torch::manual_seed(2);
  for (const bool decoupled : {true, false}) {
    auto own = random_buffers(100003), torch_fused = own.clone();
    const auto initial = own.values.clone();
    AdamHyper h;
    h.lr = 0.01, h.beta1 = 0.8, h.beta2 = 0.95, h.eps = 1e-6, h.weight_decay = 0.1, h.decoupled = decoupled;
    for (int64_t step = 1; step <= 5; ++step) {
      h.step = step;
      own.grads = torch::randn_like(own.grads), torch_fused.grads = own.grads.clone();
      adam_update_fused_cpu(own.values, own.grads, own.exp_avg, own.exp_avg_sq, h);
      adam_update_torch_fused(torch_fused.values, torch_fused.grads, torch_fused.exp_avg, torch_fused.exp_avg_sq, h);
      // PyTorch's kernel orders the bias corrections differently: a few ulps of the
      // buffer's scale apart, where a wrong formula moves the parameters by about lr.
      for (const auto& [a, b] : {std::pair{torch_fused.values, own.values}, {torch_fused.exp_avg, own.exp_avg},
                                 {torch_fused.exp_avg_sq, own.exp_avg_sq}})
        EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6 * b.abs().max().item<double>()))
            << (decoupled ? "adamw" : "adam") << " step " << step << ": max diff " << (a - b).abs().max().item<double>();
    }
    EXPECT_GT((torch_fused.values - initial).abs().min().item<double>(), 0) << "some value was not updated";
  }
}

// LibTorch's optimizers loop over tensors; the flat optimizer must land on the same values.
TEST(FlatAdam, StepsLikeLibTorchsOptimizersOnSeparateTensors) {
  for (const std::string name : {"adamw", "adam"}) {
    TrainConfig config;
    config.optimizer = parse_name<OptimizerType>(name, "test"), config.lr = 0.02, config.weight_decay = 0.05, config.betas = {0.85, 0.99};
    torch::manual_seed(2);
    std::vector<torch::Tensor> ours, theirs;
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{4, 3}, {3}, {2, 2, 5}}) {
      ours.push_back(torch::randn(shape).requires_grad_());
      theirs.push_back(ours.back().detach().clone().requires_grad_());
    }
    flatten_storage(ours);
    auto flat = make_optimizer(ours, config);
    std::unique_ptr<torch::optim::Optimizer> libtorch;
    if (name == "adamw")
      libtorch = std::make_unique<torch::optim::AdamW>(
          theirs, torch::optim::AdamWOptions(0.02).betas({0.85, 0.99}).weight_decay(0.05));
    else
      libtorch = std::make_unique<torch::optim::Adam>(
          theirs, torch::optim::AdamOptions(0.02).betas({0.85, 0.99}).weight_decay(0.05));
    for (int step = 1; step <= 6; ++step) {
      for (std::size_t i = 0; i < ours.size(); ++i) {
        const auto g = torch::randn(ours[i].sizes()) * std::pow(10.0, step % 3 - 2);
        ours[i].mutable_grad() = g.clone(), theirs[i].mutable_grad() = g.clone();
      }
      flat->step();
      libtorch->step();
    }
    EXPECT_EQ(flat->steps(), 6);
    for (std::size_t i = 0; i < ours.size(); ++i)
      EXPECT_TRUE(torch::allclose(ours[i], theirs[i], 1e-6, 1e-8))
          << name << " parameter " << i << ": max diff " << (ours[i] - theirs[i]).abs().max().item<double>();
  }
}

TEST(FlatAdam, StateDictRoundTripsAndRefusesMixedStepCounts) {
  const TrainConfig config = parse_config("", "defaults").train;
  auto params = copies({torch::randn({3, 2}), torch::randn({4})});
  for (auto& p : params) p.requires_grad_();
  // The optimizer works on the parameters' flat buffer and never moves them itself.
  EXPECT_THAT(test::error_of([&] { make_optimizer(params, config); }), HasSubstr("optimizer: the 2 tensors are not views"));
  flatten_storage(params);
  auto optimizer = make_optimizer(params, config);
  EXPECT_TRUE(optimizer->state_dict().toGenericDict().at("state").toGenericDict().empty()) << "no state before a step";
  for (auto& p : params) p.mutable_grad() = torch::randn(p.sizes());
  optimizer->step();
  optimizer->step();
  const auto saved = optimizer->state_dict();
  auto state = saved.toGenericDict().at("state").toGenericDict();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state.at(1).toGenericDict().at("step").toInt(), 2);
  EXPECT_EQ(state.at(1).toGenericDict().at("exp_avg").toTensor().sizes(), params[1].sizes());

  auto others = copies(params);
  flatten_storage(others);
  auto restored = make_optimizer(others, config);
  // Through the file form checkpoints use (untyped dicts and lists), and through LibTorch's
  // typed one (older checkpoints).
  restored->load_state_dict(torch::pickle_load(torch_save_bytes(saved)));
  auto typed_params = copies(params);
  flatten_storage(typed_params);
  auto from_typed = make_optimizer(typed_params, config);
  from_typed->load_state_dict(torch::pickle_load(torch::pickle_save(saved)));
  for (const auto* o : {restored.get(), from_typed.get()}) {
    EXPECT_EQ(o->steps(), 2);
    EXPECT_TRUE(torch::equal(o->exp_avg(), optimizer->exp_avg()));
    EXPECT_TRUE(torch::equal(o->exp_avg_sq(), optimizer->exp_avg_sq()));
  }

  auto entry = state.at(0).toGenericDict();
  entry.insert_or_assign("step", int64_t{7});
  try {
    restored->load_state_dict(saved);
    FAIL() << "mixed step counts were accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 1 is at step 2, the others at 7"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace difftrain
