// Mappings a pool worker keeps between calls. A map over an mproc::Array attaches the
// array's segment in every worker, and without this each call would map it afresh (six
// system calls) and, for a big one, fault in every page again: for 16 MB, a few thousand
// page faults per worker per call, more than the work. A worker keeps the mappings of
// the last few segments it attached from its pool's owner. The owner tells it when it
// has let a big one go (its last Segment there died), and the worker unmaps it then; a
// small one (a lock, a Value) stays until newer ones push it out or the worker exits, so
// at most kept_segments_max small segments per worker outlive their owner's handles. A
// kept mapping costs the worker an fd and page tables, never memory of its own while
// the owner holds the segment. Internal to libmproc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include <sys/types.h>

namespace mproc::detail {

/// Segments of at least this many payload bytes are reported by watch_segment_releases.
inline constexpr std::size_t forgotten_segment_bytes = std::size_t{64} << 10;
/// A worker keeps at most this many; a newer one lets the least recently used go.
inline constexpr std::size_t kept_segments_max = 16;

/// From now on this process keeps the mappings of the segments it attaches from a handle
/// that names `owner`, after their last Segment here dies, until forget_kept_segments()
/// names them or newer ones push them out. A forked child keeps nothing.
void keep_attached_segments(pid_t owner);
/// Lets the kept mappings of these segment ids go (unmapped once no Segment here uses
/// them). Ids this process does not keep are ignored.
void forget_kept_segments(std::span<const std::uint64_t> ids);

/// Calls `released(id)` each time this process unmaps a segment of at least
/// forgotten_segment_bytes, from the thread that let it go, as long as the returned token
/// lives. `released` must not create, attach or release segments. A forked child
/// inherits no watch.
std::shared_ptr<void> watch_segment_releases(std::function<void(std::uint64_t)> released);

}  // namespace mproc::detail
