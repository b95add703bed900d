// Timelines of pool work (PoolOptions::trace): every chunk a worker ran, with its worker,
// start, end, bytes and outcome, written as Chrome trace-event JSON that Perfetto and
// chrome://tracing open and `mproc trace-view` draws. Internal to mproc.
//
// Every pool in a program that names the same file writes into one timeline: each pool
// is a "process" of the trace and each worker a "thread". The file is rewritten with
// everything recorded so far whenever one of those pools finishes (join, terminate or
// destruction), so a program that is killed leaves the file of the last pool that ended.
// A pool that names a file after its earlier pools have ended and the file was deleted or
// replaced starts a new timeline. An executor that traces adds a section for its submits
// (SubmitTracer); mproc::trace_to adds the Processes and Queues sections, whose events
// come from the shared slots of src/trace_events.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

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

/// What a chunk ran, for its label. Kept as addresses and resolved to names only when the
/// timeline is written, so that a traced call costs no symbol lookup.
struct TraceCode {
  const void* address = nullptr;         ///< a function pointer's target (dladdr(3))
  const std::type_info* type = nullptr;  ///< else the callable's type (a lambda's, ...)
  const char* label = nullptr;           ///< MapOptions::label (see trace_label), preferred
};

/// A copy of `text` that lives as long as the program, one per distinct text; nullptr for
/// "". Thread-safe.
MPROC_API const char* trace_label(std::string_view text);

/// The TraceCode of callable `f` with label `label` ("" = none).
template <class F>
TraceCode trace_code(const F& f, std::string_view label = {}) {
  TraceCode c;
  if constexpr (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>)
    c.address = reinterpret_cast<const void*>(f);
  else if constexpr (requires { f.f; f.args; })  // a bound call (StoredCall): its function
    return trace_code(f.f, label);
  else if constexpr (requires { f.function(); f.values(); })  // mproc::bind: its function
    return trace_code(f.function(), label);
  else if constexpr (requires { typename F::wrapped_call; })  // map_rows, map_into: the user's
    return trace_code(f.g, label);
  else
    c.type = &typeid(F);
  if (!label.empty()) c.label = trace_label(label);
  return c;
}

/// A chunk's label from the index of its first item (MapOptions::item_label).
using ItemLabel = std::function<std::string(std::size_t)>;

/// trace_label(f(first)); nullptr when that is "" or throws. Never throws.
MPROC_API const char* item_trace_label(const ItemLabel& f, std::size_t first) noexcept;

/// The function a TraceCode names: its demangled symbol, "module+0xoffset" when the
/// address has no symbol (a function of an executable linked without -rdynamic), or the
/// demangled type; "" when it names nothing.
MPROC_API std::string trace_code_name(const TraceCode& code);

/// Inside a catch block: the exception's demangled type and what(), for a failed chunk.
MPROC_API std::string current_error_label();

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
  TraceCode code{};           ///< what ran: the label and function of the trace
  std::string error{};        ///< the first failure's type and what(), "" if none
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

/// The file a pool whose PoolOptions::trace is `option` traces to: `option`, else the
/// file of trace_to() (in the process that called it, not in its forked children), else "".
MPROC_API std::string trace_path_for(const std::string& option);

class FutureStateBase;

/// An executor's submits, each from its submit() to its future's completion, on a section
/// of the timeline of their own, one lane per submit in flight. Thread-safe.
class MPROC_API SubmitTracer {
 public:
  /// A recorder on trace_path_for(option), or null when that is "". Throws
  /// std::invalid_argument if the file cannot be written.
  static std::shared_ptr<SubmitTracer> open(const std::string& option, const char* backend);
  SubmitTracer(std::shared_ptr<TraceFile> file, std::uint32_t section);
  /// Writes the file.
  ~SubmitTracer();
  SubmitTracer(const SubmitTracer&) = delete;
  SubmitTracer& operator=(const SubmitTracer&) = delete;

  struct Token {
    std::uint64_t job = 0;
    std::uint64_t start_ns = 0;
    std::uint32_t lane = 0;
    TraceCode code{};
  };
  /// A submit of `code`, now: takes the lowest free lane.
  Token begin(const TraceCode& code);
  /// Records the submit on `self` once `done` is finished (a done callback on it), and
  /// frees its lane.
  static void watch(const std::shared_ptr<SubmitTracer>& self, const Token& token,
                    FutureStateBase& done);
  /// Frees the lane of a submit that threw.
  void abandon(const Token& token) noexcept;

 private:
  void finish(const Token& token, const FutureStateBase& done) noexcept;

  std::shared_ptr<TraceFile> file_;
  std::uint32_t section_;
};

/// CLOCK_MONOTONIC in nanoseconds.
MPROC_API std::uint64_t trace_clock_ns() noexcept;

/// The calling thread's worker index in the thread pool it belongs to, or kCallerLane.
MPROC_API std::uint32_t current_thread_lane() noexcept;

}  // namespace mproc::detail
