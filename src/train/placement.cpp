#include "difftrain/train/placement.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace difftrain {

namespace {

// One row per rank in one int64 tensor, summed over ranks (each rank fills only its own
// row): the hostname's bytes, then the numbers below.
constexpr int kNameWords = 8;  // 64 bytes; longer hostnames are cut
enum Field { kLocalRank = kNameWords, kLocalSize, kCuda, kDeviceIndex, kBegin, kEnd, kFields };

struct RankPlace {
  std::string host;
  int64_t local_rank, local_size;
  std::string device;
  int64_t begin, end;
};

// The shards holding examples [begin, end), as "2" or "2-3", with the first one's file.
std::string shards_of(const std::vector<Shard>& shards, int64_t begin, int64_t end) {
  int64_t first = -1, last = -1;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    if (shards[s].rows == 0 || shards[s].first >= end || shards[s].first + shards[s].rows <= begin) continue;
    if (first < 0) first = static_cast<int64_t>(s);
    last = static_cast<int64_t>(s);
  }
  if (first < 0) return "none";
  const auto name = std::filesystem::path(shards[first].path).filename().string();
  return first == last ? fmt::format("shard {} ({})", first, name)
                       : fmt::format("shards {}-{} (from {})", first, last, name);
}

}  // namespace

std::string describe_placement(Communicator& comm, const std::vector<Shard>& shards, RankShare share) {
  const int world = comm.size();
  auto table = torch::zeros({world, kFields}, torch::kInt64);
  auto* row = table.data_ptr<int64_t>() + static_cast<int64_t>(comm.rank()) * kFields;
  char host[kNameWords * 8 + 1] = {};
  ::gethostname(host, sizeof host - 1);
  std::memcpy(row, host, kNameWords * 8);
  const auto device = comm.device();
  row[kLocalRank] = comm.local_rank(), row[kLocalSize] = comm.local_size();
  row[kCuda] = device.is_cuda(), row[kDeviceIndex] = device.has_index() ? device.index() : -1;
  row[kBegin] = share.begin, row[kEnd] = share.end;
  auto reduced = table.to(comm.device());
  comm.allreduce_sum(reduced);
  if (comm.rank() != 0) return "";
  table = reduced.cpu();

  std::vector<RankPlace> places;
  for (int r = 0; r < world; ++r) {
    const auto* v = table.data_ptr<int64_t>() + static_cast<int64_t>(r) * kFields;
    char name[kNameWords * 8 + 1] = {};
    std::memcpy(name, v, kNameWords * 8);
    places.push_back({name, v[kLocalRank], v[kLocalSize],
                      v[kCuda] ? fmt::format("cuda:{}", v[kDeviceIndex]) : std::string("cpu"), v[kBegin], v[kEnd]});
  }
  std::map<std::string, int> ranks_on;
  for (const auto& p : places) ++ranks_on[p.host];
  std::string out = fmt::format("placement: {} rank{} on {} node{}\n", world, world == 1 ? "" : "s", ranks_on.size(),
                                ranks_on.size() == 1 ? "" : "s");
  if (world <= kPlacementRankLines) {
    for (int r = 0; r < world; ++r) {
      const auto& p = places[r];
      out += fmt::format("  rank {} on {}: local rank {} of {}, {}, examples {}-{} in {}\n", r, p.host, p.local_rank,
                         p.local_size, p.device, p.begin, p.end - 1, shards_of(shards, p.begin, p.end));
    }
    return out;
  }
  // Many ranks: one line per node, its ranks' range and devices.
  for (const auto& [host, count] : ranks_on) {
    int lo = world, hi = -1;
    std::vector<std::string> devices;
    for (int r = 0; r < world; ++r)
      if (places[r].host == host) lo = std::min(lo, r), hi = std::max(hi, r), devices.push_back(places[r].device);
    out += fmt::format("  {}: {} ranks ({}..{}), devices {}\n", host, count, lo, hi, fmt::join(devices, ","));
  }
  return out;
}

}  // namespace difftrain
