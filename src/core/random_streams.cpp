#include "difftrain/core/random_streams.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <cmath>
#include <mutex>
#include <numeric>

#include "difftrain/error.h"

namespace difftrain {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t stream_key(uint64_t seed, int rank, Stream purpose, uint64_t counter) {
  uint64_t k = splitmix64(seed);
  k = splitmix64(k ^ static_cast<uint64_t>(rank));
  k = splitmix64(k ^ static_cast<uint64_t>(purpose));
  return splitmix64(k ^ counter);
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint64_t kMul0 = 0xD2511F53, kMul1 = 0xCD9E8D57;
  constexpr uint32_t kBump0 = 0x9E3779B9, kBump1 = 0xBB67AE85;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kBump0;
      k[1] += kBump1;
    }
    const uint64_t p0 = kMul0 * c[0], p1 = kMul1 * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
  }
  return c;
}

namespace {

constexpr double kTwoToMinus53 = 1.0 / 9007199254740992.0;

double unit_interval(uint64_t bits) { return static_cast<double>(bits >> 11) * kTwoToMinus53; }  // [0, 1)

__extension__ using uint128 = unsigned __int128;

// Multiply-shift: the bias towards some values is below high / 2^64.
int64_t below(uint64_t bits, int64_t high) {
  return static_cast<int64_t>((static_cast<uint128>(bits) * static_cast<uint64_t>(high)) >> 64);
}

// Fills out[0..n) with fn(u, i), where u is the i-th 64-bit word of the blocks from `first`
// on (two words a block), in parallel: counter-based streams need no sequential state.
template <typename T, typename Fn>
void fill_from_words(T* out, int64_t n, uint64_t first, std::array<uint32_t, 2> key, Fn fn) {
  at::parallel_for(0, (n + 1) / 2, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint64_t block = first + static_cast<uint64_t>(b);
      const auto w = philox4x32_10({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0}, key);
      const uint64_t u0 = w[0] | (static_cast<uint64_t>(w[1]) << 32), u1 = w[2] | (static_cast<uint64_t>(w[3]) << 32);
      fn(out, 2 * b, u0, u1, n);
    }
  });
}

// The same, one value per word.
template <typename T, typename Fn>
void fill_each_word(T* out, int64_t n, uint64_t first, std::array<uint32_t, 2> key, Fn value_of) {
  fill_from_words(out, n, first, key, [&value_of](T* o, int64_t i, uint64_t a, uint64_t b, int64_t n) {
    o[i] = value_of(a);
    if (i + 1 < n) o[i + 1] = value_of(b);
  });
}

uint64_t blocks_for(int64_t values) { return static_cast<uint64_t>((values + 1) / 2); }

std::array<uint32_t, 2> split(uint64_t key) { return {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)}; }

}  // namespace

RandomStream::RandomStream(uint64_t key, torch::Device device) : key_(key), device_(device) {
  if (device_.is_cuda()) {
    // ATen's CUDA generator is Philox4x32-10 whose key is the whole 64-bit seed.
    auto base = at::globalContext().defaultGenerator(device_);
    std::lock_guard<std::mutex> lock(base.mutex());
    generator_ = base.clone();
    generator_->set_current_seed(key_);
  } else if (!device_.is_cpu()) {
    fail("random streams: device {} is neither the CPU nor a CUDA GPU", device_.str());
  }
}

uint64_t RandomStream::take_blocks(uint64_t count) {
  const uint64_t first = next_block_;
  next_block_ += count;
  return first;
}

torch::Tensor RandomStream::normal(torch::IntArrayRef shape) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
  if (generator_) return torch::randn(shape, *generator_, options);
  auto out = torch::empty(shape, options);
  const int64_t n = out.numel();
  // Box-Muller on each block's two words, in double: one block, two normals.
  fill_from_words(out.data_ptr<float>(), n, take_blocks(blocks_for(n)), split(key_),
                  [](float* o, int64_t i, uint64_t a, uint64_t b, int64_t n) {
                    const double radius = std::sqrt(-2.0 * std::log(1.0 - unit_interval(a)));  // 1-u in (0, 1]
                    const double angle = 2.0 * M_PI * unit_interval(b);
                    o[i] = static_cast<float>(radius * std::cos(angle));
                    if (i + 1 < n) o[i + 1] = static_cast<float>(radius * std::sin(angle));
                  });
  return out;
}

torch::Tensor RandomStream::uniform(torch::IntArrayRef shape) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
  if (generator_) return torch::rand(shape, *generator_, options);
  auto out = torch::empty(shape, options);
  const int64_t n = out.numel();
  fill_each_word(out.data_ptr<double>(), n, take_blocks(blocks_for(n)), split(key_), unit_interval);
  return out;
}

torch::Tensor RandomStream::integers(int64_t high, torch::IntArrayRef shape) {
  if (high <= 0) fail("random streams: integers below {} asked for (need at least 1)", high);
  const auto options = torch::TensorOptions().dtype(torch::kInt64).device(device_);
  if (generator_) return torch::randint(high, shape, *generator_, options);
  auto out = torch::empty(shape, options);
  const int64_t n = out.numel();
  fill_each_word(out.data_ptr<int64_t>(), n, take_blocks(blocks_for(n)), split(key_),
                 [high](uint64_t u) { return below(u, high); });
  return out;
}

torch::Tensor RandomStream::permutation(int64_t n) {
  const auto options = torch::TensorOptions().dtype(torch::kInt64).device(device_);
  if (generator_) return torch::randperm(n, *generator_, options);
  auto out = torch::empty({n}, options);
  auto* order = out.data_ptr<int64_t>();
  std::iota(order, order + n, int64_t{0});
  if (n < 2) return out;
  // Fisher-Yates from the top: swap position i with one of 0..i, the i-th draw.
  auto draws = torch::empty({n - 1}, torch::kInt64);
  auto* bits = reinterpret_cast<uint64_t*>(draws.data_ptr<int64_t>());
  fill_each_word(bits, n - 1, take_blocks(blocks_for(n - 1)), split(key_), [](uint64_t u) { return u; });
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[below(bits[n - 1 - i], i + 1)]);
  return out;
}

void RandomStream::seed_default_generators() {
  {
    // The Mersenne Twister's 624 state words, all from this stream.
    auto cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    auto* impl = cpu.get<at::CPUGeneratorImpl>();
    impl->set_current_seed(key_);  // clears the cached normal draws; the state is replaced next
    at::mt19937 engine;
    auto data = engine.data();
    const uint64_t first = take_blocks(data.state_.size() / 4);
    for (std::size_t b = 0; b < data.state_.size() / 4; ++b) {
      const uint64_t block = first + b;
      const auto w = philox4x32_10({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0}, split(key_));
      for (std::size_t j = 0; j < 4; ++j) data.state_[4 * b + j] = w[j];
    }
    data.seed_ = key_;
    data.left_ = 1;  // twist before the first draw, as a freshly seeded engine does
    data.next_ = 0;
    data.seeded_ = true;
    engine.set_data(data);
    impl->set_engine(engine);
  }
  for (int d = 0; d < static_cast<int>(torch::cuda::device_count()); ++d) {
    auto gen = at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(key_);
  }
}

RandomStream random_stream(uint64_t seed, int rank, Stream purpose, uint64_t counter, torch::Device device) {
  return RandomStream(stream_key(seed, rank, purpose, counter), device);
}

}  // namespace difftrain
