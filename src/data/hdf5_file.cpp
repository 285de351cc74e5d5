#include "difftrain/data/hdf5_file.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "difftrain/error.h"
#include "difftrain/io/atomic_file.h"
#include "difftrain/io/input_file.h"

namespace difftrain::h5 {

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_, closer_ = o.closer_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

void Handle::reset() { (void)close(); }

bool Handle::close() {
  Lock lock(library_mutex());
  const bool ok = id_ < 0 || !closer_ || closer_(id_) >= 0;
  id_ = H5I_INVALID_HID;  // a failed close releases the id all the same
  return ok;
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle open_file(const std::string& path) {
  Lock lock(library_mutex());
  silence_errors();
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!input_exists(path)) fail("{}: no such file", path);
  if (fs::is_directory(path, ec)) fail("{}: is a directory, not an HDF5 file", path);
  // HDF5 seeks; a FIFO or device would block the open (and the run) instead.
  if (!fs::is_regular_file(path, ec)) fail("{}: not a regular file, which HDF5 needs", path);
  if (fs::file_size(path, ec) == 0) fail("{}: file is empty", path);
  if (H5Fis_hdf5(path.c_str()) <= 0) fail("{}: not an HDF5 file (or truncated)", path);
  // No data sieve: HDF5 would fill its 64 KiB sieve buffer around every partial read of a
  // contiguous dataset, 80 times the bytes of a random 28x28 row; whole-block reads skip
  // it anyway.
  Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_sieve_buf_size(access.get(), 0);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, access.get());
  if (id < 0) fail("{}: cannot open as HDF5 (truncated or corrupt?)", path);
  return Handle(id, H5Fclose);
}

namespace {

// HDF5's own report of a failed call is a stack of several lines; the part a user can act
// on is the system's reason ("errno = 28" in the file driver's entry, No space left on
// device). Call right after the failing call: the next one clears the stack.
std::string system_reason() {
  int code = 0;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* entry, void* found) -> herr_t {
        const char* at = entry->desc ? std::strstr(entry->desc, "errno = ") : nullptr;
        if (at) *static_cast<int*>(found) = std::atoi(at + 8);
        return 0;
      },
      &code);
  return code > 0 ? fmt::format(": {}", std::strerror(code)) : "";
}

hid_t memory_type(const torch::Tensor& t, const std::string& name) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return H5T_NATIVE_FLOAT;
    case torch::kInt64: return H5T_NATIVE_INT64;
    case torch::kUInt8: return H5T_NATIVE_UINT8;
    default: fail("hdf5: cannot write dataset '{}' of dtype {}", name, std::string(t.dtype().name()));
  }
}

void write_one(hid_t file, const std::string& path, const std::string& name, const torch::Tensor& tensor) {
  const auto t = tensor.contiguous().cpu();
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  // Contiguous, not chunked: the training loader reads random single rows, and HDF5 reads a
  // row of a contiguous dataset straight from its place in the file, where a chunked one
  // costs a chunk-index lookup per row and, for chunks that fit HDF5's 1 MiB chunk cache,
  // a read of the whole chunk (tests/bench/bench_loader.cpp measures the layouts).
  const hid_t type = memory_type(t, name);
  Handle ds(H5Dcreate2(file, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds) fail("{}: cannot create dataset '{}'", path, name);
  if (t.numel() > 0 && H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    fail("{}: cannot write dataset '{}'{}", path, name, system_reason());
  if (!ds.close()) fail("{}: cannot write dataset '{}'{}", path, name, system_reason());
}

Handle utf8_string_type() {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

void write_string_list(hid_t file, const std::string& path, const std::string& name,
                       const std::vector<std::string>& values) {
  const Handle type = utf8_string_type();
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle attr(H5Acreate2(file, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr) fail("{}: cannot create attribute '{}'", path, name);
  std::vector<const char*> pointers;
  for (const auto& v : values) pointers.push_back(v.c_str());
  if (n > 0 && H5Awrite(attr.get(), type.get(), pointers.data()) < 0)
    fail("{}: cannot write attribute '{}'{}", path, name, system_reason());
  if (!attr.close()) fail("{}: cannot write attribute '{}'{}", path, name, system_reason());
}

// Writes into the new file `tmp`; messages name `path`, the file the user asked for.
void write_file(const std::string& tmp, const std::string& path, const Datasets& datasets,
                const StringLists& attributes) {
  Lock lock(library_mutex());
  silence_errors();
  Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file) fail("{}: cannot create HDF5 file{}", path, system_reason());
  for (const auto& [name, tensor] : datasets) write_one(file.get(), path, name, tensor);
  for (const auto& [name, values] : attributes) write_string_list(file.get(), path, name, values);
  if (!file.close()) fail("{}: cannot finish writing the HDF5 file{}", path, system_reason());
}

}  // namespace

void write_datasets(const std::string& path, const Datasets& datasets, const StringLists& attributes) {
  StagedFiles file;
  stage_datasets(file, path, datasets, attributes);
  file.publish();
}

void stage_datasets(StagedFiles& files, const std::string& path, const Datasets& datasets,
                    const StringLists& attributes) {
  files.stage(path, [&](const std::string& tmp) { write_file(tmp, path, datasets, attributes); });
}

std::optional<std::vector<std::string>> read_string_list(const std::string& path, const std::string& name) {
  Lock lock(library_mutex());
  const Handle file = open_file(path);
  if (H5Aexists(file.get(), name.c_str()) <= 0) return std::nullopt;
  Handle attr(H5Aopen(file.get(), name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (!attr || H5Tget_class(type.get()) != H5T_STRING || rank > 1)
    fail("{}: attribute '{}' is not a list of strings", path, name);
  const auto n = static_cast<std::size_t>(H5Sget_simple_extent_npoints(space.get()));
  std::vector<std::string> values;
  if (n == 0) return values;
  if (H5Tis_variable_str(type.get()) > 0) {
    const Handle memory = utf8_string_type();
    std::vector<char*> pointers(n, nullptr);
    if (H5Aread(attr.get(), memory.get(), pointers.data()) < 0) fail("{}: cannot read attribute '{}'", path, name);
    for (const char* p : pointers) values.emplace_back(p ? p : "");
    H5Dvlen_reclaim(memory.get(), space.get(), H5P_DEFAULT, pointers.data());
  } else {
    const std::size_t width = H5Tget_size(type.get());
    std::vector<char> bytes(n * width);
    if (H5Aread(attr.get(), type.get(), bytes.data()) < 0) fail("{}: cannot read attribute '{}'", path, name);
    for (std::size_t i = 0; i < n; ++i) {
      const char* start = bytes.data() + i * width;
      values.emplace_back(start, std::find(start, start + width, '\0'));
    }
  }
  return values;
}

}  // namespace difftrain::h5
