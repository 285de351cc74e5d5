#include "difftrain/data/hdf5_file.h"

#include <filesystem>

#include "difftrain/error.h"
#include "difftrain/atomic_file.h"
#include "difftrain/input_file.h"

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

void Handle::reset() {
  Lock lock(library_mutex());
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = H5I_INVALID_HID;
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle open_file(const std::string& path) {
  Lock lock(library_mutex());
  silence_errors();
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!input_exists(path)) fail("{}: no such file", path);
  if (fs::is_directory(path, ec)) fail("{}: is a directory, not an HDF5 file", path);
  if (fs::file_size(path, ec) == 0) fail("{}: file is empty", path);
  if (H5Fis_hdf5(path.c_str()) <= 0) fail("{}: not an HDF5 file (or truncated)", path);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) fail("{}: cannot open as HDF5 (truncated or corrupt?)", path);
  return Handle(id, H5Fclose);
}

namespace {

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
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!dims.empty() && dims[0] > 0) {
    // Chunk by whole examples (about 1 MiB a chunk) so readers can fetch rows cheaply.
    std::vector<hsize_t> chunk = dims;
    const hsize_t row_bytes = std::max<hsize_t>(1, t.numel() / dims[0] * t.element_size());
    chunk[0] = std::clamp<hsize_t>((1 << 20) / row_bytes, 1, dims[0]);
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
  }
  const hid_t type = memory_type(t, name);
  Handle ds(H5Dcreate2(file, name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!ds) fail("{}: cannot create dataset '{}'", path, name);
  if (t.numel() > 0 && H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    fail("{}: cannot write dataset '{}'", path, name);
}

}  // namespace

void write_datasets(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& datasets) {
  Lock lock(library_mutex());
  silence_errors();
  write_atomically(path, [&](const std::string& tmp) {
    Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (!file) fail("{}: cannot create HDF5 file", path);
    for (const auto& [name, tensor] : datasets) write_one(file.get(), path, name, tensor);
    if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) fail("{}: cannot flush HDF5 file", path);
  });
}

}  // namespace difftrain::h5
