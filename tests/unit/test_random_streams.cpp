// The random streams: Philox4x32-10 under a 64-bit key, and the values drawn from it.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <set>

#include "difftrain/core/random_streams.h"

using namespace difftrain;

namespace {

// Random123's known-answer vectors for philox4x32 with 10 rounds (counter, key, output).
TEST(RandomStreams, PhiloxMatchesTheKnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// Block b of key k, as the header documents it: counter (b low, b high, 0, 0), key (k low,
// k high), read as two 64-bit words (word 0 low).
std::array<uint64_t, 2> words(uint64_t key, uint64_t b) {
  const auto w = philox4x32_10({uint32_t(b), uint32_t(b >> 32), 0, 0}, {uint32_t(key), uint32_t(key >> 32)});
  return {w[0] | uint64_t(w[1]) << 32, w[2] | uint64_t(w[3]) << 32};
}
__extension__ using uint128 = unsigned __int128;
double unit(uint64_t u) { return double(u >> 11) / 9007199254740992.0; }

TEST(RandomStreams, ValuesAreTheDocumentedFunctionsOfTheBlocks) {
  const uint64_t key = 0x0123456789abcdefull;
  RandomStream stream(key);
  // uniform: one value per word; a second call reads on from the next block.
  const auto u = stream.uniform({3});
  const auto next = stream.uniform({1});
  ASSERT_EQ(u.scalar_type(), torch::kFloat64);
  EXPECT_EQ(u[0].item<double>(), unit(words(key, 0)[0]));
  EXPECT_EQ(u[1].item<double>(), unit(words(key, 0)[1]));
  EXPECT_EQ(u[2].item<double>(), unit(words(key, 1)[0]));
  EXPECT_EQ(next[0].item<double>(), unit(words(key, 2)[0]));

  // normal: Box-Muller on a block's two words, in double, rounded to float.
  const auto z = RandomStream(key).normal({2, 2});
  ASSERT_EQ(z.scalar_type(), torch::kFloat32);
  for (uint64_t b = 0; b < 2; ++b) {
    const auto [a, c] = words(key, b);
    const double radius = std::sqrt(-2.0 * std::log(1.0 - unit(a))), angle = 2.0 * M_PI * unit(c);
    EXPECT_EQ(z.view(-1)[2 * b].item<float>(), float(radius * std::cos(angle))) << b;
    EXPECT_EQ(z.view(-1)[2 * b + 1].item<float>(), float(radius * std::sin(angle))) << b;
  }

  // integers: the high 64 bits of word * high.
  const auto k = RandomStream(key).integers(1000, {2});
  EXPECT_EQ(k[0].item<int64_t>(), int64_t((uint128)words(key, 0)[0] * 1000 >> 64));
  EXPECT_EQ(k[1].item<int64_t>(), int64_t((uint128)words(key, 0)[1] * 1000 >> 64));
}

TEST(RandomStreams, KeysThatDifferOnlyInHighBitsGiveDistinctStreams) {
  const uint64_t key = 0x00000000deadbeefull;
  std::vector<uint64_t> keys{key};
  for (int bit = 32; bit < 64; ++bit) keys.push_back(key ^ (uint64_t{1} << bit));
  std::set<std::vector<float>> normals;
  std::set<std::vector<int64_t>> dropout_masks;
  for (const uint64_t k : keys) {
    const auto z = RandomStream(k).normal({16});
    normals.insert(std::vector<float>(z.data_ptr<float>(), z.data_ptr<float>() + 16));
    // The default generator (dropout, init) takes all 64 bits too.
    RandomStream(k).seed_default_generators();
    const auto mask = (torch::rand({64}) < 0.5).to(torch::kInt64);
    dropout_masks.insert(std::vector<int64_t>(mask.data_ptr<int64_t>(), mask.data_ptr<int64_t>() + 64));
  }
  EXPECT_EQ(normals.size(), keys.size());
  EXPECT_EQ(dropout_masks.size(), keys.size());

  // What this replaces: ATen's CPU generator keeps the low 32 bits of its seed, so the same
  // keys all gave one stream.
  auto low = at::make_generator<at::CPUGeneratorImpl>(keys[0]), high = at::make_generator<at::CPUGeneratorImpl>(keys[1]);
  EXPECT_TRUE(torch::equal(torch::randn({16}, low), torch::randn({16}, high)));

  // Seeds that differ only above bit 32 give other streams for every purpose.
  for (auto purpose : {Stream::sigma, Stream::eps, Stream::dropout}) {
    EXPECT_FALSE(torch::equal(random_stream(7, 0, purpose, 3).normal({16}),
                              random_stream(7 + (uint64_t{1} << 40), 0, purpose, 3).normal({16})));
  }
}

TEST(RandomStreams, ReseedingTheDefaultGeneratorRepeatsItsDraws) {
  RandomStream(42).seed_default_generators();
  const auto a = torch::randn({32});
  RandomStream(42).seed_default_generators();
  EXPECT_TRUE(torch::equal(a, torch::randn({32})));
  RandomStream(43).seed_default_generators();
  EXPECT_FALSE(torch::equal(a, torch::randn({32})));
}

TEST(RandomStreams, DistributionsHaveTheirMomentsAndRanges) {
  const int64_t n = 200000;
  const auto z = RandomStream(1).normal({n}).to(torch::kFloat64);
  // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032; 5 of them.
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.011);
  EXPECT_NEAR(z.var().item<double>(), 1.0, 0.016);
  EXPECT_NEAR((z.abs() > 1.96).to(torch::kFloat64).mean().item<double>(), 0.05, 0.0025);

  const auto u = RandomStream(2).uniform({n});
  EXPECT_GE(u.min().item<double>(), 0.0);
  EXPECT_LT(u.max().item<double>(), 1.0);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 5 * std::sqrt(1.0 / 12 / n));

  const auto k = RandomStream(3).integers(7, {n});
  EXPECT_EQ(k.min().item<int64_t>(), 0);
  EXPECT_EQ(k.max().item<int64_t>(), 6);
  const auto counts = k.bincount();
  ASSERT_EQ(counts.numel(), 7);
  // n/7 = 28571 each, binomial sd 156; 5 sd.
  for (int64_t c = 0; c < 7; ++c) EXPECT_NEAR(counts[c].item<int64_t>(), n / 7.0, 800) << c;
}

TEST(RandomStreams, PermutationsShuffleEveryIndexOnce) {
  const auto p = RandomStream(9).permutation(1000);
  ASSERT_EQ(p.numel(), 1000);
  EXPECT_TRUE(torch::equal(std::get<0>(p.sort()), torch::arange(1000, torch::kInt64)));
  EXPECT_FALSE(torch::equal(p, torch::arange(1000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(p, RandomStream(9).permutation(1000)));
  EXPECT_FALSE(torch::equal(p, RandomStream(10).permutation(1000)));
  // Every index lands in the first position about equally often (Fisher-Yates, unbiased).
  std::vector<int> first(4, 0);
  for (uint64_t key = 0; key < 4000; ++key) ++first[RandomStream(key).permutation(4)[0].item<int64_t>()];
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(first[i], 1000, 140) << i;  // sd 27; 5 sd
  EXPECT_EQ(RandomStream(1).permutation(1).item<int64_t>(), 0);
  EXPECT_EQ(RandomStream(1).permutation(0).numel(), 0);
}

TEST(RandomStreams, DrawsDoNotDependOnHowTheyAreSplitOrOnThreads) {
  // Even-sized calls read whole blocks, so two halves equal one whole.
  RandomStream halves(5);
  const auto first = halves.normal({4096}), second = halves.normal({4096});
  EXPECT_TRUE(torch::equal(torch::cat({first, second}), RandomStream(5).normal({8192})));
  // Counter-based: a large draw split over threads equals the one-thread draw.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = RandomStream(6).normal({100001});
  at::set_num_threads(2);
  const auto two = RandomStream(6).normal({100001});
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, two));
}

TEST(RandomStreams, RefusesAnEmptyRangeAndAnUnknownDevice) {
  EXPECT_THROW(RandomStream(1).integers(0, {2}), std::exception);
  EXPECT_THROW(RandomStream(1, torch::Device(torch::kMeta)), std::exception);
}

// GPU-only tests sit in suites named Gpu*: launch/gpu-check.sh runs them by that name.
TEST(GpuRandomStreams, CudaStreamsDrawOnTheDeviceUnderTheWholeKey) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CUDA stream runs in launch/gpu-check.sh";
  const torch::Device gpu(torch::kCUDA, 0);
  const uint64_t key = 0x00000000deadbeefull;
  const auto a = RandomStream(key, gpu).normal({1024});
  EXPECT_TRUE(a.is_cuda());
  EXPECT_TRUE(torch::equal(a, RandomStream(key, gpu).normal({1024})));
  EXPECT_FALSE(torch::equal(a, RandomStream(key ^ (uint64_t{1} << 48), gpu).normal({1024})));
  EXPECT_TRUE(RandomStream(key, gpu).integers(10, {8}).is_cuda());
  EXPECT_TRUE(RandomStream(key, gpu).permutation(8).is_cuda());
}

}  // namespace
