// Data parallelism over MPI ranks (run by ctest under mpirun -n 2 and -n 4): averaged
// gradients equal the single-rank gradient of the global batch, parameters stay identical
// on every rank, the data partition covers the dataset, streams differ per rank.
#include <gtest/gtest.h>

#include <filesystem>


#include "difftrain/comm/grad_buckets.h"
#include "difftrain/config.h"
#include "difftrain/core/diffusion.h"
#include "difftrain/core/random_streams.h"
#include "difftrain/data/batch_loader.h"
#include "difftrain/data/prepare.h"
#include "difftrain/data/swissroll.h"
#include "difftrain/error.h"
#include "difftrain/models/registry.h"
#include "difftrain/train/optimizer.h"
#include "difftrain/train/trainer.h"
#include "mpi_test_env.h"
#include "test_util.h"

namespace difftrain {
namespace {

using test::all_gather;
using test::SharedDir;
using test::world;

std::shared_ptr<Denoiser> toy_model() {
  torch::manual_seed(123);  // the same initial weights on every rank
  return make_model(ModelConfig{}, {2});
}

// One global batch with fixed x0, sigma and eps, the same on every rank.
TrainSample global_batch(int64_t batch) {
  torch::manual_seed(7);
  auto x0 = swissroll_points().index_select(0, torch::randint(100, {batch}, torch::kLong));
  auto sigma = log_linear_schedule(200, 0.005, 10).sigmas().index_select(0, torch::randint(200, {batch}, torch::kLong));
  return {x0, sigma.view({batch, 1}), torch::randn({batch, 2})};
}

TrainSample slice(const TrainSample& s, int64_t begin, int64_t n) {
  return {s.x0.narrow(0, begin, n), s.sigma.narrow(0, begin, n), s.eps.narrow(0, begin, n)};
}

// Each rank scales its loss by 1 / ranks, as the trainer does: the gradients' sum over
// ranks is then the global batch's gradient.
TEST(DataParallel, SummedGradientOfScaledLossesEqualsGlobalBatchGradient) {
  const int64_t per_rank = 8, global = per_rank * world().size();
  const auto batch = global_batch(global);

  auto reference = toy_model();  // every rank computes the whole batch on its own, too
  training_loss(*reference, Parameterization::eps, batch).backward();

  auto model = toy_model();
  const auto loss =
      training_loss(*model, Parameterization::eps, slice(batch, world().rank() * per_rank, per_rank)) / world().size();
  loss.backward();
  // A tiny bucket size forces several buckets, so packing across buckets is exercised too.
  GradBuckets buckets(model->parameters(), /*bucket_mb=*/0.01);
  ASSERT_GT(buckets.num_buckets(), 1u);
  auto extras = torch::tensor({loss.item<float>()});
  buckets.allreduce_sum(world(), extras);

  const auto got = model->named_parameters(), want = reference->named_parameters();
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i]->grad(), want[i]->grad(), 1e-5, 1e-6)) << got[i].key();
  EXPECT_NEAR(extras.item<float>(), training_loss(*reference, Parameterization::eps, batch).item<float>(), 1e-5);
}

// k micro-batches on each of the ranks against one batch k x ranks times larger on one
// rank; the last backward, armed, starts every bucket's all-reduce but bucket 0's itself,
// last bucket first.
TEST(DataParallel, BucketsStartDuringTheLastBackwardAndAverageLikeTheGlobalBatch) {
  const int64_t per_rank = 4, k = 3, ranks = world().size(), rank = world().rank();
  const auto batch = global_batch(per_rank * ranks * k);
  auto reference = toy_model();
  training_loss(*reference, Parameterization::eps, batch).backward();

  auto model = toy_model();
  GradBuckets buckets(model->parameters(), /*bucket_mb=*/0.01);
  ASSERT_GT(buckets.num_buckets(), 2u);
  buckets.zero_grad();
  for (int64_t m = 0; m < k; ++m) {
    const auto loss =
        training_loss(*model, Parameterization::eps, slice(batch, (m * ranks + rank) * per_rank, per_rank)) / (k * ranks);
    if (m + 1 == k) buckets.arm(world());
    loss.backward();
    if (m + 1 < k) {
      EXPECT_TRUE(buckets.started_during_backward().empty()) << "micro-batch " << m;
    }
  }
  const auto& started = buckets.started_during_backward();
  ASSERT_EQ(started.size(), buckets.num_buckets() - 1);
  for (std::size_t i = 0; i < started.size(); ++i) EXPECT_EQ(started[i], buckets.num_buckets() - 1 - i) << i;

  auto extras = torch::tensor({7.f * static_cast<float>(rank + 1)});
  buckets.allreduce_sum(world(), extras);
  const auto got = model->named_parameters(), want = reference->named_parameters();
  ASSERT_EQ(got.size(), want.size());
  ASSERT_GT(got.size(), 0u);
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i]->grad(), want[i]->grad(), 1e-5, 1e-6)) << got[i].key();
  EXPECT_FLOAT_EQ(extras.item<float>(), 7.f * static_cast<float>(ranks * (ranks + 1)) / 2);
}

// A parameter outside the graph keeps its bucket (the one that would start first) from
// completing during backward, and with it every later one, since all ranks start buckets in
// one order; allreduce_sum starts them all, and the extras (a failure flag raised after
// backward) reach every rank.
TEST(DataParallel, AnIncompleteBucketHoldsTheOthersBackUntilAfterBackward) {
  const int64_t per_rank = 4, ranks = world().size(), rank = world().rank();
  const auto batch = global_batch(per_rank * ranks);
  auto reference = toy_model();
  training_loss(*reference, Parameterization::eps, batch).backward();

  auto model = toy_model();
  auto unused = torch::zeros({5}, torch::requires_grad());
  auto params = model->parameters();
  params.push_back(unused);
  GradBuckets buckets(params, /*bucket_mb=*/0.01, /*extras=*/2);
  ASSERT_GT(buckets.num_buckets(), 2u);
  buckets.zero_grad();
  buckets.arm(world());
  (training_loss(*model, Parameterization::eps, slice(batch, rank * per_rank, per_rank)) / ranks).backward();
  EXPECT_TRUE(buckets.started_during_backward().empty()) << "the last bucket waits for the unused parameter";

  auto extras = torch::tensor({1.f, rank == 0 ? 1.f : 0.f});
  buckets.allreduce_sum(world(), extras);
  EXPECT_FLOAT_EQ(extras[0].item<float>(), static_cast<float>(ranks));
  EXPECT_FLOAT_EQ(extras[1].item<float>(), 1.f) << "rank 0's late flag";
  EXPECT_TRUE(torch::equal(unused.grad(), torch::zeros({5})));
  const auto got = model->named_parameters(), want = reference->named_parameters();
  ASSERT_EQ(got.size(), want.size());
  ASSERT_GT(got.size(), 0u);
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i]->grad(), want[i]->grad(), 1e-5, 1e-6)) << got[i].key();
}

TEST(DataParallel, AdamStepsOnRanksMatchOneRank) {
  const int64_t per_rank = 8, global = per_rank * world().size(), steps = 20;
  TrainConfig adamw;
  adamw.weight_decay = 0.01;
  auto one = test::flattened(toy_model()), many = test::flattened(toy_model());
  auto opt_one = make_optimizer(one->parameters(), adamw), opt_many = make_optimizer(many->parameters(), adamw);
  GradBuckets buckets(many->parameters(), 25);
  for (int64_t s = 0; s < steps; ++s) {
    const auto batch = global_batch(global);  // fixed per step, shared by all
    opt_one->zero_grad();
    training_loss(*one, Parameterization::eps, batch).backward();
    opt_one->step();

    buckets.zero_grad();
    (training_loss(*many, Parameterization::eps, slice(batch, world().rank() * per_rank, per_rank)) / world().size())
        .backward();
    auto extras = torch::zeros({1});
    buckets.allreduce_sum(world(), extras);
    opt_many->step(buckets.flat_grads());
  }
  const auto a = one->named_parameters(), b = many->named_parameters();
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::allclose(a[i].value(), b[i].value(), 1e-4, 1e-5))
        << a[i].key() << " max diff " << (a[i].value() - b[i].value()).abs().max().item<float>();
}

Config toy_config(const SharedDir& dir, int64_t steps, int64_t batch = 100) {
  if (world().rank() == 0) prepare_swissroll(dir / "data", 3);
  world().barrier();
  return parse_config("", "test",
                      {"data.path=" + (dir / "data"), "run_dir=" + (dir / "run"), fmt::format("train.steps={}", steps),
                       fmt::format("train.batch_size={}", batch), "train.log_every=10", "train.checkpoint_every=1000",
                       "dist.check_every=5"});
}

std::vector<torch::Tensor> train_params(const Config& config) {
  Trainer trainer(config, world());
  trainer.synchronize();
  trainer.run();
  std::vector<torch::Tensor> out;
  for (const auto& p : trainer.model().parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(DataParallel, ParametersIdenticalOnAllRanksBitwise) {
  SharedDir dir;
  const auto params = train_params(toy_config(dir, 20));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto everyone = all_gather(params[i]);
    for (int r = 1; r < world().size(); ++r)
      EXPECT_TRUE(torch::equal(everyone[0], everyone[r])) << "parameter " << i << " differs on rank " << r;
  }
}

TEST(DataParallel, SameSeedAndWorldReproduceTheRunExactly) {
  SharedDir a, b;
  const auto first = train_params(toy_config(a, 15)), second = train_params(toy_config(b, 15));
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(torch::equal(first[i], second[i])) << "parameter " << i;
}

// train.cuda_graph: the step recorded after 3 eager steps and replayed (on the CPU the
// recorded work runs at each replay), with small buckets whose all-reduces start inside the
// recorded backward.
TEST(DataParallel, CapturedStepTrainsLikeTheEagerStepBitwise) {
  SharedDir a, b;
  auto eager = toy_config(a, 15), captured = toy_config(b, 15);
  eager.dist.bucket_mb = captured.dist.bucket_mb = 0.02;
  captured.train.cuda_graph = true;
  const auto x = train_params(eager), y = train_params(captured);
  ASSERT_EQ(x.size(), y.size());
  ASSERT_FALSE(x.empty());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(torch::equal(x[i], y[i])) << "parameter " << i;
}

TEST(DataParallel, RandomStreamsDifferPerRank) {
  const auto schedule = log_linear_schedule(200, 0.005, 10);
  for (auto stream : {Stream::sigma, Stream::eps}) {
    const auto draws = all_gather(random_stream(0, world().rank(), stream, 1).normal({64}));
    for (int r = 0; r < world().size(); ++r)
      for (int q = r + 1; q < world().size(); ++q)
        EXPECT_FALSE(torch::equal(draws[r], draws[q])) << "ranks " << r << " and " << q << " share a stream";
  }
}

// The stream key as documented, computed here without the library's code: splitmix64 is
// Vigna's reference mixer (its first output from state 0 is 0xE220A8397B1DCDAF).
uint64_t splitmix64_by_hand(uint64_t state) {
  uint64_t z = state + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t stream_key_by_hand(uint64_t seed, uint64_t rank, uint64_t stream, uint64_t counter) {
  return splitmix64_by_hand(
      splitmix64_by_hand(splitmix64_by_hand(splitmix64_by_hand(seed) ^ rank) ^ stream) ^ counter);
}

TEST(DataParallel, StreamKeysAreDistinctAndFollowTheDocumentedFormula) {
  ASSERT_EQ(splitmix64_by_hand(0), 0xE220A8397B1DCDAFull);
  const uint64_t seed = 5;
  const int rank = world().rank();
  const std::vector<Stream> streams{Stream::sigma, Stream::eps, Stream::shuffle, Stream::init, Stream::sample};
  const int64_t counters = 16;
  std::vector<int64_t> keys;
  std::vector<torch::Tensor> draws;
  for (auto stream : streams) {
    for (int64_t counter = 0; counter < counters; ++counter) {
      const uint64_t key = stream_key(seed, rank, stream, counter);
      EXPECT_EQ(key, stream_key_by_hand(seed, rank, static_cast<uint64_t>(stream), counter))
          << "rank " << rank << ", stream " << static_cast<int>(stream) << ", counter " << counter;
      // The same key through two paths: the library's stream, and one keyed here.
      const auto draw = random_stream(seed, rank, stream, counter).normal({8});
      EXPECT_TRUE(torch::equal(draw, RandomStream(key).normal({8}))) << "counter " << counter;
      keys.push_back(static_cast<int64_t>(key));
      draws.push_back(draw);
    }
  }
  // Every (rank, stream, counter) of every rank: distinct keys and distinct draws.
  const auto all_keys = all_gather(torch::tensor(keys)).view({-1});
  const auto all_draws = all_gather(torch::stack(draws)).view({-1, 8});
  const int64_t expected = world().size() * static_cast<int64_t>(streams.size()) * counters;
  ASSERT_EQ(all_keys.numel(), expected);
  ASSERT_EQ(all_draws.size(0), expected);
  EXPECT_EQ(std::get<0>(torch::_unique(all_keys)).numel(), expected) << "two streams share a key";
  EXPECT_EQ(std::get<0>(torch::unique_dim(all_draws, 0)).size(0), expected) << "two streams share a draw";
}

// With more and with fewer shard files than ranks, and unequal shards: one epoch of every
// rank's loader covers the dataset exactly once, and each rank reads about 1/world of it.
TEST(DataParallel, PartitionCoversTheDatasetOncePerEpoch) {
  for (int64_t shards : {int64_t{1}, int64_t{3}, int64_t{7}}) {
    SharedDir dir;
    const int64_t total = 1001;  // not divisible by 2 or 4: unequal shares and shards
    if (world().rank() == 0) write_shards(dir / "data", shards, torch::randn({total, 4}));
    world().barrier();
    auto dataset = ShardedDataset::open(dir / "data");
    const auto share = rank_share(dataset.size(), world().rank(), world().size());
    const int64_t batch = 7;
    BatchLoader loader(std::move(dataset), share, batch, 0, world().rank());
    auto counts = torch::zeros({total}, torch::kInt64);
    for (int64_t consumed = 0; consumed < share.size(); consumed += batch) {
      const auto idx = loader.batch_indices(consumed);
      for (int64_t k = 0; k < batch && consumed + k < share.size(); ++k) counts[idx[k]] += 1;
    }
    world().allreduce_sum(counts);
    EXPECT_TRUE(torch::equal(counts, torch::ones({total}, torch::kInt64))) << shards << " shards";

    // Bytes: one epoch through the loader reads this rank's share, plus at most the
    // read-ahead (prefetch depth 2, and the batch being read) -- never other ranks' data.
    const int64_t row = 4 * 4;
    for (int64_t p = 0; p < share.size(); p += batch) loader.next();
    const int64_t read = loader.bytes_read();
    EXPECT_GE(read, share.size() * row);
    EXPECT_LE(read, (share.size() + 3 * batch) * row) << "rank " << world().rank();
    EXPECT_LE(std::abs(share.size() - total / world().size()), 1);
    const auto per_rank = all_gather(torch::tensor({read})).view({-1});
    if (world().rank() == 0) {
      std::cout << shards << " shards, " << total * row << " bytes in all; bytes read per rank:";
      for (int r = 0; r < world().size(); ++r) std::cout << " " << per_rank[r].item<int64_t>();
      std::cout << "\n";
    }
  }
}

TEST(DataParallel, DesynchronisedParameterIsCaught) {
  SharedDir dir;
  Trainer trainer(toy_config(dir, 5), world());
  trainer.synchronize();
  EXPECT_NO_THROW(trainer.check_parameters_in_sync());
  if (world().rank() == world().size() - 1) {
    torch::NoGradGuard no_grad;
    trainer.model().named_parameters()["net.4.bias"][3] += 1e-6f;
  }
  try {
    trainer.check_parameters_in_sync();
    ADD_FAILURE() << "a desynchronised parameter went unnoticed";
  } catch (const AgreedError& e) {
    EXPECT_NE(std::string(e.what()).find("net.4.bias"), std::string::npos) << e.what();
  }
}

TEST(DataParallel, GlobalBatchNotDivisibleByRanksIsAnError) {
  SharedDir dir;
  const int64_t batch = world().size() * 10 + 1;
  try {
    Trainer trainer(toy_config(dir, 5, batch), world());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(std::to_string(batch)), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(world().size()) + " ranks"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace difftrain
