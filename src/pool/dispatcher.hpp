// The dispatcher core the process pool and the mpi pool share: the job book, what a
// worker's messages do to their jobs, chunk sizing and framing, handing chunks to workers,
// taking submissions in, and close / cancel_pending / join / terminate. Each pool derives
// from Dispatcher and keeps only what differs: how its workers start, die and are reached
// (shared-memory rings and pidfds, or MPI messages), and how its dispatcher waits.
// Internal to libmproc and libmproc_mpi.
//
// The pool `Pool`, whose job entries are `Entry` and whose workers are `Slot`, provides:
//   std::size_t tell_job(const Entry&, pool::ToWorker)  // flush or drop, to j.setup
//   void put_code(std::vector<std::byte>&, const Job&)  // the call's code, for setup
//   bool give_chunk(Slot&)                 // one more chunk for this worker, if any
//   bool can_take_chunk(const Slot&) const // the worker may be given a chunk now
//   bool all_started() const               // every worker is up (second chunks wait)
//   bool one_item_chunks() const           // per-item timeouts: chunks of one item
//   pid_t worker_pid(const Slot&) const
//   std::uint32_t trace_lane(const Slot&) const
//   std::string worker_name(const Slot&) const   // "worker 1234", "rank 1 (pid ...)"
//   std::string worker_where(const Slot&) const  // a line put before its tracebacks
//   void partial_arrived(Slot&, std::uint64_t job)
//   void items_arrived(Slot&, Entry*, bool ok)  // results (ok) or errors of its chunk
//   void protocol_error(const char*)       // a message that breaks the protocol
//   void kill_job_workers(const Job*)      // Future::cancel(kill_running), if can_kill
//   bool dispatcher_gone() const           // the dispatcher has stopped for good
//   bool in_own_work() const noexcept      // this thread runs the pool's own callbacks
//   void stopping() / void dispatcher_joined()   // join()'s pool-specific steps
//   static constexpr double target_chunk_ns;     // adaptive chunks aim at this
//   static constexpr bool can_kill;
// and every Slot has `chunks`, a deque of a type derived from ChunkRecord.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mproc/detail/chunking.hpp"
#include "mproc/detail/trace.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "pool/job_book.hpp"
#include "pool/pool_protocol.hpp"
#include "pool/wire.hpp"

namespace mproc::detail {

/// A chunk a worker holds, as every transport knows it.
struct ChunkRecord {
  std::uint64_t job = 0;
  std::size_t first = 0;
  std::size_t count = 0;
  std::uint64_t bytes_in = 0;  // serialized arguments
  const char* method = "map";  // the Pool method, for traces
  TraceCode code{};            // the function and label, for traces
  std::string error{};         // the first failed item's type and what(), for traces
  std::size_t done = 0;        // items with a result already
  std::uint64_t bytes_out = 0;
  std::uint32_t errors = 0;
};

/// A chunk message pull_chunk() built: its record, and where its items start in the
/// message (their end offsets, relative to that, are in the `ends` it was given).
struct PulledChunk {
  ChunkRecord record;
  std::size_t items_at = 0;
};

/// Adaptive chunks have at most this many items.
inline constexpr std::size_t max_chunk_items = std::size_t{1} << 20;
/// Chunks a worker holds at once: one running, one queued behind it, so the worker never
/// waits for the dispatcher between chunks.
inline constexpr std::size_t chunks_in_flight = 2;

template <class Pool, class Entry, class Slot>
class Dispatcher : public PoolCore, public JobBook<Pool, Entry> {
  using Book = JobBook<Pool, Entry>;

 public:
  explicit Dispatcher(const PoolOptions& options) : options_(options) {}

  void close() override { this->close_book(); }

  void cancel_pending() override {
    // Once this returns, no job that had not started can be handed to a worker.
    this->cancel_unstarted_jobs([&] { this->wake(); }, [&] { return pool().dispatcher_gone(); });
  }

  bool kill_running(const Job* job) override {
    if constexpr (!Pool::can_kill) {
      (void)job;
      return false;
    } else {
      {
        std::lock_guard lock(this->mutex_);
        if (this->terminate_) return false;
        kill_requests_.push_back(job);
      }
      this->wake();
      return true;
    }
  }

  void join() override {
    if (pool().in_own_work())
      throw std::logic_error(
          "a pool cannot be joined from its own tasks or callbacks (it would wait for itself)");
    std::lock_guard join_lock(join_mutex_);
    this->wait_idle_then_stop([&] { return pool().dispatcher_gone(); });
    pool().stopping();
    this->wake();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
    pool().dispatcher_joined();
    if (tracer_) tracer_->flush();
  }

  void terminate() override {
    this->mark_terminating();
    this->wake();
    if (!pool().in_own_work()) join();
  }

 protected:
  Pool& pool() { return static_cast<Pool&>(*this); }
  const Pool& pool() const { return static_cast<const Pool&>(*this); }

  /// Takes in what user threads queued: jobs (failed at once if the pool is broken or
  /// terminated), kill requests and cancel_pending() calls. Returns whether there was any.
  bool take_incoming() {
    std::deque<std::shared_ptr<Job>> jobs;
    std::vector<const Job*> kills;
    std::uint64_t generation;
    {
      std::lock_guard lock(this->mutex_);
      generation = this->cancel_generation_;
      if (this->incoming_.empty() && kill_requests_.empty() &&
          generation == this->cancel_generation_seen_)
        return false;
      jobs.swap(this->incoming_);
      kills.swap(kill_requests_);
    }
    if constexpr (Pool::can_kill)
      for (const Job* k : kills) pool().kill_job_workers(k);
    const bool cancel_now = generation != this->cancel_generation_seen_;
    this->cancel_generation_seen_ = generation;
    for (auto& job : jobs) {
      Entry& j = this->add_job(std::move(job));
      if (this->broken_)
        this->complete(j, this->broken_);
      else if (terminated_)
        this->complete(j, std::make_exception_ptr(Cancelled("Pool terminated")));
    }
    if (cancel_now) this->cancel_unstarted(generation);
    return true;
  }

  /// Whether terminate() was called and the dispatcher has not applied it yet.
  bool terminate_requested() {
    std::lock_guard lock(this->mutex_);
    return this->terminate_ && !terminated_;
  }
  /// Applies terminate(): every job fails with Cancelled, and none is taken in again.
  void terminate_jobs() {
    terminated_ = true;
    this->fail_everything(std::make_exception_ptr(Cancelled("Pool terminated")));
  }

  // ---- worker to dispatcher ---------------------------------------------------------

  /// What one message from the worker of `s` does: a result or an error of the next item
  /// of the worker's current chunk, several packed results, the chunk's end, a map_reduce
  /// partial, or the initializer's failure.
  void handle_message(Slot& s, std::span<const std::byte> bytes) {
    using pool::FromWorker;
    WireReader r(bytes);
    const auto kind = r.get<FromWorker>();
    if (kind == FromWorker::init_failed) {
      std::string type = r.get_string(), what = r.get_string();
      this->initializer_failed(fmt::format("Pool: the initializer failed in {}: {}: {}",
                                           pool().worker_name(s), type, what));
      return;
    }
    if (kind == FromWorker::partial) {
      const auto id = r.get<std::uint64_t>();
      const auto status = r.get<std::uint8_t>();
      pool().partial_arrived(s, id);
      if (Entry* j = this->find_job(id))
        this->partial_received(*j, status, r, pool().worker_pid(s), pool().worker_where(s));
      return;
    }
    if (s.chunks.empty()) return pool().protocol_error("a result for no chunk");
    auto& c = s.chunks.front();
    Entry* j = this->find_job(c.job);
    if (kind == FromWorker::chunk_end) {
      const auto ns = r.get<std::uint64_t>();
      const auto start = r.get<std::uint64_t>();
      if (tracer_) {
        TraceEvent e = trace_event(s, c);
        e.items = c.count;
        e.start_ns = start;  // the worker's clock (a rank elsewhere has its own)
        e.end_ns = start + ns;
        e.status = c.errors == 0 ? TraceStatus::ok : TraceStatus::error;
        tracer_->record(e);
      }
      if (j != nullptr) {
        const bool first_report = j->cost_ns < 0;
        update_item_cost(j->cost_ns, static_cast<double>(ns), c.count);
        // Not at every chunk: one-item chunks come by the hundred thousand.
        if (first_report || c.count >= 64) known_costs_.remember(*j->job, j->cost_ns);
      }
      s.chunks.pop_front();
      return;
    }
    if (kind == FromWorker::items_packed) {
      const auto n = r.get<std::uint64_t>();
      const auto results = r.rest();
      if (n == 0 || n > c.count - c.done || results.size() % n != 0)
        return pool().protocol_error("a malformed items_packed message");
      const std::size_t first = c.first + c.done;
      c.done += n;
      c.bytes_out += results.size();
      pool().items_arrived(s, j, true);
      if (j == nullptr) return;
      j->in_flight -= n;
      j->accounted += n;
      j->job->on_results(first, n, results.size() / n, results);
      return;
    }
    if (c.done == c.count) return pool().protocol_error("more results than items");
    const std::size_t index = c.first + c.done;
    ++c.done;
    if (kind == FromWorker::item_ok)
      c.bytes_out += r.rest().size();
    else
      ++c.errors;
    pool().items_arrived(s, j, kind == FromWorker::item_ok);
    if (j == nullptr) return;
    if (kind == FromWorker::item_ok) {
      Book::item_finished(*j, index, r.rest());
      return;
    }
    RemoteFailure f;
    if (kind == FromWorker::item_error) {
      f = RemoteFailure::read(r);
    } else {
      // No worker sends anything else inside a chunk: fail the item rather than lose it.
      f.type = "mproc::SerializationError";
      f.kinds = {f.type};
      f.what = fmt::format("a worker sent message kind {} inside a chunk",
                           static_cast<unsigned>(kind));
    }
    if (tracer_ && c.errors == 1) c.error = f.type + ": " + f.what;
    const std::string where = pool().worker_where(s);
    if (!where.empty()) f.traceback = where + "\n" + f.traceback;
    Book::item_failed(*j, index, std::move(f), pool().worker_pid(s));
  }

  /// A trace event for chunk `c` of the worker of `s`, with what the chunk itself knows.
  TraceEvent trace_event(const Slot& s, const ChunkRecord& c) const {
    TraceEvent e;
    e.method = c.method;
    e.code = c.code;
    e.error = c.error;
    e.job = c.job;
    e.first = c.first;
    e.bytes_in = c.bytes_in;
    e.bytes_out = c.bytes_out;
    e.errors = c.errors;
    e.lane = pool().trace_lane(s);
    e.worker_pid = pool().worker_pid(s);
    return e;
  }

  // ---- dispatcher to worker ---------------------------------------------------------

  /// Hands out chunks: one to every worker before any worker gets a second (with as many
  /// tasks as workers, every task must start at once, not queue behind another on a busy
  /// worker), then a second to each, once every worker is up.
  bool dispatch() {
    bool any = false;
    for (std::size_t depth = 1; depth <= chunks_in_flight; ++depth) {
      if (depth > 1 && !pool().all_started()) break;
      for (auto& s : slots_)
        while (s.chunks.size() < depth && pool().can_take_chunk(s) && pool().give_chunk(s))
          any = true;
    }
    return any;
  }

  /// Whether job `j` has a chunk to give now. Starts it the first time; a job cancelled
  /// before it started (cancel_pending(), or its future's cancel()) completes instead.
  bool has_items(Entry& j) {
    if (j.done || j.flushing) return false;
    if constexpr (requires { j.requeued.empty(); })
      if (!j.requeued.empty()) return true;
    if (j.job->exhausted()) return false;
    if (j.started) return true;
    j.started = true;
    if (j.job->generation < this->cancel_generation_seen_) {
      j.job->on_abort(
          std::make_exception_ptr(Cancelled("the task was cancelled before it started")));
      this->complete(j, nullptr, false);
      return false;
    }
    if (!j.job->start()) {
      this->complete(j, nullptr, false);
      return false;
    }
    return true;
  }

  /// Items per chunk for job `j`: the call's chunksize, the pool's, one item under
  /// per-item timeouts, or adaptive; at most `cap`.
  std::size_t chunk_size(const Entry& j, std::uint64_t cap = ~std::uint64_t{0}) const {
    std::size_t n;
    if (j.job->chunksize != 0)
      n = j.job->chunksize;
    else if (options_.chunksize != 0)
      n = options_.chunksize;
    else if (pool().one_item_chunks())
      n = 1;
    else
      // A call of a function this pool has run before starts from what its items cost
      // then, not from one-item probes.
      n = adaptive_chunk(j.cost_ns >= 0 ? j.cost_ns : known_costs_.recall(*j.job),
                         Pool::target_chunk_ns, max_chunk_items, Book::remaining_items(j),
                         slots_.size());
    return static_cast<std::size_t>(std::min<std::uint64_t>(n, cap));
  }

  /// Appends the setup message of job `j` to `out`: its id, its code, its callable's state.
  void put_setup(std::vector<std::byte>& out, const Entry& j) {
    put(out, pool::ToWorker::setup);
    put<std::uint64_t>(out, j.id);
    pool().put_code(out, *j.job);
    out.insert(out.end(), j.job->state.begin(), j.job->state.end());
  }

  /// Appends a chunk message of up to `want` further items of `j` to `out`: u64 job,
  /// first index, count, the items' bytes, then their end offsets (kept in `ends` too,
  /// relative to the first item's start). A chunk of no items cuts `out` back to
  /// `cut_to` (default: as it was); so does an input that throws, which then fails the
  /// job as a whole.
  PulledChunk pull_chunk(Entry& j, std::size_t want, std::vector<std::byte>& out,
                         std::vector<std::size_t>& ends, std::size_t cut_to = SIZE_MAX) {
    const std::size_t at = std::min(cut_to, out.size());
    if (const auto form = index_form(j)) return pull_indices(j, want, out, ends, at, *form);
    put(out, pool::ToWorker::chunk);
    put<std::uint64_t>(out, j.id);
    const std::size_t first_at = out.size();
    put<std::uint64_t>(out, 0);
    put<std::uint64_t>(out, 0);
    const std::size_t items_at = out.size();
    ends.clear();
    std::size_t first = 0, got = 0;
    try {
      got = j.job->pull(want, out, ends, first);
    } catch (...) {
      out.resize(at);
      j.job->on_error(std::nullopt, std::current_exception());
      this->complete(j);
      return {};
    }
    if (got == 0) {
      out.resize(at);
      return {};
    }
    for (auto& e : ends) e -= items_at;
    const std::uint64_t header[2] = {first, got};
    std::memcpy(out.data() + first_at, header, sizeof header);
    append_ends(out, ends);
    return pulled(j, first, got, ends.back(), items_at);
  }

  /// pull_chunk for a map over an integer range that the pool runs from indices: an
  /// `indices` message (pool_protocol.hpp), with `ends` empty (the items have no bytes).
  PulledChunk pull_indices(Entry& j, std::size_t want, std::vector<std::byte>& out,
                           std::vector<std::size_t>& ends, std::size_t at,
                           const Job::IndexItems& form) {
    std::size_t first = 0;
    const std::size_t got = j.job->pull_indices(want, first);
    if (got == 0) {
      out.resize(at);
      return {};
    }
    put_indices(out, j.id, first, got, form);
    ends.clear();
    return pulled(j, first, got, 0, out.size());
  }

  /// The range `j` maps over, if the pool sends its chunks as indices (an `indices`
  /// message): its input is an integer range and the pool would run it packed.
  std::optional<Job::IndexItems> index_form(const Entry& j) {
    auto form = j.job->index_items();
    if (form && !pool().index_chunks(*j.job)) form.reset();
    return form;
  }

  static void put_indices(std::vector<std::byte>& out, std::uint64_t job, std::uint64_t first,
                          std::uint64_t count, const Job::IndexItems& form) {
    put(out, pool::ToWorker::indices);
    for (std::uint64_t v : {job, first, count, form.start, form.step}) put<std::uint64_t>(out, v);
  }

  PulledChunk pulled(const Entry& j, std::size_t first, std::size_t count, std::size_t bytes_in,
                     std::size_t items_at) const {
    PulledChunk c;
    c.record.job = j.id;
    c.record.first = first;
    c.record.count = count;
    c.record.bytes_in = bytes_in;
    c.record.method = j.job->method;
    c.record.code = j.job->code;
    if (tracer_ && j.job->item_label) c.record.code.label = item_trace_label(j.job->item_label, first);
    c.items_at = items_at;
    return c;
  }

  const PoolOptions options_;
  std::vector<Slot> slots_;
  std::unique_ptr<Tracer> tracer_;  // null unless options_.trace names a file
  std::thread thread_;              // the dispatcher
  bool terminated_ = false;         // the dispatcher has applied terminate()

 private:
  std::mutex join_mutex_;
  std::vector<const Job*> kill_requests_;  // shared with user threads, under mutex_
  KnownCosts known_costs_;
};

}  // namespace mproc::detail
