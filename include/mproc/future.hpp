// Future<T>: the result of work that runs somewhere else (a thread, a worker process,
// an MPI rank), as Python's concurrent.futures.Future and multiprocessing's AsyncResult.
// One type for every backend, for executors' submit() and for the Pool's *_async methods.
//
// A Future is a shared handle: copies refer to the same result. The result is set once,
// by the backend; after that every copy observes it. Once done() returns true in any
// thread, get() in any thread returns the value or rethrows the task's error without
// blocking (the completion happens-before the return of done()/wait()).
//
// A Future moves through pending -> running -> finished, or pending -> finished when it is
// cancelled. cancel() succeeds only while it is pending (Python's rule); for the process
// backend cancel(CancelMode::kill_running) also stops a running task by killing its worker.
//
// Done callbacks run exactly once: at once in the caller's thread if the Future is already
// finished, else in the thread that finishes it (a pool worker or dispatcher thread),
// after the result is visible. An exception thrown by a callback goes to the handler set
// with set_callback_error_handler() (by default one line on stderr); it never reaches the
// pool and is never swallowed silently.
//
// A default-constructed Future has no state; calling anything but valid() on it throws
// std::future_error(no_state).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "callback_error.hpp"
#include "error.hpp"
#include "detail/deadline.hpp"
#include "export.hpp"

namespace mproc {

template <class T>
class Future;

/// What mproc::wait() waits for (Python's FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED).
enum class ReturnWhen {
  first_completed,  ///< any future finishes (or is cancelled)
  first_exception,  ///< any future finishes with an error, or all finish
  all_completed,    ///< every future finishes
};

/// How Future::cancel treats a task that already runs.
enum class CancelMode {
  pending,       ///< Python's cancel(): only a task that has not started is cancelled
  kill_running,  ///< process backend: also kill the worker running the task (as pebble)
};

namespace detail {

/// One polite iteration of a spin loop (PAUSE on x86, YIELD on arm64).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

class FutureStateBase;

/// Whether waiting threads carry a backend's work themselves (an mpi Pool is open): then
/// spinning before the wait only delays them.
MPROC_API bool waiters_drive_work() noexcept;

/// Something to do when a state finishes: a done callback or a waiter's wake-up. Nodes
/// are heap-allocated and owned by the state's list; the finishing thread fires each node
/// once and deletes it. remove_node() takes a node back before it fires.
struct DoneNode {
  DoneNode* prev = nullptr;
  DoneNode* next = nullptr;
  DoneNode() = default;
  DoneNode(const DoneNode&) = delete;
  DoneNode& operator=(const DoneNode&) = delete;
  virtual ~DoneNode() = default;
  virtual void fire() noexcept = 0;
};

/// The state a Future and its producer share. The producer calls set_value/set_exception
/// once; later calls return false and change nothing (a late result after a cancel).
class MPROC_API FutureStateBase {
 public:
  FutureStateBase() = default;
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;
  virtual ~FutureStateBase();

  bool done() const noexcept { return phase(word_.load(std::memory_order_acquire)) == finished; }
  bool running() const noexcept {
    return phase(word_.load(std::memory_order_acquire)) == running_phase;
  }
  bool cancelled() const noexcept {
    const std::uint32_t w = word_.load(std::memory_order_acquire);
    return phase(w) == finished && (w & cancelled_bit) != 0;
  }
  /// Finished with an error (including a cancel).
  bool failed() const noexcept { return done() && error_ != nullptr; }

  /// pending -> running, as Python's set_running_or_notify_cancel: false if the task was
  /// cancelled (the producer must then skip it) or already left pending.
  bool set_running() noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    while (phase(w) == pending) {
      if (word_.compare_exchange_weak(w, (w & ~phase_mask) | running_phase,
                                      std::memory_order_acq_rel, std::memory_order_relaxed))
        return true;
    }
    return false;
  }

  /// pending -> finished with Cancelled. Returns true if the state is cancelled now
  /// (also when it already was), false if it runs or finished otherwise.
  bool cancel();
  /// As cancel(); a running task whose backend can stop it (a kill hook) is stopped too,
  /// and this waits until the state is finished. Returns cancelled().
  bool cancel_running();
  /// The backend's way to stop a running task (process backend: kill its worker). Set
  /// before the Future is handed out. Returns false if it could not act.
  void set_kill_hook(std::function<bool()> hook) {
    kill_hook_ = std::make_unique<std::function<bool()>>(std::move(hook));
  }

  /// Finishes with `e` and marks the state cancelled (a kill on cancel, a terminate).
  /// Returns false if the result was already set.
  bool finish_cancelled(std::exception_ptr e);

  /// Returns false if the result was already set.
  bool set_exception(std::exception_ptr e) {
    if (!begin_finish()) return false;
    error_ = std::move(e);
    end_finish();
    return true;
  }

  /// Blocks until finished. Inside a thread-pool worker, runs other tasks meanwhile.
  void wait() const {
    // Results of short tasks often arrive within microseconds: poll briefly before
    // sleeping, because a wake-up costs a futex round trip through the scheduler.
    if (done()) return;
    if (!waiters_drive_work())
      for (int i = 0; i < 256; ++i) {
        if (done()) return;
        spin_pause();
      }
    wait_slow(nullptr);
  }
  /// Blocks until finished or `deadline`; returns done().
  bool wait_until(std::chrono::steady_clock::time_point deadline) const {
    return done() || wait_slow(&deadline);
  }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(deadline_after(timeout));
  }
  /// Sleeps until finished or `deadline` (null: no limit) without running other work;
  /// returns done().
  bool block_until(const std::chrono::steady_clock::time_point* deadline) const;

  /// Blocks until finished; the error, or nullptr. Throws Cancelled if cancelled
  /// (Python's exception() raises CancelledError).
  std::exception_ptr exception() const {
    wait();
    if (cancelled()) std::rethrow_exception(error_);
    return error_;
  }

  /// Runs `cb` once the state is finished: now, in this thread, if it already is; else in
  /// the finishing thread. Exceptions from `cb` go to report_callback_error.
  void add_done_callback(std::function<void()> cb);

  /// Adds `node` unless the state is finished; returns whether it was added (if not, the
  /// caller still owns it).
  bool add_node(DoneNode* node) noexcept;
  /// Takes `node` back; returns false if it already fired (or is firing).
  bool remove_node(DoneNode* node) noexcept;

  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point deadline_after(
      std::chrono::duration<Rep, Period> timeout) {
    return detail::deadline_after(timeout);
  }

 protected:
  // word_: bits 0-1 the phase; completing is the window in which exactly one producer
  // stores the result before publishing it with the release of finished.
  static constexpr std::uint32_t pending = 0, running_phase = 1, completing = 2, finished = 3;
  static constexpr std::uint32_t phase_mask = 3;
  static constexpr std::uint32_t cancelled_bit = 4;
  static constexpr std::uint32_t sleepers_bit = 8;  // someone futex-waits on word_
  static constexpr std::uint32_t nodes_bit = 16;    // the node list may be non-empty
  static constexpr std::uint32_t phase(std::uint32_t w) noexcept { return w & phase_mask; }

  /// Claims the right to store the result: pending or running -> completing.
  bool begin_finish(std::uint32_t extra = 0) noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    while (phase(w) == pending || phase(w) == running_phase) {
      if (word_.compare_exchange_weak(w, (w & ~phase_mask) | completing | extra,
                                      std::memory_order_acquire, std::memory_order_relaxed))
        return true;
    }
    return false;
  }
  /// completing -> finished: publishes the result, wakes waiters, fires the nodes.
  void end_finish() noexcept {
    const std::uint32_t old = word_.fetch_or(finished, std::memory_order_acq_rel);
    if ((old & (sleepers_bit | nodes_bit)) != 0) notify(old);
  }
  void rethrow_if_error() const {
    if (error_) std::rethrow_exception(error_);
  }
  /// Between begin_finish() and end_finish() only.
  void store_error(std::exception_ptr e) noexcept { error_ = std::move(e); }

 private:
  bool wait_slow(const std::chrono::steady_clock::time_point* deadline) const;
  void notify(std::uint32_t old) noexcept;
  void lock_nodes() const noexcept;
  void unlock_nodes() const noexcept { node_lock_.store(false, std::memory_order_release); }

  mutable std::atomic<std::uint32_t> word_{pending};
  mutable std::atomic<bool> node_lock_{false};
  DoneNode* nodes_ = nullptr;  // guarded by node_lock_; newest first
  std::exception_ptr error_;
  // Behind a pointer: most states never have one, and a small state stays in malloc's
  // fast bins (a thread-pool task and its state are one allocation).
  std::unique_ptr<std::function<bool()>> kill_hook_;
};

template <class T>
class FutureState : public FutureStateBase {
 public:
  FutureState() noexcept {}
  ~FutureState() override {
    if (has_value()) value_.~T();
  }
  bool set_value(T v) { return emplace_value(std::move(v)); }
  /// Constructs the value in place from `args`; if that throws, the state finishes with
  /// that exception instead.
  template <class... Args>
  bool emplace_value(Args&&... args) {
    if (!begin_finish()) return false;
    try {
      ::new (static_cast<void*>(std::addressof(value_))) T(std::forward<Args>(args)...);
    } catch (...) {
      store_error(std::current_exception());
    }
    end_finish();
    return true;
  }
  T& value() {
    wait();
    rethrow_if_error();
    return value_;
  }
  /// For a producer that holds the only handle (Pool::map): waits, then moves the value
  /// out instead of copying it.
  T take() { return std::move(value()); }

 private:
  // The value lives in a union, without optional's flag: it exists exactly when the state
  // finished without an error. Keeps a thread-pool task small (see kill_hook_).
  bool has_value() const noexcept { return done() && !failed(); }
  union {
    T value_;
  };
};

template <>
class FutureState<void> : public FutureStateBase {
 public:
  bool set_value() {
    if (!begin_finish()) return false;
    end_finish();
    return true;
  }
  void value() {
    wait();
    rethrow_if_error();
  }
  void take() { value(); }
};

template <class T>
inline constexpr bool is_future_v = false;
template <class T>
inline constexpr bool is_future_v<Future<T>> = true;

/// Finishes `promise` with `error`: as cancelled when `cancelled` (a cancel, a terminate),
/// else as failed. Every backend's jobs fail their futures through this.
inline void fail_promise(FutureStateBase& promise, std::exception_ptr error, bool cancelled) {
  if (cancelled)
    promise.finish_cancelled(std::move(error));
  else
    promise.set_exception(std::move(error));
}

/// The engine of as_completed(): hands out the indices of states as they finish.
class MPROC_API CompletionQueue {
 public:
  explicit CompletionQueue(std::vector<FutureStateBase*> states);
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;
  ~CompletionQueue();
  /// The index of the next finished state, none when all were handed out. Blocks until
  /// one finishes or `deadline` passes (then throws TimeoutError).
  std::optional<std::size_t> next(const std::chrono::steady_clock::time_point* deadline);

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

/// The engine of wait(): returns which states are finished when `when` is met or the
/// deadline passes.
MPROC_API std::vector<bool> wait_states(std::span<FutureStateBase* const> states,
                                        ReturnWhen when,
                                        const std::chrono::steady_clock::time_point* deadline);

}  // namespace detail

/// The eventual result of a task. Copyable: copies share the result. Thread-safe.
template <class T>
class Future {
 public:
  using value_type = T;

  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<T>> state) : state_(std::move(state)) {}

  /// Whether this Future refers to a result (false only when default-constructed).
  bool valid() const noexcept { return state_ != nullptr; }

  /// Blocks until the result is set; returns it or rethrows the task's error
  /// (RemoteException<E> for the task's own exception, WorkerCrashed, TaskTimeout,
  /// SerializationError, Cancelled, or, on the thread backend, the task's own exception
  /// object). May be called any number of times, from
  /// any thread. Inside a thread-pool task it runs other tasks while it waits, so a task
  /// may wait on work it submitted to its own pool.
  decltype(auto) get() const {
    if constexpr (std::is_void_v<T>) {
      checked().value();
    } else {
      return static_cast<const T&>(checked().value());
    }
  }

  /// As get(), but throws mproc::TimeoutError if the result is not set within `timeout`.
  template <class Rep, class Period>
  decltype(auto) get(std::chrono::duration<Rep, Period> timeout) const {
    if (!checked().wait_for(timeout)) throw TimeoutError("Future::get: timed out");
    return get();
  }

  /// Blocks until the result is set. Does not throw the task's error.
  void wait() const { checked().wait(); }

  /// Blocks until the result is set or `timeout` passes; returns whether it is set.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return checked().wait_for(timeout);
  }
  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> deadline) const {
    return checked().wait_for(deadline - Clock::now());
  }

  /// Whether the result (a value or an error) is set. Never blocks.
  bool done() const { return checked().done(); }

  /// Python's AsyncResult.ready(): the same as done(). Never blocks.
  bool ready() const { return checked().done(); }

  /// Python's AsyncResult.successful(): whether the task finished without an error (a
  /// cancelled task did not). Never blocks. Throws std::logic_error if the Future is not
  /// done yet (Python raises ValueError there): ask ready() first, or wait().
  bool successful() const {
    const auto& s = checked();
    if (!s.done()) throw std::logic_error("Future::successful: the result is not ready");
    return !s.failed();
  }

  /// Whether a worker has taken the task and it is not done yet. Never blocks. (Process
  /// backend: from when the task is handed to a worker, as Python's executors.)
  bool running() const { return checked().running(); }

  /// Whether the task was cancelled. Never blocks.
  bool cancelled() const { return checked().cancelled(); }

  /// Cancels the task if it has not started: get() then throws Cancelled and the task
  /// never runs. Returns true if the Future is cancelled (now or before), false if the
  /// task runs or finished. With CancelMode::kill_running on the process backend, a
  /// running task is stopped by killing its worker (a replacement starts) and this waits
  /// for that; other backends cannot stop a running task and return false.
  bool cancel(CancelMode mode = CancelMode::pending) const {
    return mode == CancelMode::kill_running ? checked().cancel_running() : checked().cancel();
  }

  /// Blocks until done; the task's error, or nullptr if it succeeded. Throws Cancelled if
  /// the task was cancelled (as Python's Future.exception()).
  std::exception_ptr exception() const { return checked().exception(); }

  /// Calls `cb(future)` exactly once when the result is set: at once in the calling thread
  /// if it already is, else in the thread that sets it (a pool worker, or the process
  /// pool's dispatcher thread), which it must not block for long. Callbacks run in the
  /// order they were added. An exception thrown by `cb` is reported through
  /// set_callback_error_handler's handler.
  template <class F>
  void add_done_callback(F cb) const {
    checked().add_done_callback([self = *this, cb = std::move(cb)]() mutable { cb(self); });
  }

  /// The shared state (for mproc's own algorithms).
  detail::FutureState<T>* state() const noexcept { return state_.get(); }

 private:
  detail::FutureState<T>& checked() const {
    if (!state_) throw std::future_error(std::future_errc::no_state);
    return *state_;
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

/// The futures that finished and those that did not, as Python's wait() returns them.
template <class T>
struct WaitResult {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {
template <class R>
std::vector<FutureStateBase*> states_of(const R& futures) {
  std::vector<FutureStateBase*> states;
  for (const auto& f : futures) {
    if (!f.valid()) throw std::future_error(std::future_errc::no_state);
    states.push_back(f.state());
  }
  return states;
}
template <class R>
using future_of_t = std::remove_cvref_t<std::ranges::range_value_t<R>>;
}  // namespace detail

/// Python's concurrent.futures.wait: blocks until `when` is met (or `timeout` passes, if
/// given) and returns the futures split into done and not done, each in input order.
/// Thread-safe.
template <std::ranges::input_range R>
  requires detail::is_future_v<detail::future_of_t<R>>
auto wait(const R& futures, ReturnWhen when = ReturnWhen::all_completed) {
  using F = detail::future_of_t<R>;
  auto states = detail::states_of(futures);
  auto flags = detail::wait_states(states, when, nullptr);
  WaitResult<typename F::value_type> result;
  std::size_t i = 0;
  for (const auto& f : futures) (flags[i++] ? result.done : result.not_done).push_back(f);
  return result;
}

template <std::ranges::input_range R, class Rep, class Period>
  requires detail::is_future_v<detail::future_of_t<R>>
auto wait(const R& futures, ReturnWhen when, std::chrono::duration<Rep, Period> timeout) {
  using F = detail::future_of_t<R>;
  auto states = detail::states_of(futures);
  const auto deadline = detail::FutureStateBase::deadline_after(timeout);
  auto flags = detail::wait_states(states, when, &deadline);
  WaitResult<typename F::value_type> result;
  std::size_t i = 0;
  for (const auto& f : futures) (flags[i++] ? result.done : result.not_done).push_back(f);
  return result;
}

/// Python's concurrent.futures.as_completed: a range over the futures in the order they
/// finish (those already finished first). Iterating blocks for the next one; with a
/// timeout, reaching the deadline before all have finished throws TimeoutError.
/// The futures are copied in; the range is single-pass. Thread-safe.
template <class T>
class AsCompleted {
 public:
  class iterator {
   public:
    using value_type = Future<T>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const Future<T>& operator*() const { return owner_->futures_[*owner_->current_]; }
    const Future<T>* operator->() const { return &**this; }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !owner_ || !owner_->current_; }

   private:
    friend class AsCompleted;
    explicit iterator(AsCompleted* owner) : owner_(owner) {}
    AsCompleted* owner_ = nullptr;
  };

  AsCompleted(std::vector<Future<T>> futures,
              std::optional<std::chrono::steady_clock::time_point> deadline)
      : futures_(std::move(futures)),
        queue_(std::make_unique<detail::CompletionQueue>(detail::states_of(futures_))),
        deadline_(deadline) {}

  /// Blocks for the first finished future. Call once.
  iterator begin() {
    advance();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  void advance() { current_ = queue_->next(deadline_ ? &*deadline_ : nullptr); }

  std::vector<Future<T>> futures_;
  std::unique_ptr<detail::CompletionQueue> queue_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::optional<std::size_t> current_;
};

template <std::ranges::input_range R>
  requires detail::is_future_v<detail::future_of_t<R>>
auto as_completed(const R& futures) {
  using T = typename detail::future_of_t<R>::value_type;
  return AsCompleted<T>(std::vector<Future<T>>(std::ranges::begin(futures),
                                               std::ranges::end(futures)),
                        std::nullopt);
}

template <std::ranges::input_range R, class Rep, class Period>
  requires detail::is_future_v<detail::future_of_t<R>>
auto as_completed(const R& futures, std::chrono::duration<Rep, Period> timeout) {
  using T = typename detail::future_of_t<R>::value_type;
  return AsCompleted<T>(std::vector<Future<T>>(std::ranges::begin(futures),
                                               std::ranges::end(futures)),
                        detail::FutureStateBase::deadline_after(timeout));
}

}  // namespace mproc
