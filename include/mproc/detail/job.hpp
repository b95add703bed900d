// A Job is one call of a Pool method as the pool's dispatcher sees it: a source of
// serialized items and a sink for results. Internal to mproc.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "../error.hpp"
#include "../export.hpp"
#include "../future.hpp"
#include "../progress.hpp"
#include "task.hpp"
#include "trace.hpp"

namespace mproc::detail {

/// Whether `e` holds an mproc::Cancelled.
inline bool is_cancelled_error(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Cancelled&) {
    return true;
  } catch (...) {
    return false;
  }
}

/// Fails `promise` with `e`; a Cancelled error (terminate, a kill on cancel) marks it
/// cancelled.
inline void abort_promise(FutureStateBase& promise, std::exception_ptr e) {
  const bool cancelled = is_cancelled_error(e);
  fail_promise(promise, std::move(e), cancelled);
}

class PoolCore;

class MPROC_API Job {
 public:
  virtual ~Job();

  /// Called once before the first pull(): false if the job's future was cancelled while
  /// it waited, and then the job is completed without running.
  virtual bool start() { return true; }

  /// Serializes up to `max_items` further inputs with consecutive indices: appends their
  /// bytes to `out`, the end offset of each item (relative to the start of `out`) to
  /// `ends`, and sets `first` to the first one's index. Returns how many it added; 0 when
  /// the input is exhausted or, for a job with a bounded window, when the consumer must
  /// catch up first. An input that fails to serialize is reported through on_error with
  /// its index and ends the batch. Called only by the dispatcher thread.
  virtual std::size_t pull(std::size_t max_items, std::vector<std::byte>& out,
                           std::vector<std::size_t>& ends, std::size_t& first) = 0;
  /// A map over an integer range (mproc::range) can travel without its items: item i's
  /// argument is start + i * step, in the two's complement bits of the argument type.
  struct IndexItems {
    std::uint64_t start;
    std::uint64_t step;
  };
  /// Whether the items are such a range, and which.
  virtual std::optional<IndexItems> index_items() const noexcept { return std::nullopt; }
  /// For a job with index_items(): takes up to `max_items` further items without
  /// serializing them, sets `first` to the first one's index, returns how many.
  virtual std::size_t pull_indices(std::size_t max_items, std::size_t& first) {
    (void)max_items, (void)first;
    return 0;
  }
  /// The input has been pulled completely.
  virtual bool exhausted() const noexcept = 0;
  /// The number of items, when the input's size is known.
  virtual std::optional<std::size_t> total() const noexcept = 0;
  /// Indices consumed from the input so far, and how many of them failed to serialize
  /// (those never reach a worker).
  virtual std::size_t consumed() const noexcept = 0;
  virtual std::size_t failed_inputs() const noexcept = 0;

  /// Item `index` (its position in the input) produced `bytes`. Dispatcher thread.
  virtual void on_result(std::size_t index, std::span<const std::byte> bytes) = 0;
  /// Items first, ..., first + count - 1 produced results of `size` bytes each (0 for a
  /// void result), back to back in `bytes` (a packed map: see TaskVTable::call_packed).
  /// Dispatcher thread.
  virtual void on_results(std::size_t first, std::size_t count, std::size_t size,
                          std::span<const std::byte> bytes) {
    for (std::size_t k = 0; k < count; ++k)
      on_result(first + k, bytes.subspan(k * size, size));
  }
  /// Item `index` failed (index is none for an error of the whole job). Dispatcher thread.
  virtual void on_error(std::optional<std::size_t> index, std::exception_ptr error) = 0;
  /// map_reduce: one worker's folded partial result.
  virtual void on_partial(std::span<const std::byte> bytes) { (void)bytes; }
  /// Every pulled item has a result or an error, the input is exhausted, and for map_reduce
  /// every partial has arrived. Called once. Dispatcher thread.
  virtual void on_done() = 0;
  /// The pool was terminated or broke before the job finished: fail what is pending.
  virtual void on_abort(std::exception_ptr error) = 0;

  /// The consumer gave up (an imap stream destroyed half-way): pull no more.
  void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

  // Set by the Pool method before submit().
  const TaskVTable* vtable = nullptr;
  std::vector<std::byte> state;  ///< the callable's shipped state
  std::size_t chunksize = 0;     ///< 0: adaptive
  const char* method = "map";    ///< the Pool method (a string literal), for traces
  TraceCode code{};              ///< the function and label, for traces
  ItemLabel item_label{};        ///< per-chunk labels, for traces (empty: none)
  std::shared_ptr<ProgressReporter> progress;  ///< null: no progress reports
  std::uint64_t generation = 0;  ///< the pool's cancel_pending() count at submit
  // For Future::cancel(CancelMode::kill_running): the pool while the job is in it.
  std::mutex link_mutex;
  PoolCore* link = nullptr;

 private:
  std::atomic<bool> cancelled_{false};
};

}  // namespace mproc::detail
