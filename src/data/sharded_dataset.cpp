#include "difftrain/data/sharded_dataset.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <sstream>

#include <fmt/ranges.h>

#include "difftrain/error.h"

namespace difftrain {
namespace fs = std::filesystem;

namespace {

bool has_h5_extension(const fs::path& p) {
  const auto ext = p.extension().string();
  return ext == ".h5" || ext == ".hdf5";
}

std::vector<std::string> expand_one(const std::string& item) {
  std::error_code ec;
  if (fs::is_directory(item, ec)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(item, ec))
      if (e.is_regular_file() && has_h5_extension(e.path())) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail("{}: directory holds no *.h5 or *.hdf5 files", item);
    return files;
  }
  if (item.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    std::vector<std::string> files;
    if (::glob(item.c_str(), 0, nullptr, &g) == 0)
      for (std::size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    if (files.empty()) fail("{}: pattern matches no files", item);
    return files;  // glob sorts
  }
  return {item};
}

struct DatasetInfo {
  std::vector<int64_t> dims;
  torch::ScalarType dtype;  // what reads return (HDF5 converts the stored type to it)
  std::string stored;       // the stored type, for messages: "uint8", "float32", ...
};

// The type reads ask HDF5 for.
hid_t hdf5_type(torch::ScalarType t) {
  switch (t) {
    case torch::kUInt8: return H5T_NATIVE_UINT8;
    case torch::kInt64: return H5T_NATIVE_INT64;
    case torch::kFloat64: return H5T_NATIVE_DOUBLE;
    default: return H5T_NATIVE_FLOAT;
  }
}

std::string stored_type_name(H5T_class_t cls, std::size_t size, bool is_signed) {
  if (cls == H5T_INTEGER) return fmt::format("{}int{}", is_signed ? "" : "u", 8 * size);
  if (cls == H5T_FLOAT) return fmt::format("float{}", 8 * size);
  return fmt::format("a non-numeric type of {} bytes", size);
}

DatasetInfo inspect(hid_t file, const std::string& path, const std::string& name, Contents contents) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) fail("{}: has no dataset '{}'", path, name);
  h5::Handle ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds) fail("{}: '{}' is not a dataset", path, name);
  h5::Handle space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1) fail("{}: dataset '{}' is a scalar; expected [n, ...]", path, name);
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  h5::Handle type(H5Dget_type(ds.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const std::size_t size = H5Tget_size(type.get());
  const bool is_signed = cls == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_2;
  const std::string stored = stored_type_name(cls, size, is_signed);
  const std::vector<int64_t> shape(dims.begin(), dims.end());
  if (contents == Contents::labels) {
    // Class ids: any integer type reads as int64; floats only when every value is whole
    // (checked by labels()), never truncated.
    const bool integer = cls == H5T_INTEGER && (size == 1 || size == 2 || size == 4 || size == 8);
    const bool floating = cls == H5T_FLOAT && (size == 4 || size == 8);
    if (!integer && !floating)
      fail("{}: dataset '{}' holds {}; labels are class ids stored as integers", path, name, stored);
    if (rank != 1)
      fail("{}: dataset '{}' ({}) has shape [{}]; labels are one class id per example, shape [n]{}", path, name, stored,
           fmt::join(shape, ", "), rank == 2 && shape[1] == 1 ? " (store y.reshape(-1))" : "");
    return {shape, integer ? torch::kInt64 : torch::kFloat64, stored};
  }
  if (cls == H5T_FLOAT && size == 4) return {shape, torch::kFloat32, stored};
  if (cls == H5T_INTEGER && size == 1 && !is_signed) return {shape, torch::kUInt8, stored};
  fail("{}: dataset '{}' holds {}; examples are float32 or uint8 (images, scaled to [-1, 1])", path, name, stored);
}

}  // namespace

std::vector<std::string> expand_shard_spec(const std::string& spec) {
  std::vector<std::string> files;
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ','))
    if (!item.empty())
      for (auto& f : expand_one(item)) files.push_back(std::move(f));
  if (files.empty()) fail("data path '{}' names no files", spec);
  return files;
}

ShardedDataset ShardedDataset::open(const std::string& spec, const std::string& dataset) {
  return open_files(expand_shard_spec(spec), dataset, spec, Contents::examples);
}

ShardedDataset ShardedDataset::open_files(const std::vector<std::string>& paths, const std::string& dataset,
                                          const std::string& spec, Contents contents) {
  h5::Lock lock(h5::library_mutex());
  ShardedDataset d;
  d.dataset_ = dataset;
  bool first = true;
  std::string first_path;
  for (const auto& path : paths) {
    auto file = h5::open_file(path);
    const auto info = inspect(file.get(), path, dataset, contents);
    const std::vector<int64_t> shape(info.dims.begin() + 1, info.dims.end());
    if (first) {
      d.sample_shape_ = shape, d.dtype_ = info.dtype, d.stored_type_ = info.stored, first_path = path, first = false;
    } else if (shape != d.sample_shape_ || info.dtype != d.dtype_) {
      fail("{}: dataset '{}' holds {} examples of shape [{}], but {} holds {} examples of shape [{}]", path,
           dataset, info.stored, fmt::join(shape, ", "), first_path, d.stored_type_, fmt::join(d.sample_shape_, ", "));
    }
    d.shards_.push_back({path, info.dims[0], d.size_});
    d.size_ += info.dims[0];
    d.files_.emplace_back();  // reopened on first read; keeps open handles to what is read
  }
  if (d.size_ == 0) fail("{}: dataset '{}' has no examples", spec, dataset);
  return d;
}

std::optional<ShardedDataset> ShardedDataset::labels(const std::string& name) const {
  h5::Lock lock(h5::library_mutex());
  std::vector<std::string> paths;
  for (const auto& shard : shards_) {
    const auto f = h5::open_file(shard.path);
    if (H5Lexists(f.get(), name.c_str(), H5P_DEFAULT) <= 0) return std::nullopt;
    paths.push_back(shard.path);
  }
  auto labels = open_files(paths, name, fmt::format("{}", fmt::join(paths, ",")), Contents::labels);
  for (std::size_t i = 0; i < shards_.size(); ++i)
    if (labels.shards_[i].rows != shards_[i].rows)
      fail("{}: dataset '{}' has {} rows but dataset '{}' has {}; every example needs one label", shards_[i].path,
           name, labels.shards_[i].rows, dataset_, shards_[i].rows);
  if (labels.dtype_ == torch::kFloat64) {
    // Float labels pass only as whole numbers a class id can be: 4.5 is no class, and
    // truncating it would train silently on the wrong one.
    for (const auto& shard : labels.shards_) {
      if (shard.rows == 0) continue;
      const auto v = labels.read_stored(shard.first, shard.rows);
      const auto bad = (~torch::isfinite(v)) | (v != v.floor()) | (v.abs() > 1e9);
      if (bad.any().item<bool>()) {
        const int64_t row = bad.nonzero()[0][0].item<int64_t>();
        fail("{}: dataset '{}' ({}) row {} holds {}, not a class id; store labels as integers", shard.path, name,
             labels.stored_type_, row, v[row].item<double>());
      }
    }
  }
  return labels;
}

int64_t ShardedDataset::bytes_per_sample() const {
  const int64_t n = std::accumulate(sample_shape_.begin(), sample_shape_.end(), int64_t{1}, std::multiplies<>());
  return n * torch::elementSize(dtype_);
}

hid_t ShardedDataset::file(std::size_t shard) {
  if (!files_[shard]) files_[shard] = h5::open_file(shards_[shard].path);
  return files_[shard].get();
}

torch::Tensor ShardedDataset::read(const std::vector<int64_t>& indices) { return as_read(gather(indices)); }

torch::Tensor ShardedDataset::as_read(torch::Tensor stored) const {
  // In place: one float buffer instead of three (a 512-image batch is 1.6 MB each).
  if (dtype_ == torch::kUInt8) return stored.to(torch::kFloat32).div_(127.5).sub_(1);
  if (dtype_ == torch::kFloat64) return stored.to(torch::kInt64);  // labels, whole numbers (labels())
  return stored;
}

torch::Tensor ShardedDataset::read_stored(int64_t first, int64_t count) {
  std::vector<int64_t> indices(count);
  std::iota(indices.begin(), indices.end(), first);
  return gather(indices);
}

torch::Tensor ShardedDataset::gather(const std::vector<int64_t>& indices) {
  h5::Lock lock(h5::library_mutex());
  const int64_t n = static_cast<int64_t>(indices.size());
  std::vector<int64_t> out_shape{n};
  out_shape.insert(out_shape.end(), sample_shape_.begin(), sample_shape_.end());
  const int64_t row_bytes = bytes_per_sample();

  // Read each shard's distinct rows in ascending order, one H5Dread per run of consecutive
  // rows, then scatter them to their places in the batch. (One read of the union of the
  // runs would be fewer calls but is far slower: HDF5 1.10 walks every chunk under the
  // union's bounding box, and building the union grows with the square of the runs.)
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return indices[a] < indices[b]; });
  auto raw = torch::empty(out_shape, dtype_);
  std::vector<int64_t> row_of(n);  // where each batch slot's row lands in `raw`
  int64_t next = 0;
  std::size_t s = 0;
  for (int64_t k = 0; k < n;) {
    const int64_t g = indices[order[k]];
    if (g < 0 || g >= size_) fail("dataset read: index {} out of range [0, {})", g, size_);
    while (g >= shards_[s].first + shards_[s].rows) ++s;
    const Shard& shard = shards_[s];
    // Gather this shard's rows (ascending, distinct) into one selection.
    std::vector<int64_t> rows;
    int64_t k_end = k;
    for (; k_end < n && indices[order[k_end]] < shard.first + shard.rows; ++k_end) {
      const int64_t local = indices[order[k_end]] - shard.first;
      if (rows.empty() || rows.back() != local) rows.push_back(local);
      row_of[order[k_end]] = next + static_cast<int64_t>(rows.size()) - 1;
    }
    h5::Handle ds(H5Dopen2(file(s), dataset_.c_str(), H5P_DEFAULT), H5Dclose);
    h5::Handle space(H5Dget_space(ds.get()), H5Sclose);
    std::vector<hsize_t> mem_dims(out_shape.begin(), out_shape.end());
    mem_dims[0] = rows.size();
    h5::Handle mem(H5Screate_simple(static_cast<int>(mem_dims.size()), mem_dims.data(), nullptr), H5Sclose);
    void* dst = static_cast<char*>(raw.data_ptr()) + next * row_bytes;
    std::vector<hsize_t> start(out_shape.size(), 0), count(out_shape.begin(), out_shape.end());
    for (std::size_t r = 0; r < rows.size();) {
      std::size_t run = 1;
      while (r + run < rows.size() && rows[r + run] == rows[r] + static_cast<int64_t>(run)) ++run;
      count[0] = run;
      start[0] = rows[r];
      H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
      start[0] = r;
      H5Sselect_hyperslab(mem.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
      if (H5Dread(ds.get(), hdf5_type(dtype_), mem.get(), space.get(), H5P_DEFAULT, dst) < 0)
        fail("{}: failed to read rows {}..{} of dataset '{}' (truncated or corrupt file?)", shard.path, rows[r],
             rows[r] + static_cast<int64_t>(run) - 1, dataset_);
      r += run;
    }
    bytes_read_ += static_cast<int64_t>(rows.size()) * row_bytes;
    // Non-finite data would poison every rank's gradients; name where it is.
    if (dtype_ == torch::kFloat32) {
      auto block = raw.narrow(0, next, static_cast<int64_t>(rows.size())).reshape({static_cast<int64_t>(rows.size()), -1});
      auto bad = (~torch::isfinite(block)).any(1);
      if (bad.any().item<bool>())
        fail("{}: dataset '{}' row {} holds a NaN or Inf", shard.path, dataset_,
             rows[bad.nonzero()[0][0].item<int64_t>()]);
    }
    next += static_cast<int64_t>(rows.size());
    k = k_end;
  }
  return raw.narrow(0, 0, next).index_select(0, torch::tensor(row_of, torch::kLong));
}

}  // namespace difftrain
