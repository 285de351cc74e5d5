// gtest main for the multi-rank tests: every rank runs every test; rank 0 prints the
// usual report, other ranks print only their failures; the process fails if any rank did.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "mpi_test_env.h"

namespace difftrain::test {

namespace {
std::unique_ptr<Communicator> g_world;

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      fmt::print(stderr, "[rank {}] {}:{}: failure\n{}\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }

 private:
  int rank_;
};
}  // namespace

Communicator& world() { return *g_world; }

SharedDir::SharedDir() {
  auto name = torch::zeros({256}, torch::kUInt8);
  if (world().rank() == 0) {
    owner_ = std::make_unique<TempDir>();
    std::copy(owner_->path().begin(), owner_->path().end(), name.data_ptr<uint8_t>());
  }
  world().broadcast(name, 0);
  path_ = reinterpret_cast<const char*>(name.data_ptr<uint8_t>());
}

SharedDir::~SharedDir() { world().barrier(); }

torch::Tensor all_gather(const torch::Tensor& t) {
  std::vector<int64_t> shape{world().size()};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  auto out = torch::zeros(shape, t.options());
  out[world().rank()].copy_(t);
  world().allreduce_sum(out);
  return out;
}

}  // namespace difftrain::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using difftrain::test::g_world;
  g_world = difftrain::make_communicator(difftrain::Backend::mpi);
  const int rank = g_world->rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new difftrain::test::FailurePrinter(rank));
  }
  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  auto any = torch::tensor({static_cast<int64_t>(failed)});
  g_world->allreduce_max(any);
  if (rank == 0 && any.item<int64_t>() && !failed) fmt::print(stderr, "a test failed on another rank (see above)\n");
  g_world.reset();
  return any.item<int64_t>() ? 1 : 0;
}
