// The wire protocol between a process pool, its fork server and its workers, and the
// shared control block each worker slot publishes. Internal to libmproc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <sys/types.h>

namespace mproc::detail::pool {

/// Parent -> worker messages (task ring). Each message starts with one of these bytes.
enum class ToWorker : std::uint8_t {
  setup = 1,  ///< u64 job, u64 vtable address, callable state bytes
  chunk = 2,  ///< u64 job, u64 first index, u64 count, u64 ends[count], item bytes
  flush = 3,  ///< u64 job: send the folded partial of a map_reduce job
  drop = 4,   ///< u64 job: the job is over, free its callable
  exit = 5,   ///< flush stdio and exit 0
  /// u64 job, u64 first index, u64 count, u64 start, u64 step: a chunk of a map over an
  /// integer range, whose items travel as their indices alone (TaskVTable::call_index);
  /// item i's argument is start + i * step
  indices = 6,
  /// u64 n, u64 ids[n]: the pool's owner let these segments go; unmap them if kept
  /// (ipc/segment_keep.hpp)
  forget = 7,
};

/// Worker -> parent messages (result ring).
enum class FromWorker : std::uint8_t {
  item_ok = 1,       ///< result bytes of the next item of the current chunk
  item_error = 2,    ///< a RemoteFailure (pool/remote_failure.hpp)
  chunk_end = 3,     ///< u64 nanoseconds the chunk's items took, u64 its start (monotonic ns)
  partial = 4,       ///< u64 job, u8 ok, then the partial's bytes or an error as item_error
  init_failed = 5,   ///< string type, string what: the pool's initializer threw
  item_bad_args = 6, ///< string what: the item's arguments could not be decoded
  /// u64 n, then the results of the next n items of the current chunk back to back, each
  /// TaskVTable::packed_out bytes (links that pack results only: see WorkerLink)
  items_packed = 7,
};

/// Parent <-> fork server datagrams (SOCK_SEQPACKET), fixed size.
struct ServerCommand {
  enum Op : std::uint32_t { spawn = 1, shutdown = 2, kill_all = 3 } op;
  std::uint32_t slot;
};

struct ServerEvent {
  enum Op : std::uint32_t { spawned = 1, exited = 2, spawn_failed = 3 } op;
  std::uint32_t slot;
  pid_t pid;
  /// exited: 0.. exit code, or minus the signal number; spawn_failed: errno.
  std::int32_t status;
};

/// Published by a worker in shared memory so the parent knows what it is doing even after
/// it dies. Written only by the worker; read by the parent.
struct alignas(64) SlotControl {
  /// index + 1 of the item the worker is running; 0 between items. Release-stored after
  /// started_ns and job, so a reader that sees a value sees the matching start time.
  std::atomic<std::uint64_t> running{0};
  std::atomic<std::uint64_t> started_ns{0};
  std::atomic<std::uint64_t> job{0};
  /// When the current chunk started (monotonic ns), for traces of a chunk cut by a crash.
  std::atomic<std::uint64_t> chunk_started_ns{0};
  /// A packed run writes its results to the slot's scratch block in shared memory, then
  /// sends them in one frame. While it runs: the index + 1 of the item whose result is at
  /// the block's start (0: no run), and, once the run is over, how many whole results the
  /// block holds (0 before: then every result before the `running` item's is whole). A
  /// parent that finds the worker dead takes the results that had not been sent from there.
  std::atomic<std::uint64_t> packed_first{0};
  std::atomic<std::uint64_t> packed_written{0};
};

}  // namespace mproc::detail::pool
