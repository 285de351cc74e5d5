#pragma once
// Every random number a rank draws comes from a stream keyed by (seed, rank, purpose,
// counter), where the counter is the training step (or the epoch, for shuffling):
//
//   key = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ rank) ^ purpose) ^ counter)
//
// and the stream is a fresh generator seeded with key. So streams differ between ranks
// and purposes, a run is reproducible for a fixed (seed, world size), and resuming at step
// k needs no saved generator state: step k's streams are recomputed from k.
#include <cstdint>

#include <torch/torch.h>

namespace difftrain {

// The quality figure's streams take their own seed: classifier_shuffle counts epochs, eval
// counts the sets it draws (see eval/evaluate.cpp).
enum class Stream : uint64_t {
  sigma = 1, eps = 2, shuffle = 3, init = 4, sample = 5, cond_drop = 6, hflip = 7, dropout = 8,
  classifier_init = 9, classifier_shuffle = 10, eval = 11
};

uint64_t splitmix64(uint64_t x);
uint64_t stream_key(uint64_t seed, int rank, Stream purpose, uint64_t counter);

// A CPU generator for that stream (CUDA generators are seeded with the same key).
at::Generator stream_generator(uint64_t seed, int rank, Stream purpose, uint64_t counter);

}  // namespace difftrain
