#pragma once
// `difftrain prepare`: writes sharded HDF5 datasets.
#include <string>
#include <vector>

#include <torch/torch.h>

namespace difftrain {

// Splits `x` (and optional labels `y`) into `shards` files DIR/shard-00000.h5, ... of
// near-equal sizes, each holding dataset `name` (and `y`). Each file is written atomically.
// Returns the paths written.
std::vector<std::string> write_shards(const std::string& out_dir, int64_t shards, const torch::Tensor& x,
                                      const torch::Tensor& y = {}, const std::string& name = "x");

// The reference's 100 swissroll points, in `shards` files.
std::vector<std::string> prepare_swissroll(const std::string& out_dir, int64_t shards);

// Users' own data: the examples of dataset `name` (and `y`, if every input has it) in
// `inputs`, in order, rewritten into `shards` files. Streams the input a block at a time.
std::vector<std::string> prepare_reshard(const std::vector<std::string>& inputs, const std::string& out_dir,
                                         int64_t shards, const std::string& name = "x");

}  // namespace difftrain
