// Where a call's results are collected, the same on every backend (the process and mpi
// jobs in pool.hpp, the thread jobs in thread_jobs.hpp): one slot per item handed over in
// input order, the first error in input order, and the window of results an imap
// consumer has not taken yet. Internal to mproc.
#pragma once

#include <concepts>
#include <cstddef>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace mproc::detail {

/// What a result of type R is kept as: R, or monostate for a call returning void.
template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

/// Keeps the first error in input order. Thread-safe.
class FirstError {
 public:
  void record(std::size_t index, std::exception_ptr e, bool cancelled = false) {
    std::lock_guard lock(mutex_);
    if (!error_ || index < index_) {
      error_ = std::move(e);
      index_ = index;
      cancelled_ = cancelled;
    }
  }
  std::exception_ptr get() {
    std::lock_guard lock(mutex_);
    return error_;
  }
  bool cancelled() {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
  std::size_t index_ = 0;
  bool cancelled_ = false;
};

/// One slot per item of a call (map, starmap), filled in any order and handed over as a
/// vector in input order. Every slot is filled before take() (or the call fails instead),
/// so a type with a default value needs no optional. For R = void it only counts.
/// Threads of the thread backend set different slots at once, so a slot is never a bit:
/// results of type bool are kept one per byte and packed into std::vector<bool> by take().
template <class R>
class ResultSlots {
 public:
  void reserve(std::size_t n) { slots_.reserve(n); }
  void resize(std::size_t n) { slots_.resize(n); }
  std::size_t size() const noexcept { return slots_.size(); }
  template <class V>
  void set(std::size_t index, V&& value) {
    slots_[index] = std::forward<V>(value);
  }
  std::vector<R> take() {
    if constexpr (std::is_same_v<R, bool>) {
      return std::vector<bool>(slots_.begin(), slots_.end());
    } else if constexpr (std::default_initializable<R>) {
      return std::move(slots_);
    } else {
      std::vector<R> values;
      values.reserve(slots_.size());
      for (auto& v : slots_) values.push_back(std::move(*v));
      return values;
    }
  }

 private:
  using Slot = std::conditional_t<std::is_same_v<R, bool>, unsigned char,
                                  std::conditional_t<std::default_initializable<R>, R,
                                                     std::optional<R>>>;
  std::vector<Slot> slots_;
};

template <>
class ResultSlots<void> {
 public:
  void reserve(std::size_t) noexcept {}
  void resize(std::size_t n) noexcept { size_ = n; }
  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t size_ = 0;
};

/// The results an imap consumer has not taken yet: handed over in input order (imap) or
/// as they came (imap_unordered). Its owner locks around it.
template <class R>
class ResultWindow {
 public:
  /// One item's result, or its error.
  struct Slot {
    std::optional<stored_t<R>> value;
    std::exception_ptr error;

    /// Moves the value into `out`, or the item's error into `failed`.
    void deliver(std::optional<stored_t<R>>& out, std::exception_ptr& failed) {
      if (error) {
        failed = std::move(error);
        return;
      }
      out = std::move(value);
      if constexpr (std::is_void_v<R>)
        if (!out) out.emplace();
    }
  };

  explicit ResultWindow(bool ordered) : ordered_(ordered) {}

  void put(std::size_t index, Slot slot) { ready_.emplace(index, std::move(slot)); }
  void put_error(std::size_t index, std::exception_ptr error) {
    put(index, Slot{std::nullopt, std::move(error)});
  }

  /// The next result the consumer may have, if it has come.
  std::optional<Slot> take() {
    auto it = ordered_ ? ready_.find(next_) : ready_.begin();
    if (it == ready_.end()) return std::nullopt;
    Slot slot = std::move(it->second);
    ready_.erase(it);
    ++next_;
    ++consumed_;
    return slot;
  }

  bool empty() const noexcept { return ready_.empty(); }
  /// Results the consumer has taken.
  std::size_t consumed() const noexcept { return consumed_; }
  /// How many more items may be pulled, with `pulled` pulled so far, so that at most
  /// `window` are ahead of the consumer.
  std::size_t room(std::size_t pulled, std::size_t window) const noexcept {
    const std::size_t ahead = pulled - consumed_;
    return ahead >= window ? 0 : window - ahead;
  }

 private:
  const bool ordered_;
  std::map<std::size_t, Slot> ready_;
  std::size_t next_ = 0;  // ordered: the index the consumer takes next
  std::size_t consumed_ = 0;
};

}  // namespace mproc::detail
