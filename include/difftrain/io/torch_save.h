#pragma once
// Files that PyTorch's torch.load reads as they are, with its default weights_only=True
// (PyTorch 2.6 and newer): torch.save's zip layout holding a pickle of plain dicts, lists,
// tuples, numbers, strings and tensors. LibTorch's own torch::pickle_save tags each dict and
// list with its element types (torch.jit._pickle.restore_type_tag, build_intlist), globals
// that torch.load refuses unless weights_only=False. torch::pickle_load reads both forms.
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

namespace difftrain {

// The bytes of a torch.save file holding `value`: typed lists and dicts are written as
// untagged ones, tensors as torch.save writes them.
std::vector<char> torch_save_bytes(const c10::IValue& value);

// What a torch.save file holds (torch::pickle_load). A failure is one line naming `path`
// and saying which of three it is: a file format newer than this LibTorch reads; a pickle
// this LibTorch's unpickler cannot read (PyTorch's own pickler, as when Python re-saves a
// file with torch.save, uses opcodes that LibTorch 1.x lacks and 2.x reads); or a damaged
// file. `what` names the kind of file: "checkpoint", "classifier file".
c10::IValue load_torch_file(const std::vector<char>& bytes, const std::string& path, const char* what);

// The integers of a list read back by torch::pickle_load: LibTorch's typed int list, or an
// untagged list whose every element is an integer. Throws c10::Error otherwise.
std::vector<int64_t> int_list(const c10::IValue& value);

}  // namespace difftrain
