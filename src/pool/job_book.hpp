// The jobs a pool's dispatcher works on, in submission order: what the process pool and
// the mpi pool share about taking them in, cancelling those not started, finishing them
// (with map_reduce's partials) and failing them. Internal to libmproc and libmproc_mpi.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include <sys/types.h>

#include "mproc/detail/chunking.hpp"
#include "mproc/detail/job.hpp"
#include "mproc/error.hpp"
#include "pool/pool_protocol.hpp"
#include "pool/remote_failure.hpp"
#include "pool/wire.hpp"

namespace mproc::detail {

/// What the book keeps per job. A pool's entry derives from it and adds `setup`, the set
/// of workers holding the job's code, and whatever else it needs.
struct JobBookEntry {
  std::uint64_t id;
  std::shared_ptr<Job> job;
  bool reduce;
  std::size_t accounted = 0;  // items with a result or an error from a worker
  std::size_t in_flight = 0;  // items sent and not yet accounted
  double cost_ns = -1;        // per item, EWMA of chunk_end reports; < 0 unknown
  std::size_t awaiting_partials = 0;
  bool flushing = false;
  bool done = false;
  bool started = false;  // start() was called
};

/// Detaches `job` from its pool (Future::cancel(kill_running) looks there).
inline void unlink_job(Job& job) {
  std::lock_guard link(job.link_mutex);
  job.link = nullptr;
}

/// Fails jobs that were submitted but never taken in.
template <class Jobs>
void abort_jobs(Jobs& jobs, const std::exception_ptr& error) {
  for (auto& job : jobs) {
    unlink_job(*job);
    job->on_abort(error);
  }
}

/// The book, for a pool `Pool` whose entries are `Entry`, with the state the pool shares
/// with user threads about jobs (under mutex_). The pool provides
///   std::size_t tell_job(const Entry&, pool::ToWorker)  // to every worker in j.setup;
///                                                      // returns how many it told
/// The functions are the dispatcher's.
template <class Pool, class Entry>
class JobBook {
 protected:
  /// Ids are consecutive and jobs leave only from the front, so an id is an index.
  Entry* find_job(std::uint64_t id) {
    if (jobs_.empty() || id < jobs_.front().id || id - jobs_.front().id >= jobs_.size())
      return nullptr;
    return &jobs_[id - jobs_.front().id];
  }

  Entry& add_job(std::shared_ptr<Job> job) {
    const bool reduce = job->vtable->fold != nullptr;
    Entry& e = jobs_.emplace_back();
    e.id = next_job_id_++;
    e.job = std::move(job);
    e.reduce = reduce;
    return e;
  }

  // What user threads call, under the book's mutex_ where it says so.

  /// Queues `job` for the dispatcher. The caller holds mutex_. Throws the pool's
  /// BrokenPool error once it is broken, and PoolClosed after close() or terminate().
  void enqueue_locked(std::shared_ptr<Job> job) {
    if (broken_error_) std::rethrow_exception(broken_error_);
    if (closed_) throw PoolClosed("Pool: submit after close() or terminate()");
    job->generation = cancel_generation_;
    // Without link_mutex: nothing else can reach the job yet (its future has not been
    // returned, and the dispatcher takes it from incoming_ under mutex_). Taking it here
    // would nest link_mutex inside mutex_, the reverse of Future::cancel(kill_running).
    job->link = &pool();
    incoming_.push_back(std::move(job));
    ++active_jobs_;
  }
  /// No more submissions.
  void close_book() {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  /// No more submissions, and the dispatcher is to stop what runs.
  void mark_terminating() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      terminate_ = true;
    }
    idle_cv_.notify_all();
  }
  /// Blocks until every job submitted has finished (or the pool terminates, or `over()`
  /// says the dispatcher is gone), then tells the dispatcher to stop.
  template <class Over>
  void wait_idle_then_stop(Over over) {
    std::unique_lock lock(mutex_);
    closed_ = true;
    idle_cv_.wait(lock, [&] { return active_jobs_ == 0 || terminate_ || over(); });
    stop_ = true;
  }
  /// Asks the dispatcher to cancel every job not started yet, wakes it with `wake`, and
  /// blocks until it has (or the pool stops, or `over()`).
  template <class Wake, class Over>
  void cancel_unstarted_jobs(Wake wake, Over over) {
    std::unique_lock lock(mutex_);
    const std::uint64_t mine = ++cancel_generation_;
    lock.unlock();
    wake();
    lock.lock();
    idle_cv_.wait(lock, [&] { return cancel_acked_ >= mine || stop_ || terminate_ || over(); });
  }

  /// The items of `j`'s sized input not yet taken for a chunk; none for an unsized input.
  static std::optional<std::size_t> remaining_items(const Entry& j) {
    const auto total = j.job->total();
    if (!total) return std::nullopt;
    return *total - std::min(*total, j.job->consumed());
  }

  // What a worker's results do to their job, on every transport: the pool decodes the
  // frame, checks it against the chunk it belongs to, and calls one of these.

  /// Item `index` of `j` finished with `result` (not kept for a map_reduce item: it was
  /// folded in the worker, and is only counted here).
  static void item_finished(Entry& j, std::size_t index, std::span<const std::byte> result) {
    --j.in_flight;
    ++j.accounted;
    j.job->on_result(index, j.reduce ? std::span<const std::byte>() : result);
  }
  /// Item `index` of `j`, run by process `pid`, threw `failure`.
  static void item_failed(Entry& j, std::size_t index, RemoteFailure failure, pid_t pid) {
    --j.in_flight;
    ++j.accounted;
    j.job->on_error(index, std::move(failure).error(index, pid));
  }
  /// A worker's partial of map_reduce job `j` arrived: `status` 1 and the partial's bytes
  /// in `r`, or 0 and the failure (its traceback prefixed with `where`, when not empty).
  static void partial_received(Entry& j, std::uint8_t status, WireReader& r, pid_t pid,
                               const std::string& where = {}) {
    if (status == 1) {
      j.job->on_partial(r.rest());
    } else if (status == 0) {
      RemoteFailure f = RemoteFailure::read(r);
      if (!where.empty()) f.traceback = where + "\n" + f.traceback;
      j.job->on_error(std::nullopt, std::move(f).error(std::nullopt, pid));
    }
    if (j.awaiting_partials > 0) --j.awaiting_partials;
  }
  /// The pool's initializer failed in a worker: the pool is broken, with `message`.
  void initializer_failed(std::string message) {
    if (broken_) return;
    broken_ = std::make_exception_ptr(BrokenPool(std::move(message)));
    fail_everything(broken_);
  }

  /// Marks `j` done and reports it: on_done, on_abort(error), or nothing (`report`
  /// false: the caller did). Its workers drop its code.
  void complete(Entry& j, const std::exception_ptr& error = nullptr, bool report = true) {
    if (j.done) return;
    j.done = true;
    ++newly_done_;
    unlink_job(*j.job);
    if (!report) {
    } else if (error) {
      j.job->on_abort(error);
    } else {
      j.job->on_done();
    }
    pool().tell_job(j, pool::ToWorker::drop);
    j.setup.clear();
  }

  /// Cancels every job submitted before cancel_pending() number `generation` that has
  /// not started, and tells cancel_pending() so.
  void cancel_unstarted(std::uint64_t generation) {
    for (auto& j : jobs_) {
      if (j.done || j.started || j.job->generation >= generation) continue;
      j.started = true;
      j.job->on_abort(
          std::make_exception_ptr(Cancelled("the task was cancelled before it started")));
      complete(j, nullptr, false);
    }
    {
      std::lock_guard lock(mutex_);
      cancel_acked_ = generation;
    }
    idle_cv_.notify_all();
  }

  /// Completes every job whose items all have a result or an error, after asking its
  /// workers for their partials (map_reduce) and receiving them; drops finished jobs from
  /// the front, and counts them out of active_jobs_.
  void finish_jobs() {
    for (auto& j : jobs_) {
      if (j.done) continue;
      // Jobs start in queue order, so every job after the first unstarted one is
      // unstarted too and cannot have finished: stop here rather than walk thousands of
      // queued apply_async jobs on every pass.
      if (!j.started) break;
      if constexpr (requires { j.requeued.empty(); })
        if (!j.requeued.empty()) continue;
      const bool items_done = j.job->exhausted() && j.in_flight == 0 &&
                              j.accounted + j.job->failed_inputs() >= j.job->consumed();
      if (!items_done) continue;
      if (j.reduce && !j.flushing) {
        // Every item is folded somewhere: ask each worker that folded some for its partial.
        j.flushing = true;
        j.awaiting_partials += pool().tell_job(j, pool::ToWorker::flush);
      }
      if (j.reduce && j.awaiting_partials > 0) continue;
      complete(j);
    }
    while (!jobs_.empty() && jobs_.front().done) jobs_.pop_front();
    const std::size_t finished = std::exchange(newly_done_, 0);
    if (finished == 0) return;
    {
      std::lock_guard lock(mutex_);
      active_jobs_ -= std::min(active_jobs_, finished);
    }
    idle_cv_.notify_all();
  }

  /// Fails every job, those taken in and those still incoming, with `error`; with
  /// broken_ set, later submissions fail with it too.
  void fail_everything(const std::exception_ptr& error) {
    for (auto& j : jobs_) complete(j, error);
    std::deque<std::shared_ptr<Job>> incoming;
    {
      std::lock_guard lock(mutex_);
      if (!broken_error_ && broken_) broken_error_ = broken_;
      incoming.swap(incoming_);
      active_jobs_ -= std::min(active_jobs_, incoming.size());
    }
    abort_jobs(incoming, error);
    idle_cv_.notify_all();
  }

  // The dispatcher's.
  std::deque<Entry> jobs_;
  std::uint64_t next_job_id_ = 1;
  std::exception_ptr broken_;  // the pool is broken: the dispatcher's copy
  std::uint64_t cancel_generation_seen_ = 0;  // cancel_generation_ as of the last look

  // Shared with user threads.
  std::mutex mutex_;
  std::condition_variable idle_cv_;  // jobs finished, cancels applied
  std::deque<std::shared_ptr<Job>> incoming_;
  std::uint64_t cancel_generation_ = 0;  // cancel_pending() calls
  std::uint64_t cancel_acked_ = 0;       // the generation the dispatcher has applied
  std::size_t active_jobs_ = 0;          // submitted and not finished
  std::exception_ptr broken_error_;
  bool closed_ = false;     // close(), join() or terminate(): no more submissions
  bool stop_ = false;       // join: finish what was submitted, then shut down
  bool terminate_ = false;  // terminate: stop now

 private:
  Pool& pool() { return static_cast<Pool&>(*this); }
  std::size_t newly_done_ = 0;
};

}  // namespace mproc::detail
