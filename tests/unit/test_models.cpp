// Building models from the config: a model that cannot be built is one difftrain::Error
// naming the model.* key, and data of a shape the model cannot take names where the shape
// came from (the data file or the checkpoint).
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "difftrain/comm/communicator.h"
#include "difftrain/config.h"
#include "difftrain/data/hdf5_file.h"
#include "difftrain/io/checkpoint.h"
#include "difftrain/models/embeddings.h"
#include "difftrain/models/mlp.h"
#include "difftrain/models/registry.h"
#include "difftrain/sample/sample.h"
#include "difftrain/train/precision.h"
#include "difftrain/train/trainer.h"
#include "test_util.h"

namespace difftrain {
namespace {

using test::error_of;

ModelConfig mlp_with(std::vector<int64_t> hidden_dims) {
  ModelConfig c;
  c.hidden_dims = std::move(hidden_dims);
  return c;
}

TEST(Models, WidthsNoMachineCanHoldAreRefusedNamingTheKeyAndTheBytes) {
  // 10^11 units on 2-d data: 7e11 weights and biases, 2.8 TB; counted before anything is
  // allocated.
  const std::string m = error_of([] { make_model(mlp_with({100000000000}), {2}); });
  EXPECT_MENTIONS(m, "config: model.type 'mlp', model.hidden_dims [100000000000] makes a model of 7e+11 parameters, 2.8 TB");
  EXPECT_MENTIONS(m, "of memory");
  // Widths whose product overflows int64 are counted without overflowing.
  EXPECT_MENTIONS(error_of([] { make_model(mlp_with({4000000000000000000, 4000000000000000000}), {2}); }),
                  "1.6e+37 parameters");
  // A list of a million widths is cut in the message.
  const std::string many = error_of([] { make_model(mlp_with(std::vector<int64_t>(1000000, 1000000)), {2}); });
  EXPECT_MENTIONS(many, "model.hidden_dims");
  EXPECT_LT(many.size(), 300u);
}

// An allocation LibTorch cannot make (here: under an address-space limit) is a c10::Error
// with an "[enforce fail at ...]" text; it comes out naming the model keys.
TEST(Models, AnAllocationFailureWhileBuildingNamesTheModelKeys) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_AS, &saved), 0);
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;  // the address space in use now
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(pages) * sysconf(_SC_PAGE_SIZE) + (512L << 20);
  ASSERT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
  // 20000 x 20000 float32 weights: 1.6 GB, within any test machine's memory, beyond the limit.
  const std::string m = error_of([] { make_model(mlp_with({20000, 20000}), {2}); });
  ASSERT_EQ(setrlimit(RLIMIT_AS, &saved), 0);
  EXPECT_MENTIONS(m, "config: model.type 'mlp', model.hidden_dims [20000, 20000]: cannot build the model");
  EXPECT_MENTIONS(m, "cannot build the model: DefaultCPUAllocator: can't allocate memory");
}

TEST(Models, TrainingDataOfAShapeTheModelCannotTakeNamesTheFile) {
  test::TempDir dir;
  const std::string file = dir / "images.h5";
  h5::write_datasets(file, {{"pixels", torch::zeros({10, 3, 4})}});
  const Config config = parse_config("", "test", {"data.path=" + file, "data.dataset=pixels", "run_dir=" + (dir / "run")});
  static auto comm = make_communicator(Backend::mpi);
  EXPECT_EQ(error_of([&] { Trainer t(config, *comm); }),
            file + " (dataset 'pixels'): examples of shape [3, 4] do not fit model 'mlp', which takes examples of "
                   "shape [dim] (a dataset of shape [n, dim])");
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
}

TEST(Models, CheckpointOfAShapeTheModelCannotTakeNamesTheCheckpoint) {
  test::TempDir dir;
  Checkpoint c;
  c.config_yaml = to_yaml(parse_config("", "test"));
  c.sample_shape = {3, 4};
  const std::string path = dir / "odd.pt";
  save_checkpoint(path, c);
  SampleOptions o;
  o.checkpoint = path;
  o.out = dir / "samples.h5";
  EXPECT_MENTIONS(error_of([&] { run_sample(o); }), path + " (sample_shape): examples of shape [3, 4] do not fit");
  EXPECT_FALSE(std::filesystem::exists(o.out));
}

// The MLP's one-node forward and backward against the same layers recorded op by op: the
// same outputs, and the same gradients of the weights and of the input, to float rounding.
// The MLP's function through its Sequential's modules ("net"), recorded by autograd op by op:
// the path its forward() takes under autocast.
torch::Tensor forward_by_layer(TimeInputMLPImpl& mlp, const torch::Tensor& x, const torch::Tensor& sigma) {
  auto net = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(mlp.named_children()["net"]);
  if (!net) throw std::runtime_error("the MLP has no Sequential 'net'");
  return net->forward(torch::cat({x, sigma_sincos_embedding(x.size(0), sigma)}, 1));
}

TEST(Models, MlpAsOneAutogradNodeMatchesTheLayersRecordedOneByOne) {
  torch::manual_seed(3);
  TimeInputMLP mlp(2, std::vector<int64_t>{16, 32, 8});
  const auto x = torch::randn({12, 2}, torch::requires_grad()), sigma = torch::rand({12}) * 5 + 0.01;
  const auto weights = torch::randn({12, 2});  // a loss that weighs every output differently

  auto gradients = [&](bool by_layer) {
    mlp->zero_grad();
    x.mutable_grad() = torch::Tensor();
    const auto out = by_layer ? forward_by_layer(*mlp, x, sigma) : mlp->forward(x, sigma);
    (out * weights).sum().backward();
    std::vector<torch::Tensor> g{out.detach(), x.grad().clone()};
    for (const auto& p : mlp->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto fused = gradients(false), layered = gradients(true);
  ASSERT_EQ(fused.size(), 2 + mlp->parameters().size());
  ASSERT_EQ(mlp->parameters().size(), 8u);
  for (std::size_t i = 0; i < fused.size(); ++i) {
    ASSERT_TRUE(fused[i].defined()) << i;
    EXPECT_GT(layered[i].abs().max().item<double>(), 0) << i;
    EXPECT_TRUE(torch::allclose(fused[i], layered[i], 1e-5, 1e-6))
        << (i == 0 ? "output" : i == 1 ? "input gradient" : "parameter gradient " + std::to_string(i - 2))
        << ": max diff " << (fused[i] - layered[i]).abs().max().item<double>();
  }
  // The one-node path is what forward() takes outside autocast; under it, the layers run one
  // by one, so that autocast casts each operation.
  const auto node = mlp->forward(x, sigma).grad_fn()->name();
  EXPECT_NE(node.find("MlpFunction"), std::string::npos) << node;
  {
    AutocastScope bf16(Precision::bf16, torch::kCPU);
    EXPECT_EQ(mlp->forward(x, sigma).scalar_type(), torch::kBFloat16);
  }
}

}  // namespace
}  // namespace difftrain
