// Gradient buckets on one rank: gradients live inside the buckets, so backward fills them
// with no copies, and zeroing survives code that drops the gradients.
#include <gtest/gtest.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/comm/grad_buckets.h"
#include "difftrain/config.h"
#include "difftrain/models/registry.h"

namespace difftrain {
namespace {

TEST(GradBuckets, GradientsAreViewsIntoFewBuckets) {
  torch::manual_seed(0);
  auto model = make_model(ModelConfig{}, {2});
  GradBuckets buckets(model->parameters(), /*bucket_mb=*/0.05);  // ~13k floats a bucket
  EXPECT_GT(buckets.num_buckets(), 1u);
  EXPECT_LT(buckets.num_buckets(), model->parameters().size());

  auto loss = model->forward(torch::randn({8, 2}), torch::rand({8}) + 0.1).square().sum();
  loss.backward();
  int64_t total = 0;
  double from_params = 0, from_buckets = 0;
  for (const auto& p : model->parameters()) total += p.numel(), from_params += p.grad().square().sum().item<double>();
  const auto& flat = buckets.flat_grads();
  const int64_t in_buckets = flat.numel();
  from_buckets = flat.square().sum().item<double>();
  EXPECT_EQ(total, in_buckets);
  EXPECT_GT(from_params, 0);
  // Float32 sums in another order: equal to rounding.
  EXPECT_NEAR(from_params, from_buckets, 1e-6 * from_params) << "backward did not accumulate into the buckets";
  // Each gradient is the next slice of the one buffer, in the parameters' order: the layout
  // the optimizer's flat parameters have.
  const auto* next = static_cast<const float*>(flat.data_ptr());
  for (const auto& p : model->parameters()) {
    EXPECT_EQ(p.grad().data_ptr(), next) << "a gradient lives outside its place in the buffer";
    next += p.numel();
  }
  EXPECT_EQ(reinterpret_cast<uintptr_t>(flat.data_ptr()) % 64, 0u) << "the gradients start off a cache line";

  buckets.zero_grad();
  for (const auto& p : model->parameters()) EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.f);
}

TEST(GradBuckets, ZeroGradRebindsDroppedGradients) {
  auto model = make_model(ModelConfig{}, {2});
  GradBuckets buckets(model->parameters(), 25);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // as set_to_none would
  buckets.zero_grad();
  model->forward(torch::randn({4, 2}), torch::ones({4})).sum().backward();
  EXPECT_GT(buckets.flat_grads().abs().sum().item<double>(), 0) << "gradients no longer land in the buckets";
}

TEST(GradBuckets, OneRankLeavesGradientsAndExtrasAlone) {
  auto comm = make_communicator(Backend::mpi);
  auto model = make_model(ModelConfig{}, {2});
  GradBuckets buckets(model->parameters(), 25);
  model->forward(torch::randn({4, 2}), torch::ones({4})).sum().backward();
  std::vector<torch::Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.grad().clone());
  auto extras = torch::tensor({0.25f});
  buckets.allreduce_sum(*comm, extras);
  const auto after = model->parameters();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i].grad()));
  EXPECT_EQ(extras.item<float>(), 0.25f);
  EXPECT_THROW(
      {
        auto wrong = torch::zeros({2});
        buckets.allreduce_sum(*comm, wrong);
      },
      std::exception);
}

}  // namespace
}  // namespace difftrain
