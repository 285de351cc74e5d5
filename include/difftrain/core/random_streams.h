#pragma once
// Every random number a rank draws comes from a stream keyed by (seed, rank, purpose,
// counter), where the counter is the training step (or the epoch, for shuffling):
//
//   key = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ rank) ^ purpose) ^ counter)
//
// The stream is Philox4x32-10 keyed by all 64 bits of `key` (low word first), read block by
// block: block b is philox(counter = b, key). Nothing is stored between steps, so streams
// differ between ranks and purposes, a run is reproducible for a fixed (seed, world size),
// and resuming at step k recomputes step k's streams from k.
//
// On the CPU difftrain turns blocks into values itself (below). On a CUDA device the stream
// is ATen's CUDA generator with seed = key and offset 0: the same Philox4x32-10 under the
// same 64-bit key, drawn on the device, but its kernels map blocks to values in their own
// order, so a GPU run draws other numbers than a CPU run of the same seed.
#include <array>
#include <cstdint>
#include <optional>

#include <torch/torch.h>

namespace difftrain {

// The quality figure's streams take their own seed: classifier_shuffle counts epochs, eval
// counts the sets it draws (see eval/evaluate.cpp).
enum class Stream : uint64_t {
  sigma = 1, eps = 2, shuffle = 3, init = 4, sample = 5, cond_drop = 6, hflip = 7, dropout = 8,
  classifier_init = 9, classifier_shuffle = 10, eval = 11
};

// Written into checkpoints; a resume under another scheme would not be bitwise.
inline constexpr const char* kStreamScheme = "philox4x32-10, key splitmix64(seed, rank, stream, counter)";

uint64_t splitmix64(uint64_t x);
uint64_t stream_key(uint64_t seed, int rank, Stream purpose, uint64_t counter);

// One Philox4x32-10 block (Salmon et al., SC'11): four 32-bit words of counter, two of key.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class RandomStream {
 public:
  explicit RandomStream(uint64_t key, torch::Device device = torch::kCPU);

  // Each call reads the blocks after those the previous calls read.
  torch::Tensor normal(torch::IntArrayRef shape);               // float32, N(0, 1)
  torch::Tensor uniform(torch::IntArrayRef shape);              // float64, [0, 1)
  torch::Tensor integers(int64_t high, torch::IntArrayRef shape);  // int64, [0, high)
  torch::Tensor permutation(int64_t n);                         // int64, a shuffle of 0..n-1

  // Dropout and weight initialisation draw from LibTorch's default generators: this puts
  // the stream's key into them (all 64 bits: the CPU generator's whole Mersenne-Twister
  // state is filled from the stream, and each CUDA generator takes the key as its seed).
  void seed_default_generators();

  uint64_t key() const { return key_; }
  const torch::Device& device() const { return device_; }

 private:
  uint64_t key_;
  torch::Device device_;
  uint64_t next_block_ = 0;                 // CPU: the first block the next call reads
  std::optional<at::Generator> generator_;  // CUDA: ATen's Philox generator under key_

  uint64_t take_blocks(uint64_t count);  // reserves `count` blocks, returns the first
  std::array<uint64_t, 2> block64(uint64_t b) const;
};

RandomStream random_stream(uint64_t seed, int rank, Stream purpose, uint64_t counter,
                           torch::Device device = torch::kCPU);

}  // namespace difftrain
