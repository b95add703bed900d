// The Pool's methods on the thread backend: tasks built from any callable, results and
// exceptions passed as they are (no serialization). Internal to mproc.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../future.hpp"
#include "../progress.hpp"
#include "chunking.hpp"
#include "results.hpp"
#include "task.hpp"
#include "thread_core.hpp"
#include "trace.hpp"

namespace mproc::detail {

/// Records a chunk that started at `start_ns` and ends now on `tracer`'s timeline, in the
/// calling worker's lane.
inline void trace_chunk(Tracer& tracer, const char* method, const TraceCode& code,
                        std::size_t first, std::size_t items, std::uint64_t start_ns,
                        std::size_t errors, std::string error = {}) {
  TraceEvent e;
  e.method = method;
  e.code = code;
  e.error = std::move(error);
  e.first = first;
  e.items = items;
  e.start_ns = start_ns;
  e.end_ns = trace_clock_ns();
  e.errors = static_cast<std::uint32_t>(errors);
  e.lane = current_thread_lane();
  e.status = errors == 0 ? TraceStatus::ok : TraceStatus::error;
  tracer.record(e);
}

/// One call (submit, apply_async): the task and its future's state in one allocation.
template <class R, class Fn>
class CallTask final : public FutureState<R>, public ThreadTask {
 public:
  explicit CallTask(Fn fn) { ::new (static_cast<void*>(std::addressof(fn_))) Fn(std::move(fn)); }
  // fn_ is always destroyed by run(), discard() or drop() before the task dies.
  ~CallTask() override {}

  void run() noexcept override {
    std::shared_ptr<FutureState<R>> keep = std::move(self_);
    if (this->set_running()) {
      Tracer* tracer = current_thread_tracer();
      const std::uint64_t t0 = tracer ? trace_clock_ns() : 0;
      bool failed = false;
      std::string error;
      try {
        if constexpr (std::is_void_v<R>) {
          fn_();
          this->set_value();
        } else {
          this->emplace_value(fn_());
        }
      } catch (...) {
        failed = true;
        if (tracer) error = current_error_label();
        this->set_exception(std::current_exception());
      }
      if (tracer)
        trace_chunk(*tracer, "call", trace_code(fn_), 0, 1, t0, failed ? 1 : 0, std::move(error));
    }
    drop();  // release what the call captured now, not when the last Future goes
  }
  void discard(std::exception_ptr reason, bool cancelled) noexcept override {
    std::shared_ptr<FutureState<R>> keep = std::move(self_);
    fail_promise(*this, std::move(reason), cancelled);
    drop();
  }
  void drop() noexcept { fn_.~Fn(); }

  std::shared_ptr<FutureState<R>> self_;  ///< the queue's reference until run/discard

 private:
  // A union instead of optional<Fn>: with its flag the task and state of a small call
  // would outgrow malloc's fast bins, which costs more than the call itself.
  union {
    Fn fn_;
  };
};

/// Queues `fn()` on `core`; its future's state.
template <class R, class Fn>
std::shared_ptr<FutureState<R>> submit_call(ThreadCore& core, Fn fn) {
  auto task = std::make_shared<CallTask<R, Fn>>(std::move(fn));
  task->self_ = task;
  try {
    core.submit(task.get());
  } catch (...) {
    task->drop();
    task->self_.reset();
    throw;
  }
  return task;
}

/// f(args...) with the arguments stored by value, as std::thread and std::async do.
template <class F, class... Args>
struct StoredCall {
  F f;
  std::tuple<Args...> args;
  decltype(auto) operator()() { return std::apply(f, std::move(args)); }
};

/// The result type of one item on the thread backend.
template <CallKind kind, class F, class Ref>
using thread_item_result_t =
    std::decay_t<decltype(invoke_item<kind>(std::declval<F&>(), std::declval<Ref>()))>;

/// A task that runs one of a job's runner loops.
template <class Shared>
class RunnerTask final : public ThreadTask {
 public:
  explicit RunnerTask(std::shared_ptr<Shared> s) : shared_(std::move(s)) {}
  void run() noexcept override {
    shared_->run_runner();
    delete this;
  }
  void discard(std::exception_ptr reason, bool cancelled) noexcept override {
    shared_->abort_runner(std::move(reason), cancelled);
    delete this;
  }

 private:
  std::shared_ptr<Shared> shared_;
};

/// Queues `count` runners of `shared`. A runner that cannot be queued is aborted with the
/// reason, so the job still finishes; the first reason is rethrown.
template <class Shared>
void start_runners(ThreadCore& core, const std::shared_ptr<Shared>& shared, unsigned count) {
  std::exception_ptr refused;
  for (unsigned k = 0; k < count; ++k) {
    auto* t = new RunnerTask<Shared>(shared);
    try {
      core.submit(t);
    } catch (...) {
      if (!refused) refused = std::current_exception();
      t->discard(std::current_exception(), false);
    }
  }
  if (refused) std::rethrow_exception(refused);
}

/// Hands out [begin, end) ranges of n items: `fixed` at a time, or guided self-scheduling
/// (a share of what remains, shrinking towards the end so the workers finish together).
class ChunkCounter {
 public:
  ChunkCounter(std::size_t n, std::size_t fixed, unsigned workers)
      : n_(n), fixed_(fixed), divisor_(4 * static_cast<std::size_t>(std::max(1u, workers))) {}
  bool grab(std::size_t& begin, std::size_t& end) noexcept {
    std::size_t cur = next_.load(std::memory_order_relaxed);
    for (;;) {
      if (cur >= n_) return false;
      std::size_t c = fixed_ != 0 ? fixed_ : std::max<std::size_t>(1, (n_ - cur) / divisor_);
      c = std::min(c, n_ - cur);
      if (next_.compare_exchange_weak(cur, cur + c, std::memory_order_relaxed)) {
        begin = cur;
        end = cur + c;
        return true;
      }
    }
  }
  void stop() noexcept { next_.store(n_, std::memory_order_relaxed); }

 private:
  const std::size_t n_;
  const std::size_t fixed_;
  const std::size_t divisor_;
  std::atomic<std::size_t> next_{0};
};

/// Saves and restores the thread's current_task(), which a nested job may overwrite.
class TaskInfoScope {
 public:
  TaskInfoScope() : slot_(current_task_slot()), saved_(*slot_) {}
  ~TaskInfoScope() { *slot_ = saved_; }
  TaskInfoScope(const TaskInfoScope&) = delete;
  TaskInfoScope& operator=(const TaskInfoScope&) = delete;
  std::optional<TaskInfo>& slot() noexcept { return *slot_; }

 private:
  std::optional<TaskInfo>* slot_;
  std::optional<TaskInfo> saved_;
};

template <class Rd>
inline constexpr bool is_fold_call_v = false;
template <class R, class Fd, class Cb>
inline constexpr bool is_fold_call_v<FoldCall<R, Fd, Cb>> = true;

/// map, map_async, starmap (and map_reduce when Rd is not void) over a random-access
/// view: runners take chunks from a shared counter and write results in place. With Rd a
/// FoldCall (Pool::fold), each runner folds its items into one accumulator, a copy of
/// init, and the runners' accumulators are combined; F is then only named in traces.
template <CallKind kind, class View, class F, class R, class Rd = void>
class ThreadVectorJob : public std::enable_shared_from_this<ThreadVectorJob<kind, View, F, R, Rd>> {
  static constexpr bool reducing = !std::is_void_v<Rd>;
  static constexpr bool folding = is_fold_call_v<Rd>;
  using Slots = std::conditional_t<std::is_void_v<R> || reducing, std::monostate, ResultSlots<R>>;

 public:
  using Result = std::conditional_t<std::is_void_v<R>, void,
                                    std::conditional_t<reducing, R, std::vector<stored_t<R>>>>;
  using Reducer = std::conditional_t<reducing, Rd, std::monostate>;

  ThreadVectorJob(View view, F f, Reducer reduce, std::size_t chunksize, unsigned workers,
                  std::shared_ptr<FutureState<Result>> promise,
                  std::shared_ptr<ProgressReporter> progress)
      : view_(std::move(view)),
        f_(std::move(f)),
        reduce_(std::move(reduce)),
        n_(static_cast<std::size_t>(std::ranges::size(view_))),
        chunks_(n_, chunksize, workers),
        promise_(std::move(promise)),
        progress_(std::move(progress)) {
    if constexpr (!std::is_void_v<R> && !reducing) slots_.resize(n_);
  }

  const char* method = "map";  ///< the Pool method, for traces
  TraceCode code{};            ///< the function and label, for traces
  ItemLabel item_label{};      ///< per-chunk labels, for traces

  /// Starts the runners (or finishes at once for an empty input).
  static void start(ThreadCore& core, const std::shared_ptr<ThreadVectorJob>& job) {
    const unsigned runners =
        static_cast<unsigned>(std::min<std::size_t>(core.workers(), job->n_));
    if (runners == 0) {
      job->finish();
      return;
    }
    job->runners_left_.store(runners, std::memory_order_relaxed);
    start_runners(core, job, runners);
  }

  void run_runner() noexcept {
    // A cancelled map_async stops taking items; the first runner marks the job running.
    if (promise_->set_running() || !promise_->done()) {
      TaskInfoScope info;
      std::optional<stored_t<R>> acc;
      auto begin = std::ranges::begin(view_);
      std::size_t b = 0, e = 0;
      Tracer* tracer = current_thread_tracer();
      while (!promise_->done() && chunks_.grab(b, e)) {
        info.slot().emplace(TaskInfo{b, b, e - b});
        const std::uint64_t t0 = tracer ? trace_clock_ns() : 0;
        std::size_t failed = 0;
        std::string error;
        for (std::size_t i = b; i < e; ++i) {
          info.slot()->index = i;
          try {
            if constexpr (folding) {
              if (!acc) acc.emplace(reduce_.init);
              fold_item(reduce_.fold, *acc, begin[static_cast<std::ptrdiff_t>(i)]);
            } else if constexpr (reducing) {
              R r = invoke_item<kind>(f_, begin[static_cast<std::ptrdiff_t>(i)]);
              if (!acc)
                acc.emplace(std::move(r));
              else
                fold_into(reduce_, *acc, std::move(r));
            } else if constexpr (std::is_void_v<R>) {
              invoke_item<kind>(f_, begin[static_cast<std::ptrdiff_t>(i)]);
            } else {
              slots_.set(i, invoke_item<kind>(f_, begin[static_cast<std::ptrdiff_t>(i)]));
            }
          } catch (...) {
            if (tracer && failed == 0) error = current_error_label();
            ++failed;
            errors_.record(i, std::current_exception());
          }
        }
        if (tracer) {
          TraceCode chunk = code;
          if (item_label) chunk.label = item_trace_label(item_label, b);
          trace_chunk(*tracer, method, chunk, b, e - b, t0, failed, std::move(error));
        }
        if (progress_) progress_->add(e - b);
      }
      if constexpr (reducing) {
        if (acc) {
          try {
            std::lock_guard lock(acc_mutex_);
            if (!acc_)
              acc_.emplace(std::move(*acc));
            else if constexpr (folding)
              fold_into(reduce_.combine, *acc_, std::move(*acc));
            else
              fold_into(reduce_, *acc_, std::move(*acc));
          } catch (...) {
            errors_.record(static_cast<std::size_t>(-1), std::current_exception());
          }
        }
      }
    }
    if (runners_left_.fetch_sub(1, std::memory_order_acq_rel) == 1) finish();
  }

  void abort_runner(std::exception_ptr reason, bool cancelled) noexcept {
    // The pool is shutting down: no runner takes further items.
    chunks_.stop();
    errors_.record(0, std::move(reason), cancelled);
    if (runners_left_.fetch_sub(1, std::memory_order_acq_rel) == 1) finish();
  }

 private:
  void finish() noexcept {
    if (progress_) progress_->finish();
    if (auto e = errors_.get()) {
      fail_promise(*promise_, e, errors_.cancelled());
      return;
    }
    try {
      if constexpr (std::is_void_v<R>) {
        promise_->set_value();
      } else if constexpr (reducing) {
        if constexpr (folding)
          promise_->set_value(acc_ ? std::move(*acc_) : R(reduce_.init));
        else
          promise_->set_value(acc_ ? std::move(*acc_) : R{});
      } else {
        promise_->set_value(slots_.take());
      }
    } catch (...) {
      promise_->set_exception(std::current_exception());
    }
  }

  View view_;
  F f_;
  [[no_unique_address]] Reducer reduce_;
  const std::size_t n_;
  ChunkCounter chunks_;
  std::shared_ptr<FutureState<Result>> promise_;
  std::shared_ptr<ProgressReporter> progress_;
  [[no_unique_address]] Slots slots_;
  std::atomic<unsigned> runners_left_{0};
  FirstError errors_;
  std::mutex acc_mutex_;
  std::optional<stored_t<R>> acc_;
};

/// imap, imap_unordered and the executors' map on threads: runners pull items from the
/// input under a lock, a window ahead of the consumer at most, and hand results to the
/// consumer as they finish.
template <CallKind kind, class View, class F, class R>
class ThreadStreamJob : public std::enable_shared_from_this<ThreadStreamJob<kind, View, F, R>> {
  using Arg = std::ranges::range_value_t<View>;

 public:
  ThreadStreamJob(ThreadCore& core, View view, F f, bool ordered, std::size_t chunksize,
                  std::size_t window, std::shared_ptr<ProgressReporter> progress)
      : core_(core),
        view_(std::move(view)),
        it_(std::ranges::begin(view_)),
        f_(std::move(f)),
        chunksize_(chunksize),
        window_(window),
        progress_(std::move(progress)),
        results_(ordered) {}

  const char* method = "imap";  ///< the Pool method, for traces
  TraceCode code{};             ///< the function and label, for traces
  ItemLabel item_label{};       ///< per-chunk labels, for traces

  void start() {
    std::unique_lock lock(mutex_);
    spawn(lock);
  }

  void run_runner() noexcept {
    std::vector<std::pair<std::size_t, Arg>> batch;
    std::vector<std::pair<std::size_t, Slot>> done;
    TaskInfoScope info;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        const std::size_t room = results_.room(next_index_, window_);
        if (cancelled_ || exhausted_ || room == 0) {
          --active_;
          cv_.notify_all();
          return;
        }
        const std::size_t want = std::min(room, batch_size());
        try {
          while (batch.size() < want && it_ != std::ranges::end(view_)) {
            batch.emplace_back(next_index_, *it_);
            ++next_index_;
            ++it_;
          }
          if (it_ == std::ranges::end(view_)) exhausted_ = true;
        } catch (...) {
          // The input itself threw: report it at the position it failed and stop.
          results_.put_error(next_index_++, std::current_exception());
          exhausted_ = true;
        }
      }
      const auto t0 = std::chrono::steady_clock::now();
      Tracer* tracer = current_thread_tracer();
      const std::uint64_t trace_t0 = tracer ? trace_clock_ns() : 0;
      std::size_t failed = 0;
      std::string error;
      for (auto& [index, arg] : batch) {
        info.slot() = TaskInfo{index, batch.front().first, batch.size()};
        Slot slot;
        try {
          if constexpr (std::is_void_v<R>) {
            invoke_item<kind>(f_, arg);
            slot.value.emplace();
          } else {
            slot.value.emplace(invoke_item<kind>(f_, arg));
          }
        } catch (...) {
          if (tracer && failed == 0) error = current_error_label();
          ++failed;
          slot.error = std::current_exception();
        }
        done.emplace_back(index, std::move(slot));
      }
      if (tracer && !batch.empty()) {
        TraceCode chunk = code;
        if (item_label) chunk.label = item_trace_label(item_label, batch.front().first);
        trace_chunk(*tracer, method, chunk, batch.front().first, batch.size(), trace_t0, failed,
                    std::move(error));
      }
      const auto spent = std::chrono::steady_clock::now() - t0;
      {
        std::lock_guard lock(mutex_);
        update_item_cost(cost_ns_, std::chrono::duration<double, std::nano>(spent).count(),
                         batch.size());
        for (auto& [index, slot] : done) results_.put(index, std::move(slot));
        cv_.notify_all();
      }
      if (progress_ && !batch.empty()) progress_->add(batch.size());
      batch.clear();
      done.clear();
    }
  }
  void abort_runner(std::exception_ptr reason, bool) noexcept {
    std::lock_guard lock(mutex_);
    --active_;
    if (!abort_) abort_ = std::move(reason);
    cv_.notify_all();
  }

  /// The next result (false at the end), into `out` or, for a failed item, `error`.
  /// Throws an abort's error; with a deadline, TimeoutError when it passes first.
  bool next(std::optional<stored_t<R>>& out, std::exception_ptr& error,
            const std::chrono::steady_clock::time_point* deadline) {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (auto slot = results_.take()) {
        spawn(lock);
        lock.unlock();
        slot->deliver(out, error);
        return true;
      }
      if (abort_ && active_ == 0) std::rethrow_exception(abort_);
      if (exhausted_ && active_ == 0 && results_.empty()) {
        if (progress_) progress_->finish();
        return false;
      }
      spawn(lock);
      if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline)
        throw TimeoutError("map: the next result did not arrive before the timeout");
      wait_a_little(lock, deadline);
    }
  }

  void cancel() {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
  }
  /// Waits until no runner is active (a consumer stopping early must not leave runners
  /// touching the input after it is gone), and silences the progress reports.
  void drain() {
    if (progress_) progress_->stop();
    std::unique_lock lock(mutex_);
    cancelled_ = true;
    while (active_ != 0) wait_a_little(lock, nullptr);
  }

 private:
  using Slot = typename ResultWindow<R>::Slot;

  /// Sleeps until notified. In a worker of this pool the stream's runners may sit in this
  /// very worker's deque: run queued tasks instead of sleeping while there are any.
  void wait_a_little(std::unique_lock<std::mutex>& lock,
                     const std::chrono::steady_clock::time_point* deadline) {
    if (core_.worker_index()) {
      lock.unlock();
      const bool ran = core_.run_one();
      lock.lock();
      if (ran) return;
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      if (deadline != nullptr && *deadline < until) until = *deadline;
      cv_.wait_until(lock, until);
      return;
    }
    if (deadline == nullptr)
      cv_.wait(lock);
    else
      cv_.wait_until(lock, *deadline);
  }

  std::size_t batch_size() const {
    if (chunksize_ != 0) return chunksize_;
    // About half a millisecond of work per batch once the cost is known.
    return adaptive_chunk(cost_ns_, 500'000.0, 4096);
  }

  void spawn(std::unique_lock<std::mutex>&) {
    while (active_ < core_.workers() && !exhausted_ && !cancelled_ && !abort_ &&
           results_.room(next_index_, window_) > 0) {
      ++active_;
      auto* t = new RunnerTask<ThreadStreamJob>(this->shared_from_this());
      try {
        core_.submit(t);
      } catch (...) {
        --active_;
        delete t;
        if (active_ == 0) throw;
        return;
      }
    }
  }

  ThreadCore& core_;
  View view_;
  std::ranges::iterator_t<View> it_;
  F f_;
  const std::size_t chunksize_;
  const std::size_t window_;
  std::shared_ptr<ProgressReporter> progress_;

  std::mutex mutex_;
  std::condition_variable cv_;
  ResultWindow<R> results_;
  std::size_t next_index_ = 0;
  unsigned active_ = 0;
  bool exhausted_ = false;
  bool cancelled_ = false;
  std::exception_ptr abort_;
  double cost_ns_ = -1;
};

}  // namespace mproc::detail
