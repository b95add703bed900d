// Future<T>: the result of work that runs somewhere else (a thread, a worker process,
// an MPI rank), as Python's concurrent.futures.Future and multiprocessing's AsyncResult.
//
// A Future is a shared handle: copies refer to the same result. The result is set once,
// by the backend; after that every copy observes it. Once done() returns true in any
// thread, get() in any thread returns the value or rethrows the task's error without
// blocking (the completion happens-before the return of done()/wait()).
// A default-constructed Future has no state; calling anything but valid() on it throws
// std::future_error(no_state).
#pragma once

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "error.hpp"

namespace mproc {

template <class T>
class Future;

namespace detail {

/// One polite iteration of a spin loop (PAUSE on x86, YIELD on arm64).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// The state a Future and its producer share. Producers call set_value/set_exception
/// exactly once; later calls are ignored (a late result after a timeout, for example).
class FutureStateBase {
 public:
  virtual ~FutureStateBase() = default;

  bool done() const { return finished_.load(std::memory_order_acquire); }
  bool running() const {
    std::lock_guard lock(mutex_);
    return state_ == State::running;
  }
  void wait() const {
    // Results of short tasks often arrive within microseconds: poll briefly before
    // sleeping, because a wake-up from the condition variable costs a futex round trip
    // through the scheduler (tens of microseconds on a loaded machine).
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    do {
      for (int i = 0; i < 64; ++i) {
        if (finished_.load(std::memory_order_acquire)) return;
        spin_pause();
      }
    } while (std::chrono::steady_clock::now() < until);
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return state_ == State::finished; });
  }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return state_ == State::finished; });
  }
  void set_running() {
    std::lock_guard lock(mutex_);
    if (state_ == State::pending) state_ = State::running;
  }
  /// Returns false if the result was already set.
  bool set_exception(std::exception_ptr e) {
    return finish([&] { error_ = std::move(e); });
  }
  std::exception_ptr exception() const {
    wait();
    return error_;
  }
  /// Runs `cb` once the result is set: now, in this thread, if it already is; otherwise in
  /// the thread that sets the result, after the result is visible to get().
  void add_done_callback(std::function<void()> cb) {
    {
      std::lock_guard lock(mutex_);
      if (state_ != State::finished) {
        callbacks_.push_back(std::move(cb));
        return;
      }
    }
    cb();
  }

 protected:
  enum class State { pending, running, finished };

  template <class Store>
  bool finish(Store&& store) {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(mutex_);
      if (state_ == State::finished) return false;
      store();
      state_ = State::finished;
      finished_.store(true, std::memory_order_release);
      callbacks.swap(callbacks_);
    }
    cv_.notify_all();
    for (auto& cb : callbacks) cb();
    return true;
  }
  void rethrow_if_error() const {
    if (error_) std::rethrow_exception(error_);
  }

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  State state_ = State::pending;
  std::atomic<bool> finished_{false};  // state_ == finished, readable without the mutex
  std::exception_ptr error_;
  std::vector<std::function<void()>> callbacks_;
};

template <class T>
class FutureState : public FutureStateBase {
 public:
  bool set_value(T v) {
    return finish([&] { value_.emplace(std::move(v)); });
  }
  T& value() {
    wait();
    rethrow_if_error();
    return *value_;
  }
  /// For a producer that holds the only handle (Pool::map): waits, then moves the value
  /// out instead of copying it.
  T take() { return std::move(value()); }

 private:
  std::optional<T> value_;
};

template <>
class FutureState<void> : public FutureStateBase {
 public:
  bool set_value() {
    return finish([] {});
  }
  void value() {
    wait();
    rethrow_if_error();
  }
  void take() { value(); }
};

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
  /// (RemoteError, WorkerCrashed, TaskTimeout, SerializationError, Cancelled, ...).
  /// May be called any number of times, from any thread.
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

  /// Whether the result (a value or an error) is set. Never blocks.
  bool done() const { return checked().done(); }

  /// Whether a worker has started the task and it is not done yet.
  bool running() const { return checked().running(); }

  /// Blocks until done; the task's error, or nullptr if it succeeded.
  std::exception_ptr exception() const { return checked().exception(); }

  /// Calls `cb(*this)` exactly once when the result is set: at once in the calling thread
  /// if it already is, else in the thread that sets it (a pool's dispatcher thread), which
  /// it must not block for long.
  template <class F>
  void add_done_callback(F cb) const {
    checked().add_done_callback([self = *this, cb = std::move(cb)]() mutable { cb(self); });
  }

 private:
  detail::FutureState<T>& checked() const {
    if (!state_) throw std::future_error(std::future_errc::no_state);
    return *state_;
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

}  // namespace mproc
