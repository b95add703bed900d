// mproc::Pool: Python's multiprocessing.Pool, with crash isolation that never hangs.
//
// A Pool runs a function over many inputs on a fixed set of workers. With
// Backend::process (the default) the workers are processes forked from a single-threaded
// fork server that the Pool forks when it is constructed, so every worker (replacements
// included) sees this program's memory as it was at that moment, and code addresses are
// the same: a task travels as a pointer to its code plus its serialized state and
// arguments.
//
// What can be shipped: the callable must be a function pointer or a callable whose state
// is trivially copyable (a lambda capturing nothing or numbers); anything else is refused
// with a message that says what to do (pass the data as the item, or mproc::bind the
// values and shared handles). A captured pointer or reference is accepted but is only an
// address: a worker has no copy of an object created after the Pool started, so using
// one there reads garbage or crashes the worker (docs/pool.md, "What the workers see").
// Arguments and results must be serializable (mproc/serialize.hpp) and default-constructible.
//
// Failures: a task's exception is rethrown as its own type: on the process and mpi
// backends as RemoteException<E> (an E and a RemoteError, see mproc/error.hpp), on the
// thread backend as the task's own object; a worker that dies (signal, exit, abort)
// fails exactly the item it was running with WorkerCrashed, items it held but had not
// started run on other workers, and a replacement starts; an item past task_timeout is
// TaskTimeout and its worker is killed and replaced. Nothing hangs.
//
// Lifetime: the destructor finishes queued work (close() + join()); terminate() kills the
// workers at once and fails pending work with Cancelled. Every method is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "bind.hpp"
#include "detail/job.hpp"
#include "detail/results.hpp"
#include "detail/task.hpp"
#include "detail/thread_core.hpp"
#include "detail/thread_jobs.hpp"
#include "error.hpp"
#include "export.hpp"
#include "future.hpp"
#include "progress.hpp"
#include "range.hpp"
#include "serialize.hpp"
#include "shared.hpp"

namespace mproc {

/// Where a Pool's workers run.
enum class Backend {
  thread,   ///< threads of this process
  process,  ///< forked processes: crash isolation, hard timeouts
  mpi,      ///< ranks of an MPI job
};

/// Pool settings. Fields are declared in this order so designated initializers work:
/// `mproc::Pool pool({.workers = 4, .task_timeout = 2s});`
struct PoolOptions {
  /// Number of workers; 0 means cpu_count().
  unsigned workers = 0;
  Backend backend = Backend::process;
  /// Runs once in each worker before its first task (Python's initializer). If it throws,
  /// the pool is broken: pending and later work fails with BrokenPool naming the error.
  std::function<void()> initializer{};
  /// A worker exits after running this many items and a fresh one replaces it (0: never).
  unsigned max_tasks_per_child = 0;
  /// An item running longer than this fails with TaskTimeout and its worker is killed
  /// (0: no limit). With a timeout and no explicit chunksize, items are sent one by one.
  std::chrono::nanoseconds task_timeout{0};
  /// Items per chunk; 0 sizes chunks adaptively to about 0.1-1 ms of work.
  std::size_t chunksize = 0;
  /// Draw a progress bar on stderr (when it is a terminal) for every map call that does
  /// not set MapOptions::progress itself.
  bool progress = false;
  /// Write a Chrome trace-event timeline of every chunk to this file ("" = off, or the
  /// file of mproc::trace_to when the program traces): worker, start, end, items, bytes
  /// in and out, and failures, for Perfetto or `mproc trace-view`.
  /// Written when the pool is joined or destroyed; pools naming one file share one
  /// timeline. A file that cannot be written is std::invalid_argument here.
  std::string trace{};
  /// Re-run an item whose worker crashed this many times before failing it.
  unsigned retries = 0;
};

/// Per-call options of the map family.
struct MapOptions {
  /// Items per chunk; 0 uses the pool's chunksize (adaptive when that is 0 too).
  std::size_t chunksize = 0;
  /// A progress callback, or `true` for a bar on stderr (see mproc/progress.hpp); unset
  /// uses PoolOptions::progress.
  ProgressOption progress{};
  /// The call's label in a trace (PoolOptions::trace): what its chunks are called on the
  /// timeline instead of the function's name ("" = the function's name).
  std::string label{};
  /// A chunk's label in a trace from the index of its first item (wordcount: the file a
  /// block is in); overrides `label`. Called only when the pool traces, by the thread that
  /// records the chunk (a worker thread, or the process pool's dispatcher): it must be
  /// thread-safe and outlive the call. Whatever it throws is ignored.
  std::function<std::string(std::size_t)> item_label{};
};

/// Python's `callback=` and `error_callback=` of apply_async, map_async and starmap_async,
/// given as the call's last argument:
///
///   pool.apply_async(f, 7, mproc::Callbacks{.callback = cb, .error_callback = ecb});
///   pool.map_async(f, xs, {.chunksize = 8}, mproc::Callbacks{.callback = all_done});
///
/// `callback(const R&)` runs once if the task succeeds: apply_async passes its result,
/// map_async and starmap_async the whole std::vector<R> (as Python passes the list), and a
/// task returning void calls `callback()`. `error_callback` runs once if it fails
/// (cancelled included), with the error as `std::exception_ptr` or as
/// `const std::exception&` (an error that is not a std::exception then arrives as an
/// mproc::Error saying so). Either field may be left out. Both run in this process, in the
/// thread that finishes the future (a pool worker thread or the pool's dispatcher), or at
/// once in the calling thread if the task already finished; they must not block for long.
/// Future::get() may return before the callback has run; close() + join() (or the Pool's
/// destructor) returns after every callback has run. An exception thrown by a callback goes
/// to set_callback_error_handler's handler. Callables must be copy-constructible.
template <class C = std::nullptr_t, class E = std::nullptr_t>
struct Callbacks {
  C callback{};
  E error_callback{};
};

namespace detail {

template <class T>
inline constexpr bool is_callbacks_v = false;
template <class C, class E>
inline constexpr bool is_callbacks_v<Callbacks<C, E>> = true;

/// A function, a function pointer or an object with a (non-template) call operator.
template <class T>
concept looks_callable = std::is_function_v<std::remove_pointer_t<std::decay_t<T>>> ||
                         requires { &std::decay_t<T>::operator(); };

/// The decayed parameter types of a callable with one signature, as a tuple: what one
/// starmap item of a braced list is made into (`pool.starmap(add, {{1, 2}, {3, 4}})`).
/// No `type` for a callable whose parameters cannot be known (a generic lambda, an
/// overloaded call operator).
template <class F>
struct call_args {};
template <class R, class... A>
struct call_args<R(A...)> {
  using type = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct call_args<R(A...) noexcept> : call_args<R(A...)> {};
template <class R, class... A>
struct call_args<R (*)(A...)> : call_args<R(A...)> {};
template <class R, class... A>
struct call_args<R (*)(A...) noexcept> : call_args<R(A...)> {};
template <class C, class R, class... A>
struct call_args<R (C::*)(A...)> : call_args<R(A...)> {};
template <class C, class R, class... A>
struct call_args<R (C::*)(A...) const> : call_args<R(A...)> {};
template <class C, class R, class... A>
struct call_args<R (C::*)(A...) noexcept> : call_args<R(A...)> {};
template <class C, class R, class... A>
struct call_args<R (C::*)(A...) const noexcept> : call_args<R(A...)> {};
template <class F>
  requires requires { &F::operator(); }
struct call_args<F> : call_args<decltype(&F::operator())> {};

template <class Tuple, class Seq>
struct tuple_tail;
template <class... T, std::size_t... I>
struct tuple_tail<std::tuple<T...>, std::index_sequence<I...>> {
  using type =
      std::tuple<std::tuple_element_t<sizeof...(T) - sizeof...(I) + I, std::tuple<T...>>...>;
};
/// mproc::bind(f, a): the parameters of f after the bound ones.
template <class F, class... Bound>
  requires requires { typename call_args<F>::type; } &&
           (std::tuple_size_v<typename call_args<F>::type> >= sizeof...(Bound))
struct call_args<BoundCall<F, Bound...>> {
  using all = typename call_args<F>::type;
  using type = typename tuple_tail<
      all, std::make_index_sequence<std::tuple_size_v<all> - sizeof...(Bound)>>::type;
};

template <class F>
using call_args_t = typename call_args<std::decay_t<F>>::type;

template <class... Ts>
struct last_of {
  using type = void;
};
template <class T, class... Ts>
struct last_of<T, Ts...> {
  using type = std::tuple_element_t<sizeof...(Ts), std::tuple<T, Ts...>>;
};
template <class... Ts>
using last_of_t = std::remove_cvref_t<typename last_of<Ts...>::type>;

/// apply_async(f, args..., cb) written the Python way: the last argument is a callable that
/// f does not take.
template <class F, class... Args>
inline constexpr bool stray_callback_v = [] {
  if constexpr (sizeof...(Args) == 0) {
    return false;
  } else {
    return looks_callable<last_of_t<Args...>> &&
           !std::is_invocable_v<F&, std::decay_t<Args>...>;
  }
}();

/// Hands `error` to an error_callback taking std::exception_ptr or const std::exception&.
template <class E>
void call_error_callback(E& error_callback, std::exception_ptr error) {
  if constexpr (std::is_invocable_v<E&, std::exception_ptr>) {
    error_callback(std::move(error));
  } else {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      error_callback(e);
    } catch (...) {
      const Error unknown("the task failed with an exception that is not a std::exception");
      error_callback(unknown);
    }
  }
}

/// Runs `callbacks` when `future` finishes (see Callbacks).
template <class T, class C, class E>
void attach_callbacks(const Future<T>& future, Callbacks<C, E> callbacks) {
  constexpr bool has_callback = !std::is_same_v<C, std::nullptr_t>;
  constexpr bool has_error_callback = !std::is_same_v<E, std::nullptr_t>;
  if constexpr (has_callback) {
    if constexpr (std::is_void_v<T>) {
      static_assert(std::is_invocable_v<C&>,
                    "mproc::Callbacks: the task returns void, so .callback takes no arguments");
    } else {
      static_assert(std::is_invocable_v<C&, const T&>,
                    "mproc::Callbacks: .callback must take the result as const R& (for "
                    "map_async and starmap_async: the whole std::vector<R>)");
    }
  }
  if constexpr (has_error_callback) {
    static_assert(std::is_invocable_v<E&, std::exception_ptr> ||
                      std::is_invocable_v<E&, const std::exception&>,
                  "mproc::Callbacks: .error_callback must take std::exception_ptr or "
                  "const std::exception&");
  }
  if constexpr (has_callback || has_error_callback) {
    future.add_done_callback([callbacks = std::move(callbacks)](const Future<T>& f) mutable {
      std::exception_ptr error;
      try {
        error = f.exception();  // already done: does not block
      } catch (...) {
        error = std::current_exception();  // cancelled: exception() throws Cancelled
      }
      if (!error) {
        if constexpr (has_callback) {
          if constexpr (std::is_void_v<T>) {
            callbacks.callback();
          } else {
            callbacks.callback(f.get());
          }
        }
      } else if constexpr (has_error_callback) {
        call_error_callback(callbacks.error_callback, std::move(error));
      }
    });
  }
}

/// A pool backend, seen by Pool's templates. Implemented in libmproc.
class MPROC_API PoolCore {
 public:
  virtual ~PoolCore();
  virtual unsigned workers() const noexcept = 0;
  /// Queues a job. Throws PoolClosed after close()/terminate(), BrokenPool if broken.
  virtual void submit(std::shared_ptr<Job> job) = 0;
  /// A job whose pull() returned 0 for want of window may now have more.
  virtual void wake() noexcept = 0;
  /// Kills the worker running `job`'s item (Future::cancel(CancelMode::kill_running)); the
  /// item fails with Cancelled. Returns false if the job is no longer in the pool.
  virtual bool kill_running(const Job* job) = 0;
  /// Jobs that have not started yet finish as cancelled instead of running.
  virtual void cancel_pending() = 0;
  virtual void close() = 0;
  /// Throws std::logic_error from the pool's own work (it would wait for itself).
  virtual void join() = 0;
  /// From the pool's own work, only starts it: the pool stops when that work returns.
  virtual void terminate() = 0;
  /// Whether the calling thread runs this pool's own work now (its callbacks).
  virtual bool in_own_work() const noexcept = 0;
};

MPROC_API std::unique_ptr<PoolCore> make_process_pool(const PoolOptions& options);

/// Views whose values are start + i * step: mproc::range's two kinds.
template <class View>
inline constexpr bool affine_range_v = false;
template <class T>
inline constexpr bool affine_range_v<std::ranges::iota_view<T, T>> = true;
template <class T>
inline constexpr bool affine_range_v<StepRange<T>> = true;

/// Pulls items from a view and serializes them, one by one, in the dispatcher thread.
template <class View, class Arg>
class Feeder {
 public:
  explicit Feeder(View view) : view_(std::move(view)), it_(std::ranges::begin(view_)) {
    if constexpr (std::ranges::sized_range<View>)
      total_ = static_cast<std::size_t>(std::ranges::size(view_));
  }

  /// Serializes up to `max_items` items with consecutive indices, the first being `first`.
  /// An input that fails to serialize is reported through `fail(index, error)` and ends
  /// the batch, so the batch stays contiguous. Returns the number added.
  template <class Fail>
  std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                   std::vector<std::size_t>& ends, std::size_t& first, Fail&& fail) {
    first = next_index_;
    std::size_t n = 0;
    if constexpr (is_bulk_v<Arg> &&
                  std::is_convertible_v<std::ranges::range_reference_t<View>, Arg>) {
      // An argument that is its own encoding (int, double, ...) cannot fail to serialize:
      // copy its bytes. With the input's size known, the room is made once.
      std::size_t room = max_items;
      if (total_) room = std::min(room, *total_ - std::min(*total_, next_index_));
      const bool sized = total_.has_value();
      const std::size_t base = out.size();
      if (sized) out.resize(base + room * sizeof(Arg));
      ends.reserve(ends.size() + (sized ? room : 0));
      for (; n < max_items && it_ != std::ranges::end(view_); ++n, ++it_) {
        Arg value;
        try {
          value = static_cast<Arg>(*it_);
        } catch (...) {
          if (sized) out.resize(base + n * sizeof(Arg));
          ++failed_;
          ++it_;
          next_index_ += n + 1;
          fail(next_index_ - 1, std::current_exception());
          if (it_ == std::ranges::end(view_)) exhausted_ = true;
          return n;
        }
        const std::size_t at = base + n * sizeof value;
        if (!sized || at + sizeof value > out.size()) out.resize(at + sizeof value);
        std::memcpy(out.data() + at, &value, sizeof value);
        ends.push_back(at + sizeof value);
      }
      out.resize(base + n * sizeof(Arg));
      next_index_ += n;
      if (it_ == std::ranges::end(view_)) exhausted_ = true;
      return n;
    }
    while (n < max_items && it_ != std::ranges::end(view_)) {
      const std::size_t index = next_index_++;
      const std::size_t mark = out.size();
      try {
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(*it_)>, Arg>) {
          dump_into(out, *it_);
        } else {
          dump_into(out, static_cast<Arg>(*it_));
        }
      } catch (...) {
        out.resize(mark);
        ++failed_;
        ++it_;
        fail(index, std::current_exception());
        break;
      }
      ends.push_back(out.size());
      ++n;
      ++it_;
    }
    if (it_ == std::ranges::end(view_)) exhausted_ = true;
    return n;
  }

  /// A view of integers that the items' indices give (affine_range_v), as the argument
  /// type's bits: item i is start + i * step.
  static constexpr bool index_items = affine_range_v<View> && std::is_integral_v<Arg> &&
                                      !std::is_same_v<Arg, bool>;
  Job::IndexItems index_form() const noexcept
    requires index_items
  {
    const auto bits = [](auto v) {
      return static_cast<std::uint64_t>(static_cast<Arg>(v));
    };
    const std::size_t n = std::ranges::size(view_);
    const std::uint64_t start = n == 0 ? 0 : bits(view_[0]);
    return {start, n < 2 ? 1 : bits(view_[1]) - start};
  }
  /// Takes up to `max_items` items without serializing them (index_items only).
  std::size_t skip(std::size_t max_items, std::size_t& first)
    requires index_items
  {
    first = next_index_;
    const std::size_t n = std::min(max_items, *total_ - std::min(*total_, next_index_));
    it_ += static_cast<std::ranges::range_difference_t<View>>(n);
    next_index_ += n;
    if (it_ == std::ranges::end(view_)) exhausted_ = true;
    return n;
  }

  std::size_t failed() const noexcept { return failed_; }
  bool exhausted() const noexcept { return exhausted_; }
  std::optional<std::size_t> total() const noexcept { return total_; }
  std::size_t pulled() const noexcept { return next_index_; }

 private:
  View view_;
  std::ranges::iterator_t<View> it_;
  std::size_t next_index_ = 0;
  std::size_t failed_ = 0;
  bool exhausted_ = false;
  std::optional<std::size_t> total_;
};

/// A Job whose items come from a Feeder.
template <class View, class Arg>
class FeederJob : public Job {
 public:
  explicit FeederJob(View view) : feeder_(std::move(view)) {}

  std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                   std::vector<std::size_t>& ends, std::size_t& first) override {
    return feeder_.pull(max_items, out, ends, first,
                        [&](std::size_t i, std::exception_ptr e) { on_error(i, e); });
  }
  bool exhausted() const noexcept override { return feeder_.exhausted(); }
  std::optional<std::size_t> total() const noexcept override { return feeder_.total(); }
  std::size_t consumed() const noexcept override { return feeder_.pulled(); }
  std::size_t failed_inputs() const noexcept override { return feeder_.failed(); }
  std::optional<Job::IndexItems> index_items() const noexcept override {
    if constexpr (Feeder<View, Arg>::index_items)
      return feeder_.index_form();
    else
      return std::nullopt;
  }
  std::size_t pull_indices(std::size_t max_items, std::size_t& first) override {
    if constexpr (Feeder<View, Arg>::index_items)
      return feeder_.skip(max_items, first);
    else
      return Job::pull_indices(max_items, first);
  }

 protected:
  Feeder<View, Arg> feeder_;
};

/// map, map_async, starmap: every result into a vector; the first error in input order
/// fails the whole call.
template <class View, class Arg, class R>
class VectorJob final : public FeederJob<View, Arg> {
  using Base = FeederJob<View, Arg>;
  using Base::feeder_;

 public:
  using Result = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;

  VectorJob(View view, std::shared_ptr<FutureState<Result>> promise)
      : Base(std::move(view)), promise_(std::move(promise)) {
    if (auto t = feeder_.total()) results_.reserve(*t);
  }

  std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                   std::vector<std::size_t>& ends, std::size_t& first) override {
    return cover_pulled(Base::pull(max_items, out, ends, first));
  }
  std::size_t pull_indices(std::size_t max_items, std::size_t& first) override {
    return cover_pulled(Base::pull_indices(max_items, first));
  }

  bool start() override { return promise_->set_running() || !promise_->done(); }
  void on_result(std::size_t index, std::span<const std::byte> bytes) override {
    if (this->progress) this->progress->add(1);
    if constexpr (!std::is_void_v<R>) {
      try {
        results_.set(index, loads<R>(bytes));
      } catch (...) {
        errors_.record(index, std::current_exception());
      }
    }
  }
  void on_results(std::size_t first, std::size_t count, std::size_t size,
                  std::span<const std::byte> bytes) override {
    if constexpr (std::is_void_v<R>) {
      // A void map run from indices: nothing but the count comes back.
      if (size != 0 || !bytes.empty()) throw SerializationError("packed results of the wrong size");
      if (this->progress) this->progress->add(count);
    } else if constexpr (is_bulk_v<R>) {
      // The packed results are the values' own bytes.
      if (size != sizeof(R) || bytes.size() != count * sizeof(R))
        throw SerializationError("packed results of the wrong size");
      if (first + count > results_.size())
        throw SerializationError("packed results past the input");
      if (this->progress) this->progress->add(count);
      for (std::size_t k = 0; k < count; ++k) {
        R value;
        std::memcpy(&value, bytes.data() + k * sizeof(R), sizeof(R));
        results_.set(first + k, value);
      }
    } else {
      Base::on_results(first, count, size, bytes);
    }
  }
  void on_error(std::optional<std::size_t> index, std::exception_ptr error) override {
    if (this->progress) this->progress->add(1);
    errors_.record(index.value_or(0), std::move(error));
  }
  void on_done() override {
    if (this->progress) this->progress->finish();
    if (auto e = errors_.get()) {
      promise_->set_exception(e);
    } else if constexpr (std::is_void_v<R>) {
      promise_->set_value();
    } else {
      promise_->set_value(results_.take());
    }
  }
  void on_abort(std::exception_ptr error) override { abort_promise(*promise_, std::move(error)); }

 private:
  /// A slot for every item pulled so far; returns `n`.
  std::size_t cover_pulled(std::size_t n) {
    if (results_.size() < feeder_.pulled()) results_.resize(feeder_.pulled());
    return n;
  }

  std::shared_ptr<FutureState<Result>> promise_;
  ResultSlots<R> results_;
  FirstError errors_;
};

/// apply_async: one item, one future.
template <class Arg, class R>
class SingleJob final : public Job {
 public:
  SingleJob(Arg arg, std::shared_ptr<FutureState<R>> promise)
      : arg_(std::move(arg)), promise_(std::move(promise)) {}

  std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                   std::vector<std::size_t>& ends, std::size_t& first) override {
    first = 0;
    if (pulled_ || max_items == 0) return 0;
    pulled_ = true;
    if (!promise_->set_running()) {
      failed_ = true;  // cancelled before it left the pool: it never runs
      return 0;
    }
    try {
      dump_into(out, arg_);
    } catch (...) {
      failed_ = true;
      on_error(0, std::current_exception());
      return 0;
    }
    ends.push_back(out.size());
    return 1;
  }
  bool exhausted() const noexcept override { return pulled_; }
  std::optional<std::size_t> total() const noexcept override { return 1; }
  std::size_t consumed() const noexcept override { return pulled_ ? 1 : 0; }
  std::size_t failed_inputs() const noexcept override { return failed_ ? 1 : 0; }

  void on_result(std::size_t, std::span<const std::byte> bytes) override {
    try {
      if constexpr (std::is_void_v<R>) {
        promise_->set_value();
      } else {
        promise_->set_value(loads<R>(bytes));
      }
    } catch (...) {
      promise_->set_exception(std::current_exception());
    }
  }
  void on_error(std::optional<std::size_t>, std::exception_ptr error) override {
    abort_promise(*promise_, std::move(error));
  }
  void on_done() override {}
  void on_abort(std::exception_ptr error) override { abort_promise(*promise_, std::move(error)); }

 private:
  Arg arg_;
  bool pulled_ = false;
  bool failed_ = false;
  std::shared_ptr<FutureState<R>> promise_;
};

/// imap, imap_unordered: results handed to a consumer thread as they arrive, in input
/// order or not. At most `window` items are pulled but not yet consumed, so an unsized
/// input streams with bounded memory.
template <class View, class Arg, class R>
class StreamJob final : public FeederJob<View, Arg> {
  using Base = FeederJob<View, Arg>;
  using Base::feeder_;

 public:
  StreamJob(View view, bool ordered, std::size_t window)
      : Base(std::move(view)), window_(window), results_(ordered) {}

  std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                   std::vector<std::size_t>& ends, std::size_t& first) override {
    first = feeder_.pulled();
    const std::size_t room = room_now();
    return room == 0 ? 0 : Base::pull(std::min(max_items, room), out, ends, first);
  }
  std::size_t pull_indices(std::size_t max_items, std::size_t& first) override {
    first = feeder_.pulled();
    const std::size_t room = room_now();
    return room == 0 ? 0 : Base::pull_indices(std::min(max_items, room), first);
  }
  bool exhausted() const noexcept override { return feeder_.exhausted() || this->cancelled(); }

  void on_result(std::size_t index, std::span<const std::byte> bytes) override {
    if (this->progress) this->progress->add(1);
    Slot slot;
    try {
      if constexpr (!std::is_void_v<R>) slot.value = loads<R>(bytes);
    } catch (...) {
      slot.error = std::current_exception();
    }
    push(index, std::move(slot));
  }
  void on_error(std::optional<std::size_t> index, std::exception_ptr error) override {
    if (this->progress) this->progress->add(1);
    push(index.value_or(0), Slot{std::nullopt, std::move(error)});
  }
  void on_done() override {
    if (this->progress) this->progress->finish();
    std::lock_guard lock(mutex_);
    done_ = true;
    cv_.notify_all();
  }
  void on_abort(std::exception_ptr error) override {
    std::lock_guard lock(mutex_);
    abort_ = std::move(error);
    done_ = true;
    cv_.notify_all();
  }

  /// Blocks for the next result; none at the end. Returns true and fills `out` (unless R
  /// is void) or, for a failed item, `error`; false at the end. Throws an abort's error.
  bool next(std::optional<stored_t<R>>& out, std::exception_ptr& error, PoolCore& core,
            const std::chrono::steady_clock::time_point* deadline) {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (auto slot = results_.take()) {
        lock.unlock();
        core.wake();  // the window moved
        slot->deliver(out, error);
        return true;
      }
      if (done_) {
        // After an abort some results never come: report it instead of waiting for them.
        if (abort_) std::rethrow_exception(abort_);
        if (results_.empty()) return false;
      }
      if (deadline == nullptr)
        cv_.wait(lock);
      else if (cv_.wait_until(lock, *deadline) == std::cv_status::timeout)
        throw TimeoutError("map: the next result did not arrive before the timeout");
    }
  }

 private:
  using Slot = typename ResultWindow<R>::Slot;
  /// How many further items the window takes now (0 once the consumer gave up).
  std::size_t room_now() {
    if (this->cancelled()) return 0;
    std::lock_guard lock(mutex_);
    return results_.room(feeder_.pulled(), window_);
  }
  void push(std::size_t index, Slot slot) {
    std::lock_guard lock(mutex_);
    results_.put(index, std::move(slot));
    cv_.notify_all();
  }

  const std::size_t window_;
  std::mutex mutex_;
  std::condition_variable cv_;
  ResultWindow<R> results_;
  bool done_ = false;
  std::exception_ptr abort_;
};

/// map_reduce: workers fold items into partials; the pool combines the partials.
template <class View, class Arg, class R, class Rd>
class ReduceJob final : public FeederJob<View, Arg> {
  using Base = FeederJob<View, Arg>;

 public:
  ReduceJob(View view, Rd reduce, std::shared_ptr<FutureState<R>> promise,
            std::optional<R> empty = std::nullopt)
      : Base(std::move(view)),
        reduce_(std::move(reduce)),
        promise_(std::move(promise)),
        empty_(std::move(empty)) {}

  bool start() override { return promise_->set_running() || !promise_->done(); }
  void on_result(std::size_t, std::span<const std::byte>) override {
    if (this->progress) this->progress->add(1);
  }
  void on_partial(std::span<const std::byte> bytes) override {
    try {
      R r = loads<R>(bytes);
      if (!acc_)
        acc_.emplace(std::move(r));
      else
        fold_into(reduce_, *acc_, std::move(r));
    } catch (...) {
      on_error(std::nullopt, std::current_exception());
    }
  }
  void on_error(std::optional<std::size_t> index, std::exception_ptr error) override {
    if (index && this->progress) this->progress->add(1);
    // An error of the whole call (a partial that failed) comes after every item's.
    errors_.record(index.value_or(static_cast<std::size_t>(-1)), std::move(error));
  }
  void on_done() override {
    if (this->progress) this->progress->finish();
    if (auto e = errors_.get())
      promise_->set_exception(e);
    else
      promise_->set_value(acc_ ? std::move(*acc_) : empty_ ? std::move(*empty_) : R{});
  }
  void on_abort(std::exception_ptr error) override { abort_promise(*promise_, std::move(error)); }

 private:
  Rd reduce_;
  std::shared_ptr<FutureState<R>> promise_;
  std::optional<R> empty_;  ///< the result of no partial at all (Pool::fold's init)
  std::optional<R> acc_;
  FirstError errors_;
};


/// Whether a map input is an mproc::Array (or a slice of one), whose elements a process
/// pool's workers read where they lie.
template <class In>
inline constexpr bool shared_array_v = false;
template <class T>
inline constexpr bool shared_array_v<Array<T>> = true;

/// g(front..., pick(last)) for args = (front..., last): how the wrappers below reach the
/// user's function, whose bound values (if any) come before the item's index.
template <class G, class Pick, class... A>
decltype(auto) call_with_last(const G& g, Pick&& pick, const A&... args) {
  const auto all = std::forward_as_tuple(args...);
  constexpr std::size_t n = sizeof...(A);
  return [&]<std::size_t... K>(std::index_sequence<K...>) -> decltype(auto) {
    return std::invoke(g, std::get<K>(all)..., pick(std::get<n - 1>(all)));
  }(std::make_index_sequence<n - 1>{});
}

/// Whether f can be called with a `const T&`, asked of the bound function itself for an
/// mproc::bind (whose call operator is not SFINAE-friendly).
template <class F, class T>
struct takes_const_element : std::is_invocable<const F&, const T&> {};
template <class G, class... Vs, class T>
struct takes_const_element<BoundCall<G, Vs...>, T>
    : std::is_invocable<const G&, const Vs&..., const T&> {};
template <class F, class T>
inline constexpr bool takes_const_element_v = takes_const_element<F, T>::value;

/// Whether a blocking map over `In` may copy it into a shared mapping for the call (see
/// Pool::map): a contiguous, sized input of plain values that f takes as const T&, and a
/// callable that can be shipped wrapped.
template <class F, class In>
concept shares_input =
    std::ranges::contiguous_range<In> && std::ranges::sized_range<In> && !shared_array_v<std::remove_cvref_t<In>> &&
    std::is_trivially_copyable_v<std::ranges::range_value_t<In>> &&
    is_bulk_v<std::ranges::range_value_t<In>> && alignof(std::ranges::range_value_t<In>) <= 64 &&
    shippable<F> && takes_const_element_v<F, std::ranges::range_value_t<In>>;
/// The input size from which that copy pays.
inline constexpr std::size_t shared_input_bytes = std::size_t{2} << 20;
/// The largest such mapping a pool keeps for its next call (InputStaging).
inline constexpr std::size_t staging_keep_bytes = std::size_t{32} << 20;

/// The shared mapping a blocking Pool::map copies a big contiguous input into, kept for
/// the pool's next such call: its pages are faulted in already and the workers keep
/// their mappings of it, so the next call over as many values of the same type only
/// copies them. Kept up to staging_keep_bytes, until a call needs a bigger one or the
/// pool is destroyed; a call while another uses it makes its own.
class InputStaging {
 public:
  /// An Array holding a copy of `values`. `kept` says whether it is the kept mapping, to
  /// be given back with release() when the call is over.
  template <class T>
  Array<T> stage(std::span<const T> values, bool& kept) {
    const std::size_t n = values.size();
    std::unique_lock lock(mutex_);
    if (busy_ || (!fits<T>(n) && n * sizeof(T) > staging_keep_bytes)) {
      lock.unlock();
      return Array<T>(values);
    }
    if (!fits<T>(n)) {
      array_.reset();  // the old mapping goes first
      array_ = std::make_shared<Array<T>>(values);
      type_ = &typeid(T);
      capacity_ = n;
      busy_ = kept = true;
      return *static_cast<const Array<T>*>(array_.get());
    }
    busy_ = kept = true;
    Array<T> staged = static_cast<const Array<T>*>(array_.get())->slice(0, n);
    lock.unlock();
    std::memcpy(staged.data(), values.data(), n * sizeof(T));
    return staged;
  }
  void release() noexcept {
    std::lock_guard lock(mutex_);
    busy_ = false;
  }

 private:
  template <class T>
  bool fits(std::size_t n) const noexcept {
    return array_ && type_ == &typeid(T) && capacity_ >= n;
  }

  std::mutex mutex_;
  std::shared_ptr<void> array_;  // an Array<T>, T as type_ says
  const std::type_info* type_ = nullptr;
  std::size_t capacity_ = 0;
  bool busy_ = false;
};

/// A map over an Array, run from indices: element `i` of the bound array, handed to g.
template <class G>
struct ElementCall {
  using wrapped_call = G;
  G g;
  template <class T, class... A>
  decltype(auto) operator()(const Array<T>& in, const A&... rest) const {
    return call_with_last(g, [&](std::size_t i) -> const T& { return in[i]; }, rest...);
  }
};

/// map_into's callable: out[i] = g(in[i]).
template <class G>
struct IntoCall {
  using wrapped_call = G;
  G g;
  template <class T, class U, class... A>
  void operator()(const Array<T>& in, const Array<U>& out, const A&... rest) const {
    const std::size_t i = std::get<sizeof...(A) - 1>(std::forward_as_tuple(rest...));
    out[i] = static_cast<U>(call_with_last(g, [&](std::size_t k) -> const T& { return in[k]; },
                                           rest...));
  }
};

/// map_rows' callable: row `i` of the bound table, handed to g.
template <class G>
struct RowCall {
  using wrapped_call = G;
  G g;
  template <class T, class... A>
  decltype(auto) operator()(const Array2D<T>& table, const A&... rest) const {
    return call_with_last(g, [&](std::size_t i) { return table.row(i); }, rest...);
  }
};

/// W<G> bound to `lead...`, for a shippable f: f = mproc::bind(g, vs...) gives
/// bind(W<G>{g}, lead..., vs...), any other f bind(W<F>{f}, lead...). The wrapper is
/// called with (lead..., vs..., the item's index).
template <template <class> class W, class F, class... Lead>
auto wrap_call(F f, const Lead&... lead) {
  if constexpr (is_bound_call_v<F>) {
    using G = std::remove_cvref_t<decltype(f.function())>;
    return std::apply(
        [&](const auto&... vs) { return mproc::bind(W<G>{f.function()}, lead..., vs...); },
        f.values());
  } else {
    return mproc::bind(W<F>{f}, lead...);
  }
}

/// Whether a call with these types can go to a worker process: the callable is shippable
/// and the arguments and results are serializable and default-constructible.
template <CallKind kind, class F, class Arg, class R>
concept process_ready =
    shippable<F> && serializable<Arg> && std::default_initializable<Arg> &&
    (std::is_void_v<R> || (serializable<R> && std::default_initializable<R>)) &&
    std::same_as<R, item_result_t<kind, F, Arg>>;

/// Throws std::invalid_argument explaining why a call cannot go to a worker process.
[[noreturn]] MPROC_API void throw_not_shippable(const char* method, bool callable_ok,
                                                bool types_ok);

}  // namespace detail

/// The results of imap / imap_unordered: an input range that blocks for each next result.
/// A failed item's error is thrown where the item is reached, as Python's next() raises
/// it: by dereferencing the iterator that stands at it (every time), or by incrementing
/// it without having dereferenced it (once, leaving it where it was; the next increment
/// moves on). begin() and increments that move never throw, so in
/// `for (auto r : pool.imap(f, xs))` the error comes out of the loop's body, after the
/// items before it. The stream goes on after an item's error. An error of the whole
/// stream (the pool terminated or broken, the executors' map timeout) is reported the
/// same way, once; the next increment ends the stream. Destroying it before the end stops
/// pulling further inputs. Not thread-safe.
template <class R>
class ResultStream {
 public:
  /// Fills `out` (or, for a failed item, `error`) with the next result and returns true,
  /// or returns false at the end. Throws for an error of the whole stream.
  using Next = std::function<bool(std::optional<detail::stored_t<R>>&, std::exception_ptr&,
                                  const std::chrono::steady_clock::time_point*)>;

  class iterator {
   public:
    using value_type = detail::stored_t<R>;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    /// The result here. Throws the item's error if it failed.
    value_type& operator*() const { return stream_->get(); }
    value_type* operator->() const { return &stream_->get(); }
    /// Blocks for the next result. Throws only to report an error that was not
    /// dereferenced (see the class comment).
    iterator& operator++() {
      stream_->increment();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !stream_ || stream_->ended_; }

   private:
    friend class ResultStream;
    explicit iterator(ResultStream* s) : stream_(s) {}
    ResultStream* stream_ = nullptr;
  };

  ResultStream(Next next, std::function<void()> stop)
      : next_(std::move(next)), stop_(std::move(stop)) {}
  ResultStream(ResultStream&&) noexcept = default;
  ResultStream& operator=(ResultStream&&) noexcept = default;
  ~ResultStream() {
    if (stop_) stop_();
  }

  /// Blocks for the first result; does not throw its error (the iterator does). Call once.
  iterator begin() {
    advance();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  /// Every later wait for a result ends at `deadline` with TimeoutError (the executors'
  /// map timeout).
  void set_deadline(std::chrono::steady_clock::time_point deadline) { deadline_ = deadline; }

 private:
  detail::stored_t<R>& get() {
    if (error_) {
      reported_ = true;
      std::rethrow_exception(error_);
    }
    return *current_;
  }

  void increment() {
    if (error_ && !reported_) {
      // Skipped without a look: the error is not dropped silently.
      reported_ = true;
      std::rethrow_exception(error_);
    }
    if (error_ && whole_stream_) {
      error_ = nullptr;
      ended_ = true;
      return;
    }
    advance();
  }

  // Keeps what the next step gave (a value, an item's error or an error of the whole
  // stream) for the iterator to hand out; never throws it.
  void advance() {
    current_.reset();
    error_ = nullptr;
    reported_ = whole_stream_ = false;
    try {
      ended_ = !next_(current_, error_, deadline_ ? &*deadline_ : nullptr);
    } catch (...) {
      error_ = std::current_exception();
      whole_stream_ = true;
    }
  }

  Next next_;
  std::function<void()> stop_;
  std::optional<detail::stored_t<R>> current_;
  std::exception_ptr error_;   // the error at this position, if it failed
  bool reported_ = false;      // error_ has been thrown to the caller
  bool whole_stream_ = false;  // error_ ends the stream
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  bool ended_ = false;
};

/// A pool of workers. See the top of this header for the guarantees.
class MPROC_API Pool {
 public:
  /// Starts the workers (Backend::process: forks the fork server, which forks them;
  /// Backend::thread: starts the threads). Throws std::system_error if the OS refuses,
  /// std::invalid_argument for bad options.
  explicit Pool(PoolOptions options = {});
  /// Pool({.workers = workers}).
  explicit Pool(unsigned workers);
  /// close() + join(): finishes queued work. Never throws. Destroyed by the pool's own
  /// work (a done-callback dropping the last executor), it hands the join to a thread of
  /// its own and returns: the queued work still finishes, and nothing is left behind.
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  unsigned workers() const noexcept;
  Backend backend() const noexcept { return backend_; }

  /// Python's Pool.map: f over every input, results in input order. Blocks. Throws the
  /// error of the first failed item in input order. A single-pass input (a generator,
  /// mproc::lines) is pulled as the workers take it, on every backend: only the results
  /// are kept.
  template <class F, std::ranges::input_range In>
  auto map(F f, In&& inputs, MapOptions opts = {}) {
    if constexpr (!std::ranges::forward_range<std::views::all_t<In>>) {
      // The thread backend's map indexes its input, so it would copy a single-pass input
      // whole first; an ordered stream pulls it in a bounded window instead.
      if (threads_)
        return collect(submit_stream<detail::CallKind::single>(
            std::move(f), std::forward<In>(inputs), opts, true, "map"));
    }
    if constexpr (detail::shares_input<F, In>) {
      // A big contiguous input of plain values is copied once into a shared mapping made
      // for the call, which the workers read where it lies, instead of through the rings
      // (measured faster from about 2 MiB: docs/benchmarks.md). The pool keeps the
      // mapping for its next such call (detail::InputStaging).
      const std::size_t n = std::ranges::size(inputs);
      using T = std::ranges::range_value_t<In>;
      if (!threads_ && backend_ == Backend::process && n * sizeof(T) >= detail::shared_input_bytes) {
        std::optional<Array<T>> shared;
        bool kept = false;
        try {
          shared.emplace(staging_.stage(std::span<const T>(std::ranges::data(inputs), n), kept));
        } catch (const std::system_error&) {
          // No shared memory to spare: the rings carry the input instead.
        }
        if (shared) {
          struct GiveBack {
            detail::InputStaging* staging;
            ~GiveBack() {
              if (staging) staging->release();
            }
          } give_back{kept ? &staging_ : nullptr};
          return submit_vector<detail::CallKind::single>(std::move(f), *shared, opts, "map")
              ->take();
        }
      }
    }
    return submit_vector<detail::CallKind::single>(std::move(f), std::forward<In>(inputs),
                                                   opts, "map")
        ->take();
  }

  /// map over a braced list: `pool.map(f, {1, 2, 3})`.
  template <class F, class T>
  auto map(F f, std::initializer_list<T> inputs, MapOptions opts = {}) {
    return map(std::move(f), std::vector<T>(inputs), std::move(opts));
  }

  /// map without blocking: a Future of the results.
  template <class F, std::ranges::input_range In>
  auto map_async(F f, In&& inputs, MapOptions opts = {}) {
    return Future(submit_vector<detail::CallKind::single>(std::move(f), std::forward<In>(inputs),
                                                          opts, "map_async"));
  }

  /// map_async with Python's callback= / error_callback= (see Callbacks): `callback` gets
  /// the whole vector of results.
  template <class F, std::ranges::input_range In, class C, class E>
  auto map_async(F f, In&& inputs, Callbacks<C, E> callbacks) {
    return map_async(std::move(f), std::forward<In>(inputs), MapOptions{}, std::move(callbacks));
  }
  template <class F, std::ranges::input_range In, class C, class E>
  auto map_async(F f, In&& inputs, MapOptions opts, Callbacks<C, E> callbacks) {
    auto future = map_async(std::move(f), std::forward<In>(inputs), std::move(opts));
    detail::attach_callbacks(future, std::move(callbacks));
    return future;
  }
  /// map_async over a braced list: `pool.map_async(f, {1, 2, 3})`.
  template <class F, class T>
  auto map_async(F f, std::initializer_list<T> inputs, MapOptions opts = {}) {
    return map_async(std::move(f), std::vector<T>(inputs), std::move(opts));
  }
  template <class F, class T, class C, class E>
  auto map_async(F f, std::initializer_list<T> inputs, Callbacks<C, E> callbacks) {
    return map_async(std::move(f), std::vector<T>(inputs), MapOptions{}, std::move(callbacks));
  }
  template <class F, class T, class C, class E>
  auto map_async(F f, std::initializer_list<T> inputs, MapOptions opts,
                 Callbacks<C, E> callbacks) {
    return map_async(std::move(f), std::vector<T>(inputs), std::move(opts),
                     std::move(callbacks));
  }
  /// A callable passed where Python's callback= would go: refused with what to write.
  template <class F, std::ranges::input_range In, class Cb, class... More>
    requires detail::looks_callable<Cb> && (!std::is_convertible_v<Cb, MapOptions>)
  Future<void> map_async(F, In&&, Cb&&, More&&...) {
    static_assert(detail::always_false_v<Cb>,
                  "map_async: pass callbacks as mproc::Callbacks{.callback = cb, "
                  ".error_callback = ecb}, the last argument (after the MapOptions, if any)");
    return {};
  }
  template <class F, std::ranges::input_range In, class Cb, class... More>
    requires detail::looks_callable<Cb>
  Future<void> map_async(F, In&&, MapOptions, Cb&&, More&&...) {
    static_assert(detail::always_false_v<Cb>,
                  "map_async: pass callbacks as mproc::Callbacks{.callback = cb, "
                  ".error_callback = ecb}, the last argument (after the MapOptions, if any)");
    return {};
  }

  /// Python's Pool.starmap: each input is a tuple (or pair) unpacked into f's arguments.
  template <class F, std::ranges::input_range In>
  auto starmap(F f, In&& inputs, MapOptions opts = {}) {
    return submit_vector<detail::CallKind::unpack>(std::move(f), std::forward<In>(inputs),
                                                   opts, "starmap")
        ->take();
  }

  /// starmap over a braced list of argument lists: `pool.starmap(add, {{1, 2}, {3, 4}})`.
  /// Each inner list makes a std::tuple of f's parameter types, so f must have one
  /// signature (a function, or a lambda that is not generic).
  template <class F>
  auto starmap(F f, std::initializer_list<detail::call_args_t<F>> inputs, MapOptions opts = {}) {
    return starmap(std::move(f), std::vector<detail::call_args_t<F>>(inputs), std::move(opts));
  }

  /// starmap without blocking: a Future of the results.
  template <class F, std::ranges::input_range In>
  auto starmap_async(F f, In&& inputs, MapOptions opts = {}) {
    return Future(submit_vector<detail::CallKind::unpack>(std::move(f), std::forward<In>(inputs),
                                                          opts, "starmap_async"));
  }

  /// starmap_async with Python's callback= / error_callback= (see Callbacks).
  template <class F, std::ranges::input_range In, class C, class E>
  auto starmap_async(F f, In&& inputs, Callbacks<C, E> callbacks) {
    return starmap_async(std::move(f), std::forward<In>(inputs), MapOptions{},
                         std::move(callbacks));
  }
  template <class F, std::ranges::input_range In, class C, class E>
  auto starmap_async(F f, In&& inputs, MapOptions opts, Callbacks<C, E> callbacks) {
    auto future = starmap_async(std::move(f), std::forward<In>(inputs), std::move(opts));
    detail::attach_callbacks(future, std::move(callbacks));
    return future;
  }
  /// starmap_async over a braced list of argument lists (see the braced starmap).
  template <class F>
  auto starmap_async(F f, std::initializer_list<detail::call_args_t<F>> inputs,
                     MapOptions opts = {}) {
    return starmap_async(std::move(f), std::vector<detail::call_args_t<F>>(inputs),
                         std::move(opts));
  }
  template <class F, class C, class E>
  auto starmap_async(F f, std::initializer_list<detail::call_args_t<F>> inputs,
                     Callbacks<C, E> callbacks) {
    return starmap_async(std::move(f), std::vector<detail::call_args_t<F>>(inputs), MapOptions{},
                         std::move(callbacks));
  }
  template <class F, class C, class E>
  auto starmap_async(F f, std::initializer_list<detail::call_args_t<F>> inputs,
                     MapOptions opts, Callbacks<C, E> callbacks) {
    return starmap_async(std::move(f), std::vector<detail::call_args_t<F>>(inputs),
                         std::move(opts), std::move(callbacks));
  }
  template <class F, std::ranges::input_range In, class Cb, class... More>
    requires detail::looks_callable<Cb> && (!std::is_convertible_v<Cb, MapOptions>)
  Future<void> starmap_async(F, In&&, Cb&&, More&&...) {
    static_assert(detail::always_false_v<Cb>,
                  "starmap_async: pass callbacks as mproc::Callbacks{.callback = cb, "
                  ".error_callback = ecb}, the last argument (after the MapOptions, if any)");
    return {};
  }
  template <class F, std::ranges::input_range In, class Cb, class... More>
    requires detail::looks_callable<Cb>
  Future<void> starmap_async(F, In&&, MapOptions, Cb&&, More&&...) {
    static_assert(detail::always_false_v<Cb>,
                  "starmap_async: pass callbacks as mproc::Callbacks{.callback = cb, "
                  ".error_callback = ecb}, the last argument (after the MapOptions, if any)");
    return {};
  }

  /// Python's Pool.imap: a lazy range of results in input order. The input is pulled as
  /// results are consumed (bounded memory). Keep `inputs` alive while iterating if it is
  /// an lvalue.
  template <class F, std::ranges::input_range In>
  auto imap(F f, In&& inputs, MapOptions opts = {}) {
    return submit_stream<detail::CallKind::single>(std::move(f), std::forward<In>(inputs), opts,
                                                   true, "imap");
  }

  /// imap over a braced list: `pool.imap(f, {1, 2, 3})` (the stream owns a copy).
  template <class F, class T>
  auto imap(F f, std::initializer_list<T> inputs, MapOptions opts = {}) {
    return imap(std::move(f), std::vector<T>(inputs), std::move(opts));
  }

  /// As imap, in completion order.
  template <class F, std::ranges::input_range In>
  auto imap_unordered(F f, In&& inputs, MapOptions opts = {}) {
    return submit_stream<detail::CallKind::single>(std::move(f), std::forward<In>(inputs), opts,
                                                   false, "imap_unordered");
  }

  template <class F, class T>
  auto imap_unordered(F f, std::initializer_list<T> inputs, MapOptions opts = {}) {
    return imap_unordered(std::move(f), std::vector<T>(inputs), std::move(opts));
  }

  /// Python's Pool.apply: runs f(args...) in a worker and returns its result. Blocks.
  template <class F, class... Args>
  auto apply(F f, Args&&... args) {
    return submit_apply("apply", std::move(f), std::forward<Args>(args)...)->take();
  }

  /// Runs f(args...) in a worker; a Future of its result. On the process backend the
  /// Future's cancel(CancelMode::kill_running) can stop it while it runs. A last argument
  /// of type mproc::Callbacks is Python's callback= / error_callback= (see Callbacks), not
  /// an argument of f: `apply_async(f, 7, mproc::Callbacks{.callback = cb})`.
  template <class F, class... Args>
  auto apply_async(F f, Args&&... args) {
    if constexpr (detail::is_callbacks_v<detail::last_of_t<Args...>>) {
      return apply_async_with(std::move(f),
                              std::forward_as_tuple(std::forward<Args>(args)...),
                              std::make_index_sequence<sizeof...(Args) - 1>{});
    } else if constexpr (detail::stray_callback_v<F, Args...>) {
      static_assert(detail::always_false_v<F>,
                    "apply_async: f does not take the last argument, a callable; pass "
                    "callbacks as mproc::Callbacks{.callback = cb, .error_callback = ecb}, "
                    "the last argument");
      return Future<void>{};  // only the assertion above is reported
    } else {
      return Future(submit_apply("apply_async", std::move(f), std::forward<Args>(args)...));
    }
  }

  /// Maps f over the inputs and reduces the results with `reduce` inside the workers, then
  /// combines the workers' partials. `reduce` is either R(R, R) or void(R& acc, R&& item)
  /// (in place, for merging maps); it must be associative and commutative, since partials
  /// combine in completion order. Blocks; throws the first failed item's error.
  template <class F, class Rd, std::ranges::input_range In>
  auto map_reduce(F f, Rd reduce, In&& inputs, MapOptions opts = {}) {
    auto view = std::views::all(std::forward<In>(inputs));
    using View = decltype(view);
    using Arg = std::remove_cvref_t<std::ranges::range_value_t<View>>;
    using R = detail::thread_item_result_t<detail::CallKind::single, F,
                                           std::ranges::range_reference_t<View>>;
    static_assert(!std::is_void_v<R>, "map_reduce: the map function must return a value");
    auto promise = std::make_shared<detail::FutureState<R>>();
    auto progress = make_progress(opts, view);
    if (threads_) {
      thread_vector<detail::CallKind::single, R, Rd>(std::move(view), std::move(f),
                                                     std::move(reduce), opts, promise,
                                                     std::move(progress), "map_reduce");
    } else if constexpr (detail::process_ready<detail::CallKind::single, F, Arg, R> &&
                         detail::shippable<Rd>) {
      auto job = std::make_shared<detail::ReduceJob<View, Arg, R, Rd>>(std::move(view), reduce,
                                                                        promise);
      describe_job(*job, &detail::ReduceTrampoline<detail::CallKind::single, F, Rd, Arg>::vtable,
                   detail::MapReduceCall<F, Rd>{f, reduce}, f, "map_reduce", opts,
                   std::move(progress));
      core().submit(std::move(job));
    } else {
      detail::throw_not_shippable("map_reduce", detail::shippable<F> && detail::shippable<Rd>,
                                  false);
    }
    return promise->take();
  }

  /// Folds every item into an accumulator inside the workers, then combines the
  /// workers' accumulators: the form of map_reduce for a big accumulator, such as a
  /// word table, which each item adds to in place instead of making a partial of its own
  /// (tbb::parallel_reduce's body and join). Each worker's accumulator starts as a copy
  /// of `init`, so `init` must be an identity of `combine` (0 for a sum, an empty table
  /// for a merge); an empty input gives `init`. `fold_fn` is void(R& acc, item) or
  /// R(R acc, item); `combine` is void(R& acc, R&& other) or R(R, R), and must be
  /// associative and commutative, since accumulators combine in completion order.
  /// Blocks; throws the first failed item's error. A worker that dies loses the items
  /// already in its accumulator: the call throws WorkerCrashed, as map_reduce does.
  template <class R, class Fd, class Cb, std::ranges::input_range In>
  R fold(R init, Fd fold_fn, Cb combine, In&& inputs, MapOptions opts = {}) {
    auto view = std::views::all(std::forward<In>(inputs));
    using View = decltype(view);
    using Arg = std::remove_cvref_t<std::ranges::range_value_t<View>>;
    static_assert(std::is_invocable_v<Fd&, R&, std::ranges::range_reference_t<View>> ||
                      std::is_invocable_r_v<R, Fd&, R, std::ranges::range_reference_t<View>>,
                  "Pool::fold: fold_fn must be void(R& acc, item) or R(R acc, item), with R "
                  "the type of init");
    if (threads_) {
      // Each thread that takes items folds them into an accumulator of its own.
      auto promise = std::make_shared<detail::FutureState<R>>();
      auto progress = make_progress(opts, view);
      thread_vector<detail::CallKind::single, R>(
          std::move(view), fold_fn, detail::FoldCall<R, Fd, Cb>{std::move(init), fold_fn, std::move(combine)},
          opts, promise, std::move(progress), "fold");
      return promise->take();
    } else if constexpr (detail::shippable<Fd> && detail::shippable<Cb> &&
                         serializable<Arg> && std::default_initializable<Arg> &&
                         serializable<R> && std::default_initializable<R>) {
      auto promise = std::make_shared<detail::FutureState<R>>();
      auto progress = make_progress(opts, view);
      auto job = std::make_shared<detail::ReduceJob<View, Arg, R, Cb>>(std::move(view), combine,
                                                                        promise, init);
      describe_job(*job, &detail::FoldTrampoline<R, Fd, Cb, Arg>::vtable,
                   detail::FoldCall<R, Fd, Cb>{std::move(init), fold_fn, combine}, fold_fn, "fold",
                   opts, std::move(progress));
      core().submit(std::move(job));
      return promise->take();
    } else {
      detail::throw_not_shippable("fold", detail::shippable<Fd> && detail::shippable<Cb>, false);
    }
  }

  /// Seed 003's "parallelize a DataFrame" row by row: f(row) for every row of `table`,
  /// where f takes the row as std::span<T> (to write it in place) or std::span<const T>.
  /// If f returns a value, the results come back as a std::vector in row order; if it
  /// returns void, map_rows returns once every row is done and the writes are visible
  /// here. Zero copy: the rows stay in shared memory and only row indices travel (the
  /// table goes to each worker once, as a handle). Blocks. Throws the error of the first
  /// failed row (a crash fails that row alone with WorkerCrashed; the other rows run).
  /// On Backend::mpi with more than one rank it throws std::invalid_argument: the ranks
  /// may be on other machines, which cannot map this machine's shared memory.
  template <class F, class T>
  auto map_rows(F f, const Array2D<T>& table, MapOptions opts = {}) {
    constexpr bool takes_row = std::is_invocable_v<const F&, std::span<T>>;
    static_assert(takes_row,
                  "Pool::map_rows: f must take one row of the table as std::span<T> or "
                  "std::span<const T>, with T the table's element type (Array2D<T>)");
    if constexpr (takes_row) {
      if (backend_ == Backend::mpi && !threads_)
        throw std::invalid_argument(
            "Pool::map_rows: an Array2D lives in this machine's shared memory, which the "
            "ranks of an MPI job cannot share; on Backend::mpi map over the rows as values "
            "(pool.map(f, rows)) instead");
      const auto rows = range(static_cast<std::size_t>(table.rows()));
      if constexpr (detail::shippable<F>) {
        return map(detail::wrap_call<detail::RowCall>(std::move(f), table), rows, std::move(opts));
      } else {
        if (!threads_) detail::throw_not_shippable("map_rows", false, false);
        return map([call = detail::RowCall<F>{std::move(f)}, table](std::size_t i) {
                     return call(table, i);
                   },
                   rows, std::move(opts));
      }
    }
  }

  /// out[i] = f(in[i]) for every i, for Arrays (or slices of them) of one size: a map
  /// whose data never travels. On Backend::process the workers read `in` and write `out`
  /// where they lie in shared memory; each chunk travels as its first index and count
  /// (the arrays' handles go to each worker once). Blocks. As map: every item runs, then
  /// the error of the first failed item in input order is thrown; the items that
  /// succeeded have written their results. Throws std::invalid_argument if the sizes
  /// differ, and on Backend::mpi with more than one rank (see map_rows).
  template <class F, class T, class U>
  void map_into(F f, const Array<T>& in, const Array<U>& out, MapOptions opts = {}) {
    static_assert(detail::takes_const_element_v<F, T>,
                  "Pool::map_into: f must take one element of the input Array (const T&)");
    if constexpr (detail::takes_const_element_v<F, T>) {
      using R = std::invoke_result_t<const F&, const T&>;
      static_assert(!std::is_void_v<R> && std::is_convertible_v<R, U>,
                    "Pool::map_into: f's result must convert to the output Array's element "
                    "type");
      if (in.size() != out.size())
        throw std::invalid_argument(
            "Pool::map_into: the input has " + std::to_string(in.size()) +
            " elements, the output " + std::to_string(out.size()));
      if (backend_ == Backend::mpi && !threads_)
        throw std::invalid_argument(
            "Pool::map_into: an Array lives in this machine's shared memory, which the ranks "
            "of an MPI job cannot share; on Backend::mpi use pool.map(f, values) instead");
      if constexpr (detail::shippable<F>) {
        map(detail::wrap_call<detail::IntoCall>(std::move(f), in, out), range(in.size()),
            std::move(opts));
      } else {
        if (!threads_) detail::throw_not_shippable("map_into", false, false);
        map([call = detail::IntoCall<F>{std::move(f)}, in, out](std::size_t i) {
              call(in, out, i);
            },
            range(in.size()), std::move(opts));
      }
    }
  }

  /// No more work may be submitted (PoolClosed); queued work still runs. As in Python, a
  /// process pool's workers then exit as soon as that work is done, without join().
  void close();
  /// Waits until all submitted work is done and the workers have exited. Call close() first
  /// (as in Python); join() without close() closes. Throws std::logic_error from the
  /// pool's own work (a task of a thread pool, a done-callback), which it would wait for.
  void join();
  /// Kills the workers now (Backend::thread: running tasks finish, since a thread cannot
  /// be killed); pending work fails with Cancelled. From the pool's own work (a
  /// done-callback) it only starts: the pool stops as soon as that work returns.
  void terminate();
  /// Work submitted so far that has not started is cancelled (its futures report
  /// cancelled()); running work goes on. Used by executors' shutdown(cancel_futures).
  void cancel_pending();

 private:
  detail::PoolCore& core() const { return *core_; }
  bool in_own_work() const noexcept;
  /// Whether shipped code must be portable: the mpi backend's ranks load the program at
  /// other addresses.
  bool portable() const noexcept { return backend_ == Backend::mpi; }

  /// Fills in a process job before it is submitted: its trampoline, its shipped callable
  /// `call`, and what the call's options say of chunking, the trace (named after `f`) and
  /// progress.
  template <class Job, class Call, class F>
  void describe_job(Job& job, const detail::TaskVTable* vtable, const Call& call, const F& f,
                    const char* method, const MapOptions& opts,
                    std::shared_ptr<detail::ProgressReporter> progress) const {
    job.vtable = vtable;
    detail::encode_job_callable(call, job.state, portable());
    job.chunksize = opts.chunksize;
    job.method = method;
    job.code = detail::trace_code(f, opts.label);
    job.item_label = opts.item_label;
    job.progress = std::move(progress);
  }

  template <class View>
  std::shared_ptr<detail::ProgressReporter> make_progress(const MapOptions& opts,
                                                          const View& view) const {
    std::optional<std::size_t> total;
    if constexpr (std::ranges::sized_range<View>)
      total = static_cast<std::size_t>(std::ranges::size(view));
    if (opts.progress) return detail::make_progress(opts.progress, total);
    if (progress_bar_) return detail::make_progress(ProgressOption(true), total);
    return nullptr;
  }

  std::size_t thread_chunksize(const MapOptions& opts) const noexcept {
    return opts.chunksize != 0 ? opts.chunksize : chunksize_;
  }

  /// map, starmap, map_reduce on the thread backend.
  template <detail::CallKind kind, class R, class Rd, class View, class F, class Promise>
  void thread_vector(View view, F f, Rd reduce, const MapOptions& opts, Promise promise,
                     std::shared_ptr<detail::ProgressReporter> progress, const char* method) {
    if constexpr (std::ranges::random_access_range<View> && std::ranges::sized_range<View>) {
      using Reducer = std::conditional_t<std::is_same_v<Rd, std::monostate>, void, Rd>;
      using Job = detail::ThreadVectorJob<kind, View, F, R, Reducer>;
      auto job = std::make_shared<Job>(std::move(view), std::move(f), std::move(reduce),
                                       thread_chunksize(opts), threads_->workers(),
                                       std::move(promise), std::move(progress));
      job->method = method;
      job->code = detail::trace_code(f, opts.label);
      job->item_label = opts.item_label;
      Job::start(*threads_, job);
    } else {
      // Runners index the input: copy a single-pass or linked input into a vector first.
      std::vector<std::ranges::range_value_t<View>> items;
      for (auto&& x : view) items.push_back(std::forward<decltype(x)>(x));
      if (progress) progress->set_total(items.size());
      thread_vector<kind, R>(std::views::all(std::move(items)), std::move(f), std::move(reduce),
                             opts, std::move(promise), std::move(progress), method);
    }
  }

  /// Every result of an ordered stream, as map returns them: a vector (nothing for void),
  /// or the first failed item's error once every item has run.
  template <class R>
  static auto collect(ResultStream<R> stream) {
    std::exception_ptr first_error;
    std::conditional_t<std::is_void_v<R>, std::monostate, std::vector<R>> out;
    for (auto it = stream.begin(); it != stream.end(); ++it) {
      try {
        if constexpr (std::is_void_v<R>)
          (void)*it;
        else
          out.push_back(std::move(*it));
      } catch (...) {
        if (!first_error) first_error = std::current_exception();
      }
    }
    if (first_error) std::rethrow_exception(first_error);
    if constexpr (!std::is_void_v<R>) return out;
  }

  template <class F, class Tuple, std::size_t... I>
  auto apply_async_with(F f, Tuple&& args, std::index_sequence<I...>) {
    auto future = apply_async(std::move(f), std::get<I>(std::forward<Tuple>(args))...);
    detail::attach_callbacks(future, std::get<sizeof...(I)>(std::forward<Tuple>(args)));
    return future;
  }

  template <class F, class... Args>
  auto submit_apply(const char* method, F f, Args&&... args) {
    using Arg = std::tuple<std::decay_t<Args>...>;
    using R = std::decay_t<std::invoke_result_t<F&, std::decay_t<Args>...>>;
    if (threads_) {
      return detail::submit_call<R>(
          *threads_, detail::StoredCall<F, std::decay_t<Args>...>{
                         std::move(f), Arg(std::forward<Args>(args)...)});
    }
    if constexpr (detail::process_ready<detail::CallKind::unpack, F, Arg, R>) {
      auto promise = std::make_shared<detail::FutureState<R>>();
      auto job = std::make_shared<detail::SingleJob<Arg, R>>(Arg(std::forward<Args>(args)...),
                                                             promise);
      job->vtable = &detail::Trampoline<detail::CallKind::unpack, F, Arg>::vtable;
      detail::encode_job_callable(f, job->state, portable());
      job->chunksize = 1;
      job->method = method;
      job->code = detail::trace_code(f, {});
      promise->set_kill_hook([weak = std::weak_ptr<detail::Job>(job)] {
        auto j = weak.lock();
        if (!j) return false;
        std::lock_guard lock(j->link_mutex);
        return j->link != nullptr && j->link->kill_running(j.get());
      });
      core().submit(std::move(job));
      return promise;
    } else {
      detail::throw_not_shippable(method, detail::shippable<F>, false);
    }
  }

  template <detail::CallKind kind, class F, class In>
  auto submit_vector(F f, In&& inputs, const MapOptions& opts, const char* method) {
    if constexpr (kind == detail::CallKind::single &&
                  detail::shared_array_v<std::remove_cvref_t<In>> && detail::shippable<F> &&
                  detail::takes_const_element_v<
                      F, std::ranges::range_value_t<std::remove_cvref_t<In>>>) {
      // The workers read an Array where it lies: its handle goes to each worker once, and
      // the chunks travel as indices (see ToWorker::indices), never as the elements.
      if (!threads_ && backend_ == Backend::process) {
        const std::size_t n = inputs.size();
        return submit_vector<kind>(detail::wrap_call<detail::ElementCall>(std::move(f), inputs),
                                   range(n), opts, method);
      }
    }
    auto view = std::views::all(std::forward<In>(inputs));
    using View = decltype(view);
    using Arg = std::remove_cvref_t<std::ranges::range_value_t<View>>;
    using R = detail::thread_item_result_t<kind, F, std::ranges::range_reference_t<View>>;
    using Result = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    auto promise = std::make_shared<detail::FutureState<Result>>();
    auto progress = make_progress(opts, view);
    if (threads_) {
      thread_vector<kind, R>(std::move(view), std::move(f), std::monostate{}, opts, promise,
                             std::move(progress), method);
    } else if constexpr (detail::process_ready<kind, F, Arg, R>) {
      using Job = detail::VectorJob<View, Arg, R>;
      auto job = std::make_shared<Job>(std::move(view), promise);
      describe_job(*job, &detail::Trampoline<kind, F, Arg>::vtable, f, f, method, opts,
                   std::move(progress));
      core().submit(std::move(job));
    } else {
      detail::throw_not_shippable(method, detail::shippable<F>, false);
    }
    return promise;
  }

 public:
  /// imap with either call kind (the executors' map zips several inputs into tuples).
  template <detail::CallKind kind, class F, class In>
  auto submit_stream(F f, In&& inputs, const MapOptions& opts, bool ordered,
                     const char* method) {
    auto view = std::views::all(std::forward<In>(inputs));
    using View = decltype(view);
    using Arg = std::remove_cvref_t<std::ranges::range_value_t<View>>;
    using R = detail::thread_item_result_t<kind, F, std::ranges::range_reference_t<View>>;
    auto progress = make_progress(opts, view);
    if (threads_) {
      using Job = detail::ThreadStreamJob<kind, View, F, R>;
      auto job = std::make_shared<Job>(*threads_, std::move(view), std::move(f), ordered,
                                       thread_chunksize(opts), stream_window(),
                                       std::move(progress));
      job->method = method;
      job->code = detail::trace_code(f, opts.label);
      job->item_label = opts.item_label;
      job->start();
      return ResultStream<R>(
          [job](std::optional<detail::stored_t<R>>& out, std::exception_ptr& error,
                const std::chrono::steady_clock::time_point* deadline) {
            return job->next(out, error, deadline);
          },
          [job] { job->drain(); });
    }
    if constexpr (detail::process_ready<kind, F, Arg, R>) {
      using Job = detail::StreamJob<View, Arg, R>;
      auto job = std::make_shared<Job>(std::move(view), ordered, stream_window());
      describe_job(*job, &detail::Trampoline<kind, F, Arg>::vtable, f, f, method, opts,
                   std::move(progress));
      core().submit(job);
      detail::PoolCore* core_ptr = core_.get();
      return ResultStream<R>(
          [job, core_ptr](std::optional<detail::stored_t<R>>& out, std::exception_ptr& error,
                          const std::chrono::steady_clock::time_point* deadline) {
            return job->next(out, error, *core_ptr, deadline);
          },
          [job, core_ptr] {
            // Results still in flight must not reach a callback whose captures may be gone.
            if (job->progress) job->progress->stop();
            job->cancel();
            core_ptr->wake();
          });
    } else {
      detail::throw_not_shippable(method, detail::shippable<F>, false);
    }
  }

 private:
  std::size_t stream_window() const noexcept;

  Backend backend_ = Backend::process;
  std::size_t chunksize_ = 0;
  bool progress_bar_ = false;
  std::unique_ptr<detail::PoolCore> core_;
  std::unique_ptr<detail::ThreadCore> threads_;
  detail::InputStaging staging_;
};

}  // namespace mproc
