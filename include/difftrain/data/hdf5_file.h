#pragma once
// Small RAII layer over the HDF5 C API: handles that close themselves, and whole-tensor
// writes that land atomically (temporary file, fsync, rename).
//
// HDF5 caches what it writes: on a full disk H5Dwrite succeeds and the failure shows only
// when the dataset or file is closed. Writers therefore close with close(), which reports
// it; the destructor's close is for readers and error paths, where nothing is left to lose.
#include <hdf5.h>

#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "difftrain/io/atomic_file.h"

namespace difftrain::h5 {

// An owned hid_t, closed with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  void reset();
  // Closes now; false when HDF5 reports a failure (data that did not reach the disk).
  [[nodiscard]] bool close();
  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// HDF5 prints its error stack to stderr by default; we report our own one-line errors.
void silence_errors();

// Held around every HDF5 call: a cluster's HDF5 may be built without thread safety, and
// the batch loader reads on its own thread. Recursive, so nested helpers may take it too.
std::recursive_mutex& library_mutex();
using Lock = std::lock_guard<std::recursive_mutex>;

// Opens `path` read-only; an error names the file and whether it is missing or not HDF5.
Handle open_file(const std::string& path);

using Datasets = std::vector<std::pair<std::string, torch::Tensor>>;
// Lists of strings kept as attributes of the file's root group (variable-length UTF-8).
using StringLists = std::vector<std::pair<std::string, std::vector<std::string>>>;

// Writes each (name, tensor) as a dataset (float32, int64 or uint8) into a new file at
// `path`, atomically: nothing is left at `path` unless the whole file was written.
void write_datasets(const std::string& path, const Datasets& datasets, const StringLists& attributes = {});
// The same, staged with other files that must land together (see StagedFiles).
void stage_datasets(StagedFiles& files, const std::string& path, const Datasets& datasets,
                    const StringLists& attributes = {});

// The root attribute `name` of the file at `path` as a list of strings (variable- or
// fixed-length, as h5py writes either), or nothing when the file has no such attribute.
std::optional<std::vector<std::string>> read_string_list(const std::string& path, const std::string& name);

}  // namespace difftrain::h5
