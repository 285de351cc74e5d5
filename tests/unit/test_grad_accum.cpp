// Gradient accumulation: a step on k micro-batches of b examples is the step on one batch
// of k*b examples, built here by hand from the same rows and the same sigma/eps draws.
#include <gtest/gtest.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/registry.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {

Communicator& single_rank() {
  static auto comm = make_communicator(Backend::mpi);
  return *comm;
}

// Each element of `got` within `atol` + 1e-5 relative of `want`; the message names the worst one.
void expect_close(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want, const char* what,
                  int64_t step, double atol) {
  ASSERT_EQ(got.size(), want.size());
  ASSERT_FALSE(got.empty());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].sizes(), want[i].sizes()) << what << " " << i;
    EXPECT_TRUE(torch::allclose(got[i], want[i], /*rtol=*/1e-5, atol))
        << what << " " << i << " after step " << step << ": max difference "
        << (got[i] - want[i]).abs().max().item<double>() << ", largest value " << want[i].abs().max().item<double>();
  }
}

std::vector<torch::Tensor> values(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().clone());
  return out;
}

std::vector<torch::Tensor> grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.grad().detach().clone());
  return out;
}

// Eager, and with train.cuda_graph: the step is captured at step 4 and replayed after (on
// the CPU the recorded work runs again at each replay, over the inputs each step copies in).
class GradAccum : public ::testing::TestWithParam<bool> {};

TEST_P(GradAccum, MicroBatchesEqualOneBatchOfTheirUnion) {
  const int64_t k = 4, b = 5, steps = 6;
  test::TempDir dir;
  prepare_swissroll(dir / "data", 1);
  // A warm-up, so the learning rate differs per step; AdamW with its default weight decay.
  const Config config = parse_config(
      "", "test",
      {"data.path=" + (dir / "data"), "run_dir=" + (dir / "run"), "train.steps=10",
       fmt::format("train.batch_size={}", k * b), fmt::format("train.grad_accum={}", k), "train.warmup_steps=5",
       fmt::format("train.cuda_graph={}", GetParam())});
  Trainer trainer(config, single_rank());
  trainer.synchronize();
  ASSERT_EQ(trainer.per_rank_batch(), b);

  // The reference: a copy of the initial weights, an optimizer made the same way.
  auto reference = make_model(config.model, {2});
  load_state_dict(*reference, state_dict(trainer.model()), "initial weights");
  flatten_storage(reference->parameters());
  auto optimizer = make_optimizer(reference->parameters(), config.train);
  const Schedule schedule = make_schedule(config.schedule);
  const Parameterization parameterization = config.model.parameterization;
  const auto points = swissroll_points(k * b * steps);

  for (int64_t s = 1; s <= steps; ++s) {
    std::vector<torch::Tensor> micro_batches, x0, sigma, eps;
    for (int64_t m = 0; m < k; ++m) {
      micro_batches.push_back(points.narrow(0, ((s - 1) * k + m) * b, b));
      // Micro-batch m of step s draws from the streams at counter (s-1)*k + m.
      const auto counter = static_cast<uint64_t>((s - 1) * k + m);
      auto sigma_draws = random_stream(config.seed, 0, Stream::sigma, counter);
      auto eps_draws = random_stream(config.seed, 0, Stream::eps, counter);
      const auto part = generate_train_sample(micro_batches.back(), schedule, sigma_draws, eps_draws);
      x0.push_back(part.x0), sigma.push_back(part.sigma), eps.push_back(part.eps);
    }
    const TrainSample whole{torch::cat(x0), torch::cat(sigma), torch::cat(eps)};
    ASSERT_EQ(whole.x0.size(0), k * b);
    optimizer->zero_grad();
    const auto loss = training_loss(*reference, parameterization, whole);
    loss.backward();

    const auto stats = trainer.step(std::vector<Batch>(micro_batches.begin(), micro_batches.end()), s);
    ASSERT_FALSE(stats.skipped);
    EXPECT_NEAR(stats.loss, loss.item<double>(), 1e-5 * loss.item<double>()) << "step " << s;
    expect_close(grads(trainer.model().parameters()), grads(reference->parameters()), "gradient", s, 1e-8);

    optimizer->set_lr(learning_rate(config.train, s));
    optimizer->step();
    // Adam divides each gradient element by its own size, so an element near zero, whose
    // last bits differ between the two sums, moves its parameter by a visibly different
    // fraction of the learning rate (2e-4 to 1e-3 here): 1e-6 absolute.
    expect_close(values(trainer.model().parameters()), values(reference->parameters()), "parameter", s, 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Step, GradAccum, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Captured" : "Eager"; });

}  // namespace
}  // namespace difftrain
