// Random-row read speed of a sharded dataset: ShardedDataset::read of `batch` distinct
// random indices (what the training loader asks for each step), single-threaded, for
// several batch sizes; and the same rows rewritten with other chunk sizes, to show what
// the chunk layout costs.
//
//   build/tests/bench_loader DATA [--batches 64,512] [--chunks 1,16,64,1337] [--seconds 2]
//
// DATA is any data path (a directory of shards, say). Each line of output is one JSON
// object: the layout (rows per chunk, as stored in DATA or rewritten), the batch size, the
// median wall and CPU milliseconds per batch (on a busy machine the wall time includes
// waits for a core; the CPU time does not), examples/s and payload MB/s (bytes as stored)
// by wall time.
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "difftrain/data/hdf5_file.h"
#include "difftrain/data/sharded_dataset.h"

using namespace difftrain;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<int64_t> int_list(const std::string& text) {
  std::vector<int64_t> values;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) values.push_back(std::atoll(item.c_str()));
  return values;
}

// Rows per chunk of dataset `name` in `path` (0: contiguous).
int64_t chunk_rows(const std::string& path, const std::string& name) {
  auto file = h5::open_file(path);
  h5::Handle ds(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  h5::Handle plist(H5Dget_create_plist(ds.get()), H5Pclose);
  if (H5Pget_layout(plist.get()) != H5D_CHUNKED) return 0;
  std::vector<hsize_t> dims(H5S_MAX_RANK);
  H5Pget_chunk(plist.get(), H5S_MAX_RANK, dims.data());
  return static_cast<int64_t>(dims[0]);
}

// A copy of `source`'s shards, dataset `name` chunked by `rows` examples (0: contiguous).
std::string rewrite(ShardedDataset& source, const std::string& name, int64_t rows, const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (std::size_t s = 0; s < source.shards().size(); ++s) {
    const auto& shard = source.shards()[s];
    const auto data = source.read_stored(shard.first, shard.rows).contiguous();
    const std::string path = fmt::format("{}/shard-{:05d}.h5", dir, s);
    h5::Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());
    h5::Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
    h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (rows > 0) {
      auto chunk = dims;
      chunk[0] = std::min<hsize_t>(rows, dims[0]);
      H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    }
    const hid_t type = data.scalar_type() == torch::kUInt8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT;
    h5::Handle ds(H5Dcreate2(file.get(), name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                  H5Dclose);
    H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data_ptr());
  }
  return dir;
}

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void measure(const std::string& layout, const std::string& spec, const std::string& name,
             const std::vector<int64_t>& batches, double seconds) {
  auto data = ShardedDataset::open(spec, name);
  std::mt19937_64 rng(0);
  std::vector<int64_t> order(data.size());
  std::iota(order.begin(), order.end(), 0);
  for (int64_t batch : batches) {
    std::vector<double> times, cpu_times;
    const auto start = Clock::now();
    std::size_t at = order.size();
    while (times.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
      if (at + batch > order.size()) std::shuffle(order.begin(), order.end(), rng), at = 0;
      const std::vector<int64_t> indices(order.begin() + at, order.begin() + at + batch);
      at += batch;
      const auto t0 = Clock::now();
      const double c0 = thread_cpu_seconds();
      const auto x = data.read(indices);
      cpu_times.push_back(thread_cpu_seconds() - c0);
      times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    const double t = median(times);
    fmt::print("{{\"layout\": \"{}\", \"batch\": {}, \"reads\": {}, \"ms_per_batch\": {:.3f}, "
               "\"cpu_ms_per_batch\": {:.3f}, \"examples_per_s\": {:.0f}, \"MB_per_s\": {:.1f}}}\n",
               layout, batch, times.size(), t * 1e3, median(cpu_times) * 1e3, batch / t,
               batch * data.bytes_per_sample() / t / 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: bench_loader DATA [--batches 64,512] [--chunks 1,16,64,1337] [--seconds 2]\n");
    return 2;
  }
  h5::silence_errors();
  const std::string spec = argv[1], name = "x";
  std::vector<int64_t> batches{64, 512}, chunks;
  double seconds = 2;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--batches") batches = int_list(argv[i + 1]);
    else if (flag == "--chunks") chunks = int_list(argv[i + 1]);
    else if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
  }
  auto source = ShardedDataset::open(spec, name);
  fmt::print("{{\"data\": \"{}\", \"examples\": {}, \"shards\": {}, \"bytes_per_example\": {}}}\n", spec,
             source.size(), source.shards().size(), source.bytes_per_sample());
  measure(fmt::format("as stored: {} rows per chunk", chunk_rows(source.shards()[0].path, name)), spec, name,
          batches, seconds);
  const auto scratch = std::filesystem::temp_directory_path() / fmt::format("bench_loader.{}", ::getpid());
  for (int64_t rows : chunks) {
    const auto dir = rewrite(source, name, rows, (scratch / std::to_string(rows)).string());
    measure(rows > 0 ? fmt::format("{} rows per chunk", rows) : "contiguous", dir, name, batches, seconds);
    std::filesystem::remove_all(dir);
  }
  std::filesystem::remove_all(scratch);
  return 0;
}
