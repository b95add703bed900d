// Stack traces of exceptions thrown in pool workers, taken where they are thrown.
// Internal to libmproc.
#pragma once

#include <string>

namespace mproc::detail {

/// While true (per thread), every `throw` records the stack at the throw point; pool
/// workers turn it on around tasks so RemoteError can carry the task's own stack.
void set_capture_throw_traces(bool on) noexcept;

/// The stack recorded at this thread's most recent `throw` (empty if none since the last
/// call), one frame per line; clears it.
std::string take_throw_trace();

/// The current stack, one frame per line, skipping `skip` innermost frames.
std::string current_trace(int skip = 0);

}  // namespace mproc::detail
