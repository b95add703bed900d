// The thread backend's scheduler.
//
// Each worker owns a Chase-Lev work-stealing deque (Chase & Lev, SPAA 2005, with the C11
// memory orders of Le, Pop, Cohen & Zappa Nardelli, "Correct and Efficient Work-Stealing
// for Weak Memory Models", PPoPP 2013): the owner pushes and pops at the bottom without
// atomic read-modify-writes except on the last element; idle workers steal from the top
// with one CAS. Threads outside the pool submit into per-worker inboxes (a lock-free list
// any worker may take whole), round-robin, so there is no global lock on the hot path.
//
// Sleeping uses an event count: a worker that found nothing announces itself in
// sleepers_, looks once more, then futex-waits on epoch_; a submitter publishes its task,
// then (after a full fence) reads sleepers_ and bumps epoch_ only if someone sleeps.
#include "mproc/detail/thread_core.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mproc/cpu_count.hpp"
#include "mproc/detail/trace.hpp"
#include "mproc/error.hpp"
#include "os/futex.hpp"
#include "wait_helper.hpp"

namespace mproc::detail {
namespace {

class WsDeque {
 public:
  WsDeque() { arrays_.push_back(std::make_unique<Array>(256)); array_.store(arrays_.back().get()); }

  /// Owner only.
  void push(ThreadTask* t) {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed);
    const std::int64_t top = top_.load(std::memory_order_acquire);
    Array* a = array_.load(std::memory_order_relaxed);
    if (b - top >= static_cast<std::int64_t>(a->capacity)) a = grow(a, top, b);
    a->put(b, t);
    bottom_.store(b + 1, std::memory_order_release);
  }

  /// Owner only: the newest task, or null.
  ThreadTask* pop() {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    Array* a = array_.load(std::memory_order_relaxed);
    bottom_.store(b, std::memory_order_relaxed);
    // The store to bottom_ must be visible before top_ is read (a thief does the mirror
    // image), so that owner and thief cannot both take the last task.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t t = top_.load(std::memory_order_relaxed);
    if (t > b) {
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    ThreadTask* x = a->get(b);
    if (t == b) {
      // The last task: race the thieves for it.
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
        x = nullptr;
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return x;
  }

  /// Any thread: the oldest task, or null (empty, or lost a race).
  ThreadTask* steal() {
    std::int64_t t = top_.load(std::memory_order_acquire);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t >= b) return nullptr;
    Array* a = array_.load(std::memory_order_acquire);
    ThreadTask* x = a->get(t);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed))
      return nullptr;
    return x;
  }

 private:
  struct Array {
    explicit Array(std::size_t cap)
        : capacity(cap), slots(std::make_unique<std::atomic<ThreadTask*>[]>(cap)) {}
    ThreadTask* get(std::int64_t i) const noexcept {
      return slots[static_cast<std::size_t>(i) & (capacity - 1)].load(std::memory_order_relaxed);
    }
    void put(std::int64_t i, ThreadTask* t) noexcept {
      slots[static_cast<std::size_t>(i) & (capacity - 1)].store(t, std::memory_order_relaxed);
    }
    std::size_t capacity;
    std::unique_ptr<std::atomic<ThreadTask*>[]> slots;
  };

  Array* grow(Array* old, std::int64_t top, std::int64_t bottom) {
    auto bigger = std::make_unique<Array>(old->capacity * 2);
    for (std::int64_t i = top; i < bottom; ++i) bigger->put(i, old->get(i));
    Array* a = bigger.get();
    // Thieves may still read the old array: it stays alive until the deque dies.
    arrays_.push_back(std::move(bigger));
    array_.store(a, std::memory_order_release);
    return a;
  }

  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  alignas(64) std::atomic<Array*> array_{nullptr};
  std::vector<std::unique_ptr<Array>> arrays_;  // owner only
};

/// Tasks from outside the pool: a lock-free stack that a worker takes whole.
class Inbox {
 public:
  /// Returns whether the inbox was empty before.
  bool push(ThreadTask* t) noexcept {
    ThreadTask* h = head_.load(std::memory_order_relaxed);
    do {
      t->next_ = h;
    } while (!head_.compare_exchange_weak(h, t, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
    return h == nullptr;
  }
  /// Everything queued, newest first.
  ThreadTask* take_all() noexcept {
    if (head_.load(std::memory_order_relaxed) == nullptr) return nullptr;
    return head_.exchange(nullptr, std::memory_order_acquire);
  }

 private:
  alignas(64) std::atomic<ThreadTask*> head_{nullptr};
};

struct alignas(64) WorkerState {
  WsDeque deque;
  Inbox inbox;
  std::thread thread;
};

MPROC_INITIAL_EXEC thread_local ThreadCore::Impl* tls_core = nullptr;
MPROC_INITIAL_EXEC thread_local unsigned tls_index = 0;
MPROC_INITIAL_EXEC thread_local unsigned tls_next_inbox = 0;  // round-robin position of a submitting thread

}  // namespace

struct ThreadCore::Impl final : WaitHelper {
  explicit Impl(ThreadCoreOptions opts)
      : options(std::move(opts)),
        n(options.workers != 0 ? options.workers : cpu_count()),
        workers(n) {
    if (const std::string trace = trace_path_for(options.trace); !trace.empty())
      tracer = std::make_unique<Tracer>(trace, "thread", n, false);
  }

  bool help_until(const FutureStateBase& state,
                  const std::chrono::steady_clock::time_point* deadline) override;
  void worker_main(unsigned i);
  ThreadTask* find_work(unsigned i);
  void execute(ThreadTask* t) noexcept;
  void wake_one() noexcept {
    // The caller published its task with a seq_cst operation; a worker that is about to
    // sleep incremented sleepers_ (seq_cst) before its last look: one of them sees the
    // other.
    if (sleepers.load(std::memory_order_seq_cst) == 0) return;
    epoch.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&epoch, 1);
  }
  void wake_all() noexcept {
    epoch.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&epoch);
  }
  void finished_one() noexcept {
    if (outstanding.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        joiner_waiting.load(std::memory_order_seq_cst)) {
      std::lock_guard lock(mutex);
      idle_cv.notify_all();
    }
  }

  const ThreadCoreOptions options;
  const unsigned n;
  std::unique_ptr<Tracer> tracer;
  std::vector<WorkerState> workers;

  alignas(64) std::atomic<std::uint32_t> epoch{0};
  alignas(64) std::atomic<std::uint32_t> sleepers{0};
  alignas(64) std::atomic<std::int64_t> outstanding{0};  // accepted and not yet run/discarded
  alignas(64) std::atomic<std::uint64_t> cancel_generation{0};
  std::atomic<bool> closed{false};
  std::atomic<bool> stopping{false};  // join: exit when idle
  std::atomic<bool> broken{false};
  std::atomic<bool> joiner_waiting{false};

  std::mutex mutex;
  std::condition_variable idle_cv;
  std::exception_ptr broken_error;  // under mutex
  std::mutex join_mutex;
  bool joined = false;  // under join_mutex
};

ThreadTask* ThreadCore::Impl::find_work(unsigned i) {
  WorkerState& me = workers[i];
  if (ThreadTask* t = me.deque.pop()) return t;
  auto adopt = [&](ThreadTask* newest_first) -> ThreadTask* {
    // Run the oldest (the list's last) now; queue the rest newest-first, so the owner,
    // popping from the bottom, continues oldest-first and thieves take the newest.
    ThreadTask* t = newest_first;
    while (t->next_ != nullptr) {
      ThreadTask* next = t->next_;
      me.deque.push(t);
      t = next;
    }
    if (t != newest_first) wake_one();  // others may steal the rest
    return t;
  };
  if (ThreadTask* list = me.inbox.take_all()) return adopt(list);
  for (unsigned k = 1; k < n; ++k) {
    WorkerState& victim = workers[(i + k) % n];
    if (ThreadTask* t = victim.deque.steal()) return t;
    if (ThreadTask* list = victim.inbox.take_all()) return adopt(list);
  }
  return nullptr;
}

void ThreadCore::Impl::execute(ThreadTask* t) noexcept {
  if (broken.load(std::memory_order_acquire)) {
    std::exception_ptr e;
    {
      std::lock_guard lock(mutex);
      e = broken_error;
    }
    t->discard(e, false);
  } else if (t->generation_ < cancel_generation.load(std::memory_order_acquire)) {
    t->discard(std::make_exception_ptr(Cancelled("the task was cancelled before it started")),
               true);
  } else {
    t->run();
  }
  finished_one();
}

bool ThreadCore::Impl::help_until(const FutureStateBase& state,
                                  const std::chrono::steady_clock::time_point* deadline) {
  const unsigned i = tls_index;
  while (!state.done()) {
    if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline) return false;
    if (ThreadTask* t = find_work(i)) {
      execute(t);
      continue;
    }
    // Nothing to run: the awaited task runs on another worker. Sleep on it in short
    // slices, so work that arrives meanwhile is not left waiting for long.
    auto slice = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    if (deadline != nullptr && *deadline < slice) slice = *deadline;
    state.block_until(&slice);
  }
  return true;
}

void ThreadCore::Impl::worker_main(unsigned i) {
  tls_core = this;
  tls_index = i;
  current_wait_helper = this;
  if (options.initializer) {
    try {
      options.initializer();
    } catch (...) {
      std::string what = "the pool's initializer failed";
      try {
        throw;
      } catch (const std::exception& e) {
        what += std::string(": ") + e.what();
      } catch (...) {
      }
      std::lock_guard lock(mutex);
      if (!broken_error) broken_error = std::make_exception_ptr(BrokenPool(what));
      broken.store(true, std::memory_order_release);
    }
  }
  for (;;) {
    ThreadTask* t = find_work(i);
    if (t == nullptr) {
      // Spin a little: on a busy pool the next task is usually microseconds away, and a
      // futex sleep and wake-up costs tens of microseconds.
      for (int round = 0; round < 32 && t == nullptr; ++round) {
        for (int p = 0; p < 32; ++p) spin_pause();
        t = find_work(i);
      }
      for (int round = 0; round < 4 && t == nullptr; ++round) {
        std::this_thread::yield();
        t = find_work(i);
      }
    }
    if (t == nullptr) {
      const std::uint32_t e = epoch.load(std::memory_order_seq_cst);
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      t = find_work(i);
      if (t == nullptr) {
        if (stopping.load(std::memory_order_seq_cst) &&
            outstanding.load(std::memory_order_seq_cst) == 0) {
          sleepers.fetch_sub(1, std::memory_order_seq_cst);
          break;
        }
        futex_wait(&epoch, e);
      }
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
      if (t == nullptr) continue;
    }
    execute(t);
  }
  current_wait_helper = nullptr;
  tls_core = nullptr;
}

ThreadCore::ThreadCore(ThreadCoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  unsigned started = 0;
  try {
    for (; started < impl_->n; ++started)
      impl_->workers[started].thread = std::thread([this, started] { impl_->worker_main(started); });
  } catch (...) {
    impl_->stopping.store(true);
    impl_->wake_all();
    for (unsigned k = 0; k < started; ++k) impl_->workers[k].thread.join();
    throw;
  }
}

ThreadCore::~ThreadCore() {
  try {
    join();
  } catch (...) {
    // Destroyed from inside one of its own tasks: nothing sane to do but leave the
    // threads to finish (they reference impl_, so keep it alive).
    (void)impl_.release();
  }
}

unsigned ThreadCore::workers() const noexcept { return impl_->n; }

std::optional<unsigned> ThreadCore::worker_index() const noexcept {
  if (tls_core == impl_.get()) return tls_index;
  return std::nullopt;
}

Tracer* current_thread_tracer() noexcept { return tls_core ? tls_core->tracer.get() : nullptr; }

std::uint32_t current_thread_lane() noexcept { return tls_core ? tls_index : kCallerLane; }

void ThreadCore::submit(ThreadTask* task) {
  Impl& m = *impl_;
  const bool inside = tls_core == &m;
  if (m.broken.load(std::memory_order_acquire)) {
    std::lock_guard lock(m.mutex);
    std::rethrow_exception(m.broken_error);
  }
  if (!inside && m.closed.load(std::memory_order_acquire))
    throw PoolClosed("submit after close(), shutdown() or terminate()");
  task->generation_ = m.cancel_generation.load(std::memory_order_relaxed);
  m.outstanding.fetch_add(1, std::memory_order_relaxed);
  if (inside) {
    m.workers[tls_index].deque.push(task);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    m.wake_one();
  } else {
    // Round-robin over the inboxes, per submitting thread (balance, not order). Only a
    // push into an empty inbox needs a wake-up: a non-empty one already had its wake-up,
    // and a worker that takes several tasks at once wakes another to share them.
    const unsigned w = tls_next_inbox++ % m.n;
    if (m.workers[w].inbox.push(task)) m.wake_one();
  }
}

bool ThreadCore::run_one() noexcept {
  Impl& m = *impl_;
  if (tls_core != &m) return false;
  ThreadTask* t = m.find_work(tls_index);
  if (t == nullptr) return false;
  m.execute(t);
  return true;
}

void ThreadCore::close() { impl_->closed.store(true, std::memory_order_release); }

void ThreadCore::cancel_pending() {
  impl_->cancel_generation.fetch_add(1, std::memory_order_acq_rel);
  impl_->wake_all();
}

void ThreadCore::join() {
  Impl& m = *impl_;
  if (tls_core == &m)
    throw std::logic_error(
        "a pool cannot be joined from its own tasks or callbacks (it would wait for itself)");
  std::lock_guard join_lock(m.join_mutex);
  if (m.joined) return;
  m.closed.store(true, std::memory_order_seq_cst);
  {
    std::unique_lock lock(m.mutex);
    m.joiner_waiting.store(true, std::memory_order_seq_cst);
    m.idle_cv.wait(lock, [&] { return m.outstanding.load(std::memory_order_seq_cst) == 0; });
  }
  m.stopping.store(true, std::memory_order_seq_cst);
  m.wake_all();
  for (auto& w : m.workers)
    if (w.thread.joinable()) w.thread.join();
  m.joined = true;
  if (m.tracer) m.tracer->flush();
}

void ThreadCore::terminate() {
  close();
  cancel_pending();
  if (!in_own_task()) join();
}

bool ThreadCore::in_own_task() const noexcept { return tls_core == impl_.get(); }

}  // namespace mproc::detail
