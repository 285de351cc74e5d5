#pragma once
// `difftrain prepare fashion-mnist`: Zalando's Fashion-MNIST, read from the IDX files of
// Debian's dataset-fashion-mnist package, as sharded HDF5.
#include <string>
#include <vector>

namespace difftrain {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Label i's name.
const std::vector<std::string>& fashion_mnist_class_names();

// Split "train" (60000 images) or "test" (10000) of the IDX files in `from_dir`
// ({train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not) into `shards` files of
// uint8 x [n, 1, 28, 28], int64 y [n] and the class names. Returns the paths written.
std::vector<std::string> prepare_fashion_mnist(const std::string& out_dir, int64_t shards,
                                               const std::string& split = "train",
                                               const std::string& from_dir = kFashionMnistDir);

}  // namespace difftrain
