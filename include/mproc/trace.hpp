// Program-wide timelines: trace_to() records, into one Chrome trace-event file, the
// lifetime of every mproc::Process, every Queue, SimpleQueue, JoinableQueue and Pipe put
// and get (with the time it waited), every executor submit and every chunk of every Pool,
// from this process and from every process forked after the call (Processes, pool
// workers), for Perfetto or `mproc trace-view` (docs/tracing.md).
//
//   int main() {
//     mproc::trace_to("run.json");
//     mproc::Queue<int> q;
//     mproc::Process p([](mproc::Queue<int> q) { q.put(42); }, q);
//     p.start();
//     int v = q.get();
//     p.join();
//   }                              // run.json: a "Processes" and a "Queues" section
//
// Lifetime: tracing lasts until the program ends. The file is written by trace_flush(),
// whenever a Pool that traces to it finishes, at a normal exit, and on std::terminate,
// SIGINT and SIGTERM (as PoolOptions::trace). Events recorded in a child are in shared
// memory as soon as the call that recorded them returns, so a child that crashes loses
// nothing it recorded before. With tracing off, a Queue put or get and a Process start
// cost one branch more.
#pragma once

#include <string>

#include "export.hpp"

namespace mproc {

/// Starts recording this program's timeline into `path` (created, or truncated, now).
/// Pools whose PoolOptions::trace is empty trace to it too; a pool naming the same file
/// shares the timeline. Calling it again with the same file does nothing. Call it before
/// starting the Processes and Pools to trace: processes forked earlier do not record.
/// Thread-safe. Throws std::invalid_argument if the file cannot be written, and
/// std::logic_error if the program already traces to another file.
MPROC_API void trace_to(const std::string& path);

/// Writes the timeline with everything recorded so far, by every process (a Process still
/// running appears with status "running"). Does nothing when trace_to() was not called.
/// Never throws: a write error is reported once on stderr. Thread-safe.
MPROC_API void trace_flush() noexcept;

/// The file trace_to() named, or "" when the program does not trace.
MPROC_API std::string trace_path();

}  // namespace mproc
