// Executors: Python's concurrent.futures.ThreadPoolExecutor and ProcessPoolExecutor.
//
//   mproc::ProcessPoolExecutor ex(4);
//   mproc::Future<int> f = ex.submit(square, 7);
//   for (int r : ex.map(add, xs, ys, {.timeout = 10s})) use(r);
//   ex.shutdown({.wait = true, .cancel_futures = true});
//
// An executor is a Pool of one backend seen through the concurrent.futures API: submit()
// is the Pool's apply_async, map() its imap over the zipped inputs, and the Futures are
// the same mproc::Future every backend returns. ThreadPoolExecutor runs any callable;
// ProcessPoolExecutor's callables and values must be shippable, as for a process Pool
// (checked at compile time here, since the backend is part of the type).
//
// Lifetime: the destructor is shutdown({.wait = true}): queued work finishes first.
// After shutdown, submit() and map() throw PoolClosed (tasks running on a thread
// executor may still submit follow-up work until the executor is joined). Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

#include "future.hpp"
#include "pool.hpp"
#include "progress.hpp"

namespace mproc {

/// shutdown()'s options, as Python's shutdown(wait, cancel_futures).
struct ShutdownOptions {
  /// Block until every submitted task has finished and the workers have exited.
  bool wait = true;
  /// Cancel the tasks that have not started (their futures report cancelled()).
  bool cancel_futures = false;
};

/// Options of an executor's map().
struct ExecutorMapOptions {
  /// Items per chunk; 0 sizes chunks adaptively (Python's default is 1; adaptive chunks
  /// give the same results with far less overhead on small items).
  std::size_t chunksize = 0;
  /// Iterating throws TimeoutError if a result is not available this long after the
  /// map() call (Python's timeout); none: wait as long as it takes.
  std::optional<std::chrono::nanoseconds> timeout{};
  /// A progress callback or `true` for a bar (mproc/progress.hpp).
  ProgressOption progress{};
};

namespace detail {

/// Several input ranges walked together, yielding tuples of their values, ending with the
/// shortest (Python's zip, for map(f, xs, ys)).
template <class... Vs>
class ZipView : public std::ranges::view_interface<ZipView<Vs...>> {
 public:
  using value_type = std::tuple<std::ranges::range_value_t<Vs>...>;

  class iterator {
   public:
    using value_type = ZipView::value_type;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(std::tuple<std::ranges::iterator_t<Vs>...> its) : its_(std::move(its)) {}
    value_type operator*() const {
      return std::apply([](const auto&... it) { return value_type(*it...); }, its_);
    }
    iterator& operator++() {
      std::apply([](auto&... it) { (++it, ...); }, its_);
      return *this;
    }
    void operator++(int) { ++*this; }

   private:
    friend class ZipView;
    std::tuple<std::ranges::iterator_t<Vs>...> its_;
  };

  struct sentinel {
    std::tuple<std::ranges::sentinel_t<Vs>...> ends;
    friend bool operator==(const iterator& it, const sentinel& s) {
      return s.any_end(it, std::index_sequence_for<Vs...>{});
    }
    template <std::size_t... I>
    bool any_end(const iterator& it, std::index_sequence<I...>) const {
      return ((std::get<I>(it.its_) == std::get<I>(ends)) || ...);
    }
  };

  explicit ZipView(Vs... views) : views_(std::move(views)...) {}

  iterator begin() {
    return iterator(std::apply([](auto&... v) { return std::tuple(std::ranges::begin(v)...); },
                               views_));
  }
  sentinel end() {
    return sentinel{
        std::apply([](auto&... v) { return std::tuple(std::ranges::end(v)...); }, views_)};
  }
  std::size_t size() const
    requires(std::ranges::sized_range<const Vs> && ...)
  {
    return std::apply(
        [](auto&... v) { return std::min({static_cast<std::size_t>(std::ranges::size(v))...}); },
        views_);
  }

 private:
  std::tuple<Vs...> views_;
};

}  // namespace detail

/// The executor of one backend. Use the aliases ThreadPoolExecutor, ProcessPoolExecutor
/// and MpiPoolExecutor.
template <Backend B>
class PoolExecutor {
 public:
  /// Starts `workers` workers (0: cpu_count()).
  explicit PoolExecutor(unsigned workers = 0) : PoolExecutor(PoolOptions{.workers = workers}) {}
  /// Starts the workers with these options; `options.backend` is ignored. Python's
  /// initializer and max_tasks_per_child are PoolOptions fields.
  explicit PoolExecutor(PoolOptions options)
      : pool_(with_backend(options)),
        submits_(detail::SubmitTracer::open(options.trace, backend_name())) {}
  /// shutdown({.wait = true}). Never throws.
  ~PoolExecutor() = default;
  PoolExecutor(const PoolExecutor&) = delete;
  PoolExecutor& operator=(const PoolExecutor&) = delete;

  unsigned workers() const noexcept { return pool_.workers(); }

  /// Schedules f(args...) and returns its Future. Arguments are stored by value (moved
  /// from rvalues). Throws PoolClosed after shutdown(). Thread-safe.
  template <class F, class... Args>
  auto submit(F f, Args&&... args) {
    if constexpr (B != Backend::thread) MPROC_DETAIL_REQUIRE_SHIPPABLE(F);
    if (submits_) [[unlikely]] {
      // Traced (PoolOptions::trace or mproc::trace_to): from now to the future's end.
      const auto token = submits_->begin(detail::trace_code(f));
      try {
        auto future = pool_.apply_async(std::move(f), std::forward<Args>(args)...);
        detail::SubmitTracer::watch(submits_, token, *future.state());
        return future;
      } catch (...) {
        submits_->abandon(token);
        throw;
      }
    }
    return pool_.apply_async(std::move(f), std::forward<Args>(args)...);
  }

  /// Python's Executor.map: a lazy range of f(x) for x in `inputs`, in input order.
  /// Inputs are pulled as the workers need them (at most a window ahead of the consumer,
  /// so an endless input works); a failed item rethrows its error when reached.
  template <class F, std::ranges::input_range In>
  auto map(F f, In&& inputs, ExecutorMapOptions opts = {}) {
    if constexpr (B != Backend::thread) MPROC_DETAIL_REQUIRE_SHIPPABLE(F);
    auto stream = pool_.template submit_stream<detail::CallKind::single>(
        std::move(f), std::forward<In>(inputs), MapOptions{opts.chunksize, opts.progress}, true,
        "map");
    set_timeout(stream, opts);
    return stream;
  }

  /// map over several inputs zipped: f(x, y) for x, y in zip(xs, ys).
  template <class F, std::ranges::input_range In1, std::ranges::input_range In2>
  auto map(F f, In1&& xs, In2&& ys, ExecutorMapOptions opts = {}) {
    return map_zipped(std::move(f), opts, std::forward<In1>(xs), std::forward<In2>(ys));
  }
  template <class F, std::ranges::input_range In1, std::ranges::input_range In2,
            std::ranges::input_range In3>
  auto map(F f, In1&& xs, In2&& ys, In3&& zs, ExecutorMapOptions opts = {}) {
    return map_zipped(std::move(f), opts, std::forward<In1>(xs), std::forward<In2>(ys),
                      std::forward<In3>(zs));
  }

  /// Stops accepting work. With `wait`, blocks until submitted work is done; with
  /// `cancel_futures`, work that has not started is cancelled instead of run. Calling it
  /// again is harmless. Thread-safe.
  void shutdown(ShutdownOptions opts = {}) {
    pool_.close();
    if (opts.cancel_futures) pool_.cancel_pending();
    if (opts.wait) pool_.join();
  }

 private:
  static constexpr const char* backend_name() {
    return B == Backend::thread ? "thread" : B == Backend::process ? "process" : "mpi";
  }

  static PoolOptions with_backend(PoolOptions options) {
    options.backend = B;
    return options;
  }

  template <class Stream>
  static void set_timeout(Stream& stream, const ExecutorMapOptions& opts) {
    if (opts.timeout)
      stream.set_deadline(detail::FutureStateBase::deadline_after(*opts.timeout));
  }

  template <class F, class... Ins>
  auto map_zipped(F f, const ExecutorMapOptions& opts, Ins&&... ins) {
    if constexpr (B != Backend::thread) MPROC_DETAIL_REQUIRE_SHIPPABLE(F);
    detail::ZipView zipped(std::views::all(std::forward<Ins>(ins))...);
    auto stream = pool_.template submit_stream<detail::CallKind::unpack>(
        std::move(f), std::move(zipped), MapOptions{opts.chunksize, opts.progress}, true, "map");
    set_timeout(stream, opts);
    return stream;
  }

  Pool pool_;
  std::shared_ptr<detail::SubmitTracer> submits_;  // null unless tracing
};

/// Python's concurrent.futures.ThreadPoolExecutor: any callable, exceptions as they are.
using ThreadPoolExecutor = PoolExecutor<Backend::thread>;
/// Python's concurrent.futures.ProcessPoolExecutor: crash-isolated worker processes.
using ProcessPoolExecutor = PoolExecutor<Backend::process>;
/// mpi4py.futures' MPIPoolExecutor: the tasks run on the other ranks of an MPI job
/// (mproc/runtime.hpp); callables and values must be shippable, as for processes.
using MpiPoolExecutor = PoolExecutor<Backend::mpi>;

}  // namespace mproc
