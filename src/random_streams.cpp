#include "difftrain/random_streams.h"

#include <ATen/CPUGeneratorImpl.h>

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

at::Generator stream_generator(uint64_t seed, int rank, Stream purpose, uint64_t counter) {
  return at::make_generator<at::CPUGeneratorImpl>(stream_key(seed, rank, purpose, counter));
}

}  // namespace difftrain
