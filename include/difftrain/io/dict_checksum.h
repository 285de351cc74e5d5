#pragma once
// The checksum that checkpoints and classifier files carry: a "checksum" entry
// {algorithm, value} holding XXH3-64 of every other entry's values (not their pickle bytes),
// so that a flipped bit anywhere is caught and Python re-saving the same values is not.
#include <string>

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>

namespace difftrain {

// Adds the "checksum" entry over the dict's other entries (`where` names the file in errors).
void insert_checksum(c10::impl::GenericDict& d, const std::string& where);

// Whether the dict has a "checksum" entry (files written before checksums have none); when
// it has, an Error naming `where` unless it matches.
bool verify_checksum(const c10::impl::GenericDict& d, const std::string& where);

}  // namespace difftrain
