#pragma once
// How much memory this machine has, and sizes as a person reads them: for the checks that
// refuse work too large for the machine before allocating it (an allocation past what is
// free ends in the kernel's OOM killer, with no message at all).
#include <optional>
#include <string>

namespace difftrain {

// The machine's physical memory; 0 when the system does not say.
long double physical_memory_bytes();

// MemAvailable from /proc/meminfo (what can be allocated without swapping); nothing where
// there is no such file.
std::optional<double> available_memory_bytes();

// "7.2 GB": sizes to the nearest unit a person reads at a glance.
std::string human_bytes(long double bytes);

}  // namespace difftrain
