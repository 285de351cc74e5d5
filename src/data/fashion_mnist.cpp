#include "difftrain/data/fashion_mnist.h"

#include "difftrain/data/idx_file.h"
#include "difftrain/data/prepare.h"
#include "difftrain/error.h"
#include "difftrain/io/input_file.h"

namespace difftrain {

namespace {

// The package ships the files gzipped; a copy unpacked elsewhere (torchvision's raw/
// folder holds both) is read as it is.
std::string find_idx(const std::string& from_dir, const std::string& stem) {
  const std::string gz = fmt::format("{}/{}.gz", from_dir, stem), plain = fmt::format("{}/{}", from_dir, stem);
  if (input_exists(gz)) return gz;
  if (input_exists(plain)) return plain;
  fail("{}: no such file; install Debian's dataset-fashion-mnist (launch/setup.sh does) or pass --from DIR", gz);
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::vector<std::string> prepare_fashion_mnist(const std::string& out_dir, int64_t shards, const std::string& split,
                                               const std::string& from_dir) {
  if (split != "train" && split != "test") fail("prepare fashion-mnist: --split must be train or test, got '{}'", abbreviate(split));
  refuse_output_inside_input(from_dir, out_dir, "prepare fashion-mnist");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string images_path = find_idx(from_dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx(from_dir, prefix + "-labels-idx1-ubyte");
  const auto images = read_idx_ubyte(images_path, 3);
  const auto labels = read_idx_ubyte(labels_path, 1);
  if (images.size(1) != 28 || images.size(2) != 28)
    fail("{}: images of {}x{} pixels; Fashion-MNIST's are 28x28", images_path, images.size(1), images.size(2));
  if (images.size(0) != labels.size(0))
    fail("{}: {} labels, but {} holds {} images", labels_path, labels.size(0), images_path, images.size(0));
  if (images.size(0) == 0) fail("{}: holds no images", images_path);
  const int64_t classes = static_cast<int64_t>(fashion_mnist_class_names().size());
  const auto bad = (labels >= classes).nonzero();
  if (bad.size(0) > 0) {
    const int64_t i = bad[0][0].item<int64_t>();
    fail("{}: label {} of image {} is outside [0, {}]", labels_path, labels[i].item<int64_t>(), i, classes - 1);
  }
  return write_shards(out_dir, shards, images.unsqueeze(1), labels.to(torch::kInt64), "x", fashion_mnist_class_names());
}

}  // namespace difftrain
