#include "difftrain/data/idx_file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "difftrain/error.h"

namespace difftrain {

namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose_r(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// zlib's own reason when the stream is damaged ("incorrect data check", "unexpected end of
// file"), or "" when it simply ended. zlib puts the path in front; our messages start with it.
std::string gzip_problem(gzFile f, const std::string& path) {
  int code = Z_OK;
  const std::string message = gzerror(f, &code);
  if (code == Z_OK || code == Z_STREAM_END) return "";
  return message.rfind(path + ": ", 0) == 0 ? message.substr(path.size() + 2) : message;
}

// Reads up to `n` bytes; returns how many came (fewer only at the end of the data).
std::size_t read_some(gzFile f, const std::string& path, void* into, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const unsigned ask = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
    const int r = gzread(f, static_cast<char*>(into) + got, ask);
    if (const auto problem = gzip_problem(f, path); r < 0 || !problem.empty())
      fail("{}: corrupt gzip data: {}", path, problem.empty() ? "read error" : problem);
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

uint32_t big_endian(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

}  // namespace

torch::Tensor read_idx_ubyte(const std::string& path, int dims) {
  errno = 0;
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) fail("{}: cannot open: {}", path, errno ? std::strerror(errno) : "out of memory");
  gzbuffer(file.get(), 1 << 18);

  const uint32_t expected_magic = 0x00000800u + static_cast<uint32_t>(dims);
  std::vector<unsigned char> header(4 + 4 * static_cast<std::size_t>(dims));
  if (read_some(file.get(), path, header.data(), 4) < 4)
    fail("{}: truncated: shorter than the 4-byte IDX magic number", path);
  const uint32_t magic = big_endian(header.data());
  if (magic != expected_magic)
    fail("{}: IDX magic number 0x{:08x}, expected 0x{:08x} (unsigned bytes in {} dimensions)", path, magic,
         expected_magic, dims);
  if (read_some(file.get(), path, header.data() + 4, header.size() - 4) < header.size() - 4)
    fail("{}: truncated inside the IDX header ({} dimension sizes expected)", path, dims);

  // The header says how much data follows; a damaged one could say terabytes, so the
  // buffer grows with what actually arrives instead of being allocated up front.
  std::vector<int64_t> sizes;
  int64_t total = 1;
  for (int d = 0; d < dims; ++d) {
    sizes.push_back(big_endian(header.data() + 4 + 4 * d));
    if (sizes.back() > 0 && total > (int64_t{1} << 48) / sizes.back())
      fail("{}: IDX header dimensions [{}...] describe more than 2^48 bytes; the header is corrupt", path,
           fmt::join(sizes, ", "));
    total *= sizes.back();
  }
  auto data = std::make_unique<std::vector<uint8_t>>();
  data->reserve(static_cast<std::size_t>(std::min<int64_t>(total, int64_t{1} << 28)));
  while (static_cast<int64_t>(data->size()) < total) {
    const std::size_t have = data->size();
    const std::size_t want = static_cast<std::size_t>(std::min<int64_t>(total - static_cast<int64_t>(have), 1 << 24));
    data->resize(have + want);
    const std::size_t got = read_some(file.get(), path, data->data() + have, want);
    if (got < want)
      fail("{}: truncated: the IDX header [{}] promises {} data bytes, the file holds {}", path,
           fmt::join(sizes, ", "), total, have + got);
  }
  // Reading past the data checks the gzip trailer (its CRC and length) as well.
  char extra = 0;
  if (read_some(file.get(), path, &extra, 1) != 0)
    fail("{}: more data than the IDX header [{}] describes ({} bytes); the file is corrupt", path,
         fmt::join(sizes, ", "), total);

  auto* owned = data.release();
  return torch::from_blob(
      owned->data(), sizes, [owned](void*) { delete owned; }, torch::kUInt8);
}

}  // namespace difftrain
