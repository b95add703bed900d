#include "mproc/future.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "os/futex.hpp"
#include "os/platform.hpp"
#include "wait_helper.hpp"

namespace mproc {
namespace detail {

MPROC_INITIAL_EXEC thread_local WaitHelper* current_wait_helper = nullptr;

namespace {
std::atomic<WaitHelper*> process_wait_helper{nullptr};
std::atomic<std::uint32_t> process_wait_helper_users{0};
}  // namespace

bool waiters_drive_work() noexcept {
  return process_wait_helper.load(std::memory_order_relaxed) != nullptr;
}

void set_process_wait_helper(WaitHelper* helper) noexcept {
  process_wait_helper.store(helper, std::memory_order_seq_cst);
  if (helper != nullptr) return;
  // A waiter that loaded the old pointer counted itself first (seq_cst on both sides).
  while (process_wait_helper_users.load(std::memory_order_seq_cst) != 0)
    std::this_thread::yield();
}


namespace {

struct CallbackNode final : DoneNode {
  explicit CallbackNode(std::function<void()> f) : fn(std::move(f)) {}
  void fire() noexcept override {
    try {
      fn();
    } catch (...) {
      report_callback_error(std::current_exception());
    }
  }
  std::function<void()> fn;
};

}  // namespace

FutureStateBase::~FutureStateBase() {
  // Nodes of a state that never finished (its producer vanished): free them unfired.
  for (DoneNode* n = nodes_; n != nullptr;) delete std::exchange(n, n->next);
}

void FutureStateBase::lock_nodes() const noexcept {
  for (int spins = 0; node_lock_.exchange(true, std::memory_order_acquire); ++spins) {
    // Held for a few pointer writes only; yield if the holder was descheduled.
    if (spins < 64)
      spin_pause();
    else
      std::this_thread::yield();
  }
}

bool FutureStateBase::add_node(DoneNode* node) noexcept {
  lock_nodes();
  // nodes_bit must be set in the same atomic step that observes "not finished": a finisher
  // whose fetch_or comes later sees the bit and takes the lock, so it finds this node.
  std::uint32_t w = word_.load(std::memory_order_relaxed);
  for (;;) {
    if (phase(w) == finished) {
      unlock_nodes();
      return false;
    }
    if (word_.compare_exchange_weak(w, w | nodes_bit, std::memory_order_acq_rel,
                                    std::memory_order_relaxed))
      break;
  }
  node->next = nodes_;
  nodes_ = node;
  unlock_nodes();
  return true;
}

bool FutureStateBase::remove_node(DoneNode* node) noexcept {
  // Walks the list instead of trusting node->next: a node the finisher detached is no
  // longer reachable from nodes_, and no node can join a finished state's list, so a
  // pointer found here is this caller's live node.
  lock_nodes();
  for (DoneNode** p = &nodes_; *p != nullptr; p = &(*p)->next) {
    if (*p == node) {
      *p = node->next;
      unlock_nodes();
      return true;
    }
  }
  unlock_nodes();
  return false;
}

void FutureStateBase::notify(std::uint32_t old) noexcept {
  if ((old & sleepers_bit) != 0) futex_wake_all(&word_);
  if ((old & nodes_bit) == 0) return;
  lock_nodes();
  DoneNode* list = std::exchange(nodes_, nullptr);
  unlock_nodes();
  // The list is newest first; fire in the order the nodes were added.
  DoneNode* ordered = nullptr;
  while (list != nullptr) {
    DoneNode* n = std::exchange(list, list->next);
    n->next = ordered;
    ordered = n;
  }
  while (ordered != nullptr) {
    DoneNode* n = std::exchange(ordered, ordered->next);
    n->fire();
    delete n;
  }
}

bool FutureStateBase::block_until(const std::chrono::steady_clock::time_point* deadline) const {
  for (;;) {
    std::uint32_t w = word_.load(std::memory_order_acquire);
    if (phase(w) == finished) return true;
    if ((w & sleepers_bit) == 0) {
      if (!word_.compare_exchange_weak(w, w | sleepers_bit, std::memory_order_relaxed))
        continue;
      w |= sleepers_bit;
    }
    std::optional<std::chrono::nanoseconds> timeout;
    if (deadline != nullptr && *deadline != std::chrono::steady_clock::time_point::max()) {
      timeout = *deadline - std::chrono::steady_clock::now();
      if (timeout->count() <= 0) return done();
    }
    futex_wait(&word_, w, timeout);
  }
}

bool FutureStateBase::wait_slow(const std::chrono::steady_clock::time_point* deadline) const {
  if (WaitHelper* helper = current_wait_helper) return helper->help_until(*this, deadline);
  process_wait_helper_users.fetch_add(1, std::memory_order_seq_cst);
  if (WaitHelper* helper = process_wait_helper.load(std::memory_order_seq_cst)) {
    const bool done_now = helper->help_until(*this, deadline);
    process_wait_helper_users.fetch_sub(1, std::memory_order_seq_cst);
    if (done_now) return true;
  } else {
    process_wait_helper_users.fetch_sub(1, std::memory_order_seq_cst);
  }
  return block_until(deadline);
}

bool FutureStateBase::cancel() {
  std::uint32_t w = word_.load(std::memory_order_relaxed);
  while (phase(w) == pending) {
    if (word_.compare_exchange_weak(w, (w & ~phase_mask) | completing | cancelled_bit,
                                    std::memory_order_acquire, std::memory_order_relaxed)) {
      error_ = std::make_exception_ptr(Cancelled("the task was cancelled before it started"));
      end_finish();
      return true;
    }
  }
  // Someone else may be completing it as cancelled right now.
  if (phase(w) == completing) wait();
  return cancelled();
}

bool FutureStateBase::cancel_running() {
  if (cancel()) return true;
  if (done()) return false;
  if (!kill_hook_ || !(*kill_hook_)()) return false;
  wait();
  return cancelled();
}

bool FutureStateBase::finish_cancelled(std::exception_ptr e) {
  if (!begin_finish(cancelled_bit)) return false;
  error_ = std::move(e);
  end_finish();
  return true;
}

void FutureStateBase::add_done_callback(std::function<void()> cb) {
  auto node = std::make_unique<CallbackNode>(std::move(cb));
  if (add_node(node.get())) {
    node.release();
    return;
  }
  node->fire();
}

// ---- wait() and as_completed() ---------------------------------------------------------

namespace {

struct WaitShared {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t finished = 0;
  bool failed = false;
};

struct WaitNode final : DoneNode {
  WaitNode(std::shared_ptr<WaitShared> s, const FutureStateBase* st)
      : shared(std::move(s)), state(st) {}
  void fire() noexcept override {
    const bool failed = state->failed();
    std::lock_guard lock(shared->mutex);
    ++shared->finished;
    shared->failed |= failed;
    shared->cv.notify_all();
  }
  std::shared_ptr<WaitShared> shared;
  const FutureStateBase* state;
};

}  // namespace

std::vector<bool> wait_states(std::span<FutureStateBase* const> states, ReturnWhen when,
                              const std::chrono::steady_clock::time_point* deadline) {
  auto shared = std::make_shared<WaitShared>();
  std::vector<WaitNode*> nodes(states.size(), nullptr);
  std::size_t finished = 0;
  bool failed = false;
  for (std::size_t i = 0; i < states.size(); ++i) {
    if (!states[i]->done()) {
      auto node = std::make_unique<WaitNode>(shared, states[i]);
      if (states[i]->add_node(node.get())) {
        nodes[i] = node.release();
        continue;
      }
    }
    ++finished;
    failed |= states[i]->failed();
  }
  {
    std::unique_lock lock(shared->mutex);
    auto met = [&] {
      const std::size_t n = finished + shared->finished;
      switch (when) {
        case ReturnWhen::first_completed:
          return n > 0 || states.empty();
        case ReturnWhen::first_exception:
          return failed || shared->failed || n == states.size();
        case ReturnWhen::all_completed:
          break;
      }
      return n == states.size();
    };
    if (deadline == nullptr || *deadline == std::chrono::steady_clock::time_point::max())
      shared->cv.wait(lock, met);
    else
      shared->cv.wait_until(lock, *deadline, met);
  }
  for (std::size_t i = 0; i < states.size(); ++i)
    if (nodes[i] != nullptr && states[i]->remove_node(nodes[i])) delete nodes[i];
  std::vector<bool> done(states.size());
  for (std::size_t i = 0; i < states.size(); ++i) done[i] = states[i]->done();
  return done;
}

struct CompletionQueue::Shared {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::size_t> ready;
  std::vector<FutureStateBase*> states;
  std::vector<DoneNode*> nodes;
  std::size_t handed_out = 0;
};

namespace {

struct QueueNode final : DoneNode {
  QueueNode(std::shared_ptr<CompletionQueue::Shared> s, std::size_t i)
      : shared(std::move(s)), index(i) {}
  void fire() noexcept override;
  std::shared_ptr<CompletionQueue::Shared> shared;
  std::size_t index;
};

}  // namespace

void QueueNode::fire() noexcept {
  std::lock_guard lock(shared->mutex);
  shared->ready.push_back(index);
  shared->cv.notify_all();
}

CompletionQueue::CompletionQueue(std::vector<FutureStateBase*> states)
    : shared_(std::make_shared<Shared>()) {
  shared_->states = std::move(states);
  shared_->nodes.assign(shared_->states.size(), nullptr);
  std::lock_guard lock(shared_->mutex);
  for (std::size_t i = 0; i < shared_->states.size(); ++i) {
    FutureStateBase* s = shared_->states[i];
    if (!s->done()) {
      auto node = std::make_unique<QueueNode>(shared_, i);
      if (s->add_node(node.get())) {
        shared_->nodes[i] = node.release();
        continue;
      }
    }
    shared_->ready.push_back(i);
  }
}

CompletionQueue::~CompletionQueue() {
  for (std::size_t i = 0; i < shared_->states.size(); ++i)
    if (shared_->nodes[i] != nullptr && shared_->states[i]->remove_node(shared_->nodes[i]))
      delete shared_->nodes[i];
}

std::optional<std::size_t> CompletionQueue::next(
    const std::chrono::steady_clock::time_point* deadline) {
  std::unique_lock lock(shared_->mutex);
  if (shared_->handed_out == shared_->states.size()) return std::nullopt;
  auto ready = [&] { return !shared_->ready.empty(); };
  if (deadline == nullptr || *deadline == std::chrono::steady_clock::time_point::max()) {
    shared_->cv.wait(lock, ready);
  } else if (!shared_->cv.wait_until(lock, *deadline, ready)) {
    throw TimeoutError(fmt::format("as_completed: {} of {} futures unfinished at the deadline",
                                   shared_->states.size() - shared_->handed_out,
                                   shared_->states.size()));
  }
  const std::size_t i = shared_->ready.front();
  shared_->ready.pop_front();
  ++shared_->handed_out;
  shared_->nodes[i] = nullptr;  // fired: the finisher owns and deletes it
  return i;
}

}  // namespace detail
}  // namespace mproc
