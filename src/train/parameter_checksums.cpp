// dist.check_every: that every rank still holds the same parameters, bit for bit.
#include "difftrain/error.h"
#include "difftrain/train/trainer.h"

namespace difftrain {

namespace {

// A checksum that changes with any bit of the tensor: its float32 bit patterns as
// integers, position-weighted, summed with wrap-around.
int64_t bit_checksum(const torch::Tensor& t) {
  const auto bits = t.detach().cpu().contiguous().view(torch::kInt32).reshape({-1}).to(torch::kInt64);
  const auto weights = torch::arange(bits.numel(), torch::kInt64).remainder(9973) + 1;
  return (bits * weights).sum().item<int64_t>();
}

}  // namespace

void Trainer::check_parameters_in_sync() {
  const auto named = model_->named_parameters();
  auto sums = torch::empty({2 * static_cast<int64_t>(named.size())}, torch::kInt64);
  auto* s = sums.data_ptr<int64_t>();
  for (std::size_t i = 0; i < named.size(); ++i) {
    const int64_t c = bit_checksum(named[i].value());
    // max(c) and max(~c) = ~min(c) over ranks: equal exactly when every rank has the same c.
    s[2 * i] = c;
    s[2 * i + 1] = ~c;
  }
  auto reduced = sums.to(comm_.device());
  comm_.allreduce_max(reduced);
  reduced = reduced.cpu();
  const auto* r = reduced.data_ptr<int64_t>();
  for (std::size_t i = 0; i < named.size(); ++i)
    if (r[2 * i] != ~r[2 * i + 1])
      throw AgreedError(fmt::format("parameters out of sync across ranks: '{}' differs (checksums range from {} to {})",
                                    named[i].key(), ~r[2 * i + 1], r[2 * i]));
}

}  // namespace difftrain
