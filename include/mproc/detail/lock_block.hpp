// The size of a robust lock block in shared memory: Lock, RLock, Value's and Array's
// lock, and the Queue's and Manager's own locks each take one. Internal to mproc.
#pragma once

#include <cstddef>

namespace mproc::detail {

/// Bytes of a lock block; Value and Array put one at the start of their segment.
inline constexpr std::size_t kLockBlockBytes = 128;

}  // namespace mproc::detail
