#pragma once
// Running sums of a feature set (count, sum, sum of outer products, in float64), from
// which its mean and covariance follow. Sums add up across batches and across ranks, so a
// set spread over many ranks gives the statistics of the whole set.
#include <cstdint>

#include <torch/torch.h>

#include "difftrain/comm/communicator.h"
#include "difftrain/eval/frechet.h"

namespace difftrain {

class FeatureMoments {
 public:
  explicit FeatureMoments(int64_t dim);

  // Adds the rows of `features` [b, dim] (any floating dtype; b may be 0).
  void add(const torch::Tensor& features);
  // Replaces this rank's sums by the sums over every rank (a collective: every rank calls it).
  void allreduce(Communicator& comm);

  int64_t count() const { return count_; }
  int64_t dim() const { return sum_.size(0); }
  // Mean and unbiased covariance (divided by count - 1); needs count >= 2.
  Gaussian gaussian() const;

 private:
  int64_t count_ = 0;
  torch::Tensor sum_, outer_;  // [dim], [dim, dim]
};

// The Gaussian of one whole feature set [n, d], n >= 2.
Gaussian fit_gaussian(const torch::Tensor& features);

}  // namespace difftrain
