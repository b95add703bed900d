// Timelines of pool work (PoolOptions::trace): every chunk a worker ran, with its worker,
// start, end, bytes and outcome, written as Chrome trace-event JSON that Perfetto and
// chrome://tracing open and `mproc trace-view` draws. Internal to mproc.
//
// Every pool in a program that names the same file writes into one timeline: each pool
// is a "process" of the trace and each worker a "thread". The file is rewritten with
// everything recorded so far whenever one of those pools finishes (join, terminate or
// destruction), so a program that is killed leaves the file of the last pool that ended.
// A pool that names a file after its earlier pools have ended and the file was deleted or
// replaced starts a new timeline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "../export.hpp"

namespace mproc::detail {

/// How a traced chunk ended.
enum class TraceStatus : std::uint8_t {
  ok,         ///< every item returned
  error,      ///< some items raised (TraceEvent::errors of them)
  crashed,    ///< its worker died while running item failed_index
  timeout,    ///< item failed_index ran past task_timeout and its worker was killed
  cancelled,  ///< its worker was killed by Future::cancel(kill_running)
};

/// One chunk: consecutive items of one call, run by one worker.
struct TraceEvent {
  const char* method = "task";  ///< the Pool method, a string literal ("map", "apply", ...)
  std::uint64_t job = 0;        ///< the call's number within its pool
  std::uint64_t first = 0;      ///< index of the chunk's first item in the call's input
  std::uint64_t items = 0;      ///< items in the chunk (run, or started, for a failure)
  std::uint64_t start_ns = 0;   ///< CLOCK_MONOTONIC, the clock every process shares
  std::uint64_t end_ns = 0;
  std::uint64_t bytes_in = 0;   ///< serialized arguments (process backend)
  std::uint64_t bytes_out = 0;  ///< serialized results (process backend)
  std::uint64_t failed_index = 0;  ///< the item that crashed or timed out
  std::uint32_t errors = 0;     ///< items that raised
  std::uint32_t lane = 0;       ///< worker slot; kCallerLane: a thread outside the pool
  std::int32_t worker_pid = 0;  ///< process backend: the worker process
  TraceStatus status = TraceStatus::ok;
};

/// The lane of work run by a thread that is not one of the pool's workers (a thread-pool
/// caller that helps while it waits).
inline constexpr std::uint32_t kCallerLane = 0xffffffffu;

class TraceFile;

/// One pool's recorder. Thread-safe.
class MPROC_API Tracer {
 public:
  /// Joins the timeline of `path`, creating (truncating) the file the first time this
  /// program names it. Throws std::invalid_argument naming the file and the reason if it cannot be
  /// written. `backend` and `workers` label the pool in the trace; `bytes`: whether the
  /// events carry byte counts (the thread backend serializes nothing).
  Tracer(const std::string& path, const char* backend, unsigned workers, bool bytes);
  /// Writes the file.
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  void record(const TraceEvent& event);
  /// Rewrites the file with every event recorded so far by the pools that share it.
  /// Never throws: a write error is reported once on stderr.
  void flush() noexcept;

 private:
  std::shared_ptr<TraceFile> file_;
  std::uint32_t pool_;
};

/// CLOCK_MONOTONIC in nanoseconds.
MPROC_API std::uint64_t trace_clock_ns() noexcept;

/// The calling thread's worker index in the thread pool it belongs to, or kCallerLane.
MPROC_API std::uint32_t current_thread_lane() noexcept;

}  // namespace mproc::detail
