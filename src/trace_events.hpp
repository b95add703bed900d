// Program-wide trace events (mproc/trace.hpp): Process lifetimes and Queue operations,
// recorded by whichever process runs them into fixed-size slots of one shared mapping.
//
// Layout. trace_to() maps kTraceSlots slots of 128 bytes (MAP_SHARED | MAP_ANONYMOUS), so
// every process forked after it (Processes, pool fork servers and their workers) writes
// into the same memory. A writer claims the next slot with one fetch_add on a shared
// counter; past the last slot, events are counted as dropped. Memory stays bounded
// whatever the children do.
//
// A slot's `state` is its handshake: 1 while the writer fills it, then a release store of
// 2 (complete) or 3 (an open span: a Process that is running, whose end the owner writes
// later before storing 2). The tracing process reads a slot's fields only after an acquire
// load of 2 or 3, so a child killed in the middle of writing leaves a slot at 1, which is
// skipped: nothing torn is ever written out.
//
// Cost when tracing is off: trace_slots() is null and every hook is behind one branch on it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string_view>

namespace mproc::detail {

inline constexpr std::uint32_t kTraceSlots = std::uint32_t{1} << 16;

enum class TraceSlotKind : std::uint8_t { process = 1, queue = 2 };

struct alignas(64) TraceSlot {
  std::atomic<std::uint32_t> state;  // 0 free, 1 being written, 2 complete, 3 open span
  TraceSlotKind kind;
  std::uint8_t status;         // process: 0 ok, 1 error, 2 crashed; queue: see queue_status
  std::uint8_t first_of_lane;  // queue: the first event of its thread (names the lane)
  std::uint8_t op;             // queue: 0 put, 1 get
  std::int32_t pid;            // the recording process
  std::int32_t tid;            // queue: the recording thread; process: the child's pid
  std::int32_t code;           // process: exit code, or -signal
  std::uint64_t start_ns;
  std::uint64_t end_ns;
  std::uint64_t blocked_ns;  // queue: time spent waiting for room or a message
  std::uint64_t bytes;       // queue: the message's serialized size
  std::uint64_t object;      // queue: its id (creator's pid << 32 | serial)
  char name[32];             // process: its name; queue: the recording process's name
  char text[32];             // process: how it ended; queue: "Queue", "Pipe", ...
};
static_assert(sizeof(TraceSlot) == 128);

struct TraceSlots {
  alignas(64) std::atomic<std::uint64_t> next;
  std::atomic<std::uint64_t> dropped;
  TraceSlot slots[kTraceSlots];
};

/// The slots of this program's trace_to() timeline; null while it is off. Inherited by
/// forked children with the mapping. Set once; an acquire load is a plain load on x86-64.
extern std::atomic<TraceSlots*> trace_slots_;

/// trace_slots_, as the hooks read it.
inline TraceSlots* trace_slots() noexcept { return trace_slots_.load(std::memory_order_acquire); }

/// A running Process `pid` called `name`, started now; returns its slot + 1, or 0 if none
/// was free. Never throws.
std::uint32_t trace_process_start(pid_t pid, std::string_view name) noexcept;
/// The end of the Process recorded in `slot` (trace_process_start's value, not 0), with
/// its exit code or -signal.
void trace_process_exit(std::uint32_t slot, int status) noexcept;

enum class QueueTraceStatus : std::uint8_t { ok = 0, timeout = 1, closed = 2 };

/// One Queue put (op 0) or get (op 1) by the calling thread on queue `object`, of kind
/// `kind` ("Queue", "Pipe", ...). Never throws.
void trace_queue_op(std::uint8_t op, std::uint64_t object, const char* kind,
                    std::uint64_t start_ns, std::uint64_t blocked_ns, std::uint64_t bytes,
                    QueueTraceStatus status) noexcept;

}  // namespace mproc::detail
