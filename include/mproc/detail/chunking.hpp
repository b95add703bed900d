// Adaptive chunk sizing, the same for every backend's dispatcher (the process pool, the
// mpi pool, the thread pool's streams): a running estimate of one item's cost, and the
// number of items that makes about a target amount of work per chunk. Internal to mproc.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

namespace mproc::detail {

/// Folds one chunk's report (`chunk_ns` for `items` items) into `cost_ns`, the running
/// estimate of one item's cost in nanoseconds (negative: nothing known yet). The newest
/// chunk weighs 30%: a change of cost shows within a few chunks, while one slow chunk
/// does not swing the size.
inline void update_item_cost(double& cost_ns, double chunk_ns, std::size_t items) noexcept {
  if (items == 0) return;
  const double per_item = chunk_ns / static_cast<double>(items);
  cost_ns = cost_ns < 0 ? per_item : 0.7 * cost_ns + 0.3 * per_item;
}

/// Items per chunk for about `target_ns` of work at `cost_ns` per item, from 1 (also
/// while the cost is unknown: the first chunks are probes) to `max_items`. Given the
/// items `remaining` of a sized input, the size shrinks towards the end so that all
/// `workers` finish together, but not below a tenth of the target's work: a smaller
/// chunk costs its round trip (tens of microseconds when the worker has to be woken)
/// and gains nothing, so a job of little work in all goes out in few chunks.
inline std::size_t adaptive_chunk(double cost_ns, double target_ns, std::size_t max_items,
                                  std::optional<std::size_t> remaining = std::nullopt,
                                  std::size_t workers = 1) noexcept {
  if (cost_ns < 0) return 1;
  const auto items_for = [&](double ns) {
    return static_cast<std::size_t>(
        std::clamp(ns / std::max(cost_ns, 1.0), 1.0, static_cast<double>(max_items)));
  };
  std::size_t n = items_for(target_ns);
  if (remaining)
    n = std::min(n, std::max(items_for(target_ns / 10), *remaining / (2 * workers)));
  return n;
}

/// The item cost each function had in its latest call, so that the next call of the same
/// function (the same code and the same shipped state) sizes its first chunks from it.
/// Keeps the last `capacity` functions. Dispatcher thread only.
class KnownCosts {
 public:
  /// Records `cost_ns` (if known) as the cost of `job`'s function.
  template <class Job>
  void remember(const Job& job, double cost_ns) {
    if (cost_ns < 0) return;
    const Key k = key_of(job);
    for (auto& e : entries_)
      if (e.key == k) {
        e.cost_ns = cost_ns;
        return;
      }
    if (entries_.size() < capacity) {
      entries_.push_back({k, cost_ns});
    } else {
      entries_[next_] = {k, cost_ns};
      next_ = (next_ + 1) % capacity;
    }
  }
  /// The cost last recorded for `job`'s function, or -1.
  template <class Job>
  double recall(const Job& job) const {
    const Key k = key_of(job);
    for (auto& e : entries_)
      if (e.key == k) return e.cost_ns;
    return -1;
  }

 private:
  static constexpr std::size_t capacity = 16;
  struct Key {
    const void* code;
    std::size_t state_hash;
    bool operator==(const Key&) const = default;
  };
  struct Entry {
    Key key;
    double cost_ns;
  };
  template <class Job>
  static Key key_of(const Job& job) {
    const std::string_view state(reinterpret_cast<const char*>(job.state.data()),
                                 job.state.size());
    return Key{job.vtable, std::hash<std::string_view>{}(state)};
  }
  std::vector<Entry> entries_;
  std::size_t next_ = 0;
};

}  // namespace mproc::detail
