// The channel behind Queue, SimpleQueue, JoinableQueue and Pipe: a framed byte ring in a
// shared segment, shared by any number of producers and consumers that take turns under
// two robust mutexes, so that the ring itself is single-producer single-consumer.
//
// Layout of one channel (a Pipe's segment holds two, one after the other):
//
//   [ChannelControl, kHeaderBytes][ring: `capacity` bytes, a power of two]
//
// `head` and `tail` are free-running byte counts (never reduced modulo the capacity);
// head - tail is the fill level. head is written only by the holder of the producer
// lock, tail only by the holder of the consumer lock.
//
// Frames. Every message travels as frames of a 16-byte FrameHeader and a payload padded
// to 16 bytes. A frame never wraps around the end of the ring: when it would, a PAD
// frame fills the rest of the ring first (PAD and frame are published together). A
// message of at most max_payload bytes (capacity / 4 - 16) is one WHOLE frame, decoded
// in place; a bigger one is FIRST, MIDDLE..., LAST frames of at most kStreamPayload
// bytes (and max_payload), so a consumer copies one frame out while the producer writes
// the next. The frames of a multi-frame message need no contiguity: one that would cross
// the ring's end is cut short there instead of being preceded by a PAD. A frame is
// published (head stored with release) only when it is completely written: a process
// killed while writing one never exposes half a frame.
//
// Killed processes (the reason for ABORT and the recovery records). A producer killed in
// the middle of a message leaves the producer lock to the robust-mutex machinery: the
// next acquirer is told (EOWNERDEAD) and runs recover_producer(), which finishes the dead
// producer's bookkeeping from its record (tx_*) and, if the message was started and not
// finished, publishes an ABORT frame. A consumer inside a message treats ABORT as "drop
// the part you have". Because a producer always keeps kFrameHeader bytes free after a
// non-final frame, an ABORT always fits without waiting. A consumer waiting for the rest
// of a message checks every kProducerCheck whether the producer lock's holder died, and
// then runs the same recovery itself. A consumer killed inside a multi-frame message
// leaves MIDDLE/LAST frames that nobody started: the next consumer discards them as
// orphans (the message is lost with the consumer that was reading it).
//
// Counters. put_count (messages whose first frame was published, incremented just before
// the publish), taken_count (first frames consumed), aborted_count (messages abandoned
// after their first frame), done_count (JoinableQueue::task_done calls). A killed process
// may die between updating a counter and publishing the frame it counts; so each side
// writes, before doing both, a small record (tx_* / rx_*) from which the next holder of
// the lock recomputes the counter as an absolute value: "the count before, plus one if
// head (tail) has passed the frame's end". The records are bracketed by a valid flag, so
// a holder killed while writing the record leaves the previous, still-true state.
//
// Memory ordering. Producer: copy the payload and header into the ring, then head.store
// (release); the consumer loads head (acquire) before reading the frame. Consumer: read
// (or decode) the frame, then tail.store (release); the producer loads tail (acquire)
// before overwriting the space. The lock hand-over (a mutex: acquire/release) orders one
// holder's writes before the next holder's reads, including the cached copies of the
// peer's index (tail_cache, head_cache), which live in shared memory on the owner's line
// so that they survive from one lock holder to the next (rigtorp's SPSCQueue trick): the
// peer's line is read only when the cached value says "full" or "empty".
//
// Sleeping. Only lock holders wait for data or space; the others wait in the mutex.
// A waiter spins for kSpin, then uses the Dekker handshake of src/pool/ring.hpp ("Wake-ups"):
// store sleeping = 1, seq_cst fence, re-check, futex_wait on the flag; the waker stores
// its index, seq_cst fence, and makes a FUTEX_WAKE only if it reads the flag set. So a
// put or get in steady state makes no system call.
//
// Locks. The two LockBlocks are robust process-shared mutexes set up by
// init_lock_block(), but taken here with pthread calls directly rather than through
// robust_lock(): robust_lock() records the holder's thread id, which costs a getpid()
// system call per call (glibc no longer caches the pid), i.e. four system calls per
// message. These blocks are never exposed as a Lock, so the holder fields are not needed.
#include "mproc/queue.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "mproc/error.hpp"
#include "mproc/sync.hpp"
#include "ipc/sync_block.hpp"
#include "os/futex.hpp"
#include "os/platform.hpp"
#include "trace_events.hpp"

namespace mproc::detail {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kLine = 64;
constexpr std::size_t kHeaderBytes = 1024;
constexpr std::size_t kFrameHeader = 16;
constexpr std::size_t kMinCapacity = 4096;
constexpr std::size_t kMaxCapacity = std::size_t{1} << 40;
constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();
// A waiter spins this long before it sleeps: a futex sleep and wake-up costs more than
// a round trip to a peer running on another core.
constexpr auto kSpin = 5us;
// Inside a multi-frame message the peer is in the middle of copying a frame (up to
// kStreamPayload bytes, a few µs to tens of µs): spin longer before paying for a sleep and
// a FUTEX_WAKE per frame.
constexpr auto kStreamSpin = 50us;
// Most payload bytes in one frame of a multi-frame message: a frame is released only once
// copied out, so smaller frames let the producer refill the ring sooner (as SpscRing's
// publish chunks, src/pool/ring.hpp). WHOLE frames go up to max_payload: they are decoded in
// place, and a bigger message costs an assembly buffer and a copy.
constexpr std::uint64_t kStreamPayload = (std::uint64_t{64} << 10) - 16;
// How often a consumer waiting for the rest of a message checks for a dead producer.
constexpr auto kProducerCheck = 50ms;
// A thread keeps its encoding buffer and its assembly buffer between messages, unless
// one grew past this: a stream of big messages then reuses memory instead of faulting
// in fresh pages for every message (page faults, not copies, dominate the cost of a big
// message, more so under a hypervisor), while one 1 GiB message does not pin 1 GiB per
// thread for the life of the process.
constexpr std::size_t kKeepBuffer = std::size_t{64} << 20;
// Multi-frame messages this big are assembled in memory advised for huge pages: faulting
// 4 KiB pages one by one dominates receiving a huge message (see src/pool/ring.cpp).
constexpr std::uint64_t kHugeMessage = std::uint64_t{2} << 20;
// Sanity bound on a message length read from shared memory.
constexpr std::uint64_t kMaxMessage = std::uint64_t{1} << 46;

enum FrameKind : std::uint32_t {
  kWhole = 1,
  kFirst = 2,
  kMiddle = 3,
  kLast = 4,
  kAbort = 5,
  kPad = 6,
};

struct FrameHeader {
  std::uint64_t total;    // message length; meaningful in WHOLE and FIRST
  std::uint32_t payload;  // bytes of payload in this frame (before padding to 16)
  std::uint32_t kind;
};
static_assert(sizeof(FrameHeader) == kFrameHeader);

constexpr std::uint64_t frame_bytes(std::uint64_t payload) noexcept {
  return kFrameHeader + ((payload + kFrameHeader - 1) & ~std::uint64_t{kFrameHeader - 1});
}

// One channel's control block. Lines are grouped in 128-byte pairs by writer (Intel's
// spatial prefetcher fetches aligned line pairs): read-mostly + JoinableQueue; producer
// lock; producer's lines; consumer lock; consumer's lines.
struct alignas(kLine) ChannelControl {
  // Line 0: written at creation, then read-only except `closed`.
  std::uint32_t kind;  // SharedKind::channel
  std::uint32_t flavor;
  std::uint64_t capacity;
  std::uint64_t maxsize;
  std::uint64_t max_payload;
  std::atomic<std::uint32_t> closed;
  std::uint64_t trace_id;  // the creator's pid << 32 | a serial: its name in traces

  // Line 1: JoinableQueue, written by task_done() and join().
  alignas(kLine) std::atomic<std::uint64_t> done_count;
  std::atomic<std::uint32_t> join_seq;  // futex word: bumped when unfinished may be 0
  std::atomic<std::uint32_t> join_waiters;

  // Lines 2-3.
  alignas(kLine) std::byte producer_lock[kLockBlockBytes];

  // Line 4: the producer's hot line. reader_sleeping is the consumer's sleep flag: the
  // producer reads it after every publish, so it sits on the line the producer owns.
  alignas(kLine) std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> tail_cache;  // tail as last seen (never ahead of tail)
  std::atomic<std::uint64_t> put_count;
  std::atomic<std::uint64_t> taken_cache;  // taken_count as last seen
  std::atomic<std::uint64_t> aborted_count;
  std::atomic<std::uint32_t> reader_sleeping;
  std::atomic<std::uint32_t> tx_in_message;  // a FIRST was (about to be) published, no end yet

  // Line 5: the producer's recovery record for the message being written.
  alignas(kLine) std::atomic<std::uint32_t> tx_valid;
  std::atomic<std::uint32_t> tx_end_abort;       // the end frame being written is an ABORT
  std::atomic<std::uint64_t> tx_first_end;       // head after the WHOLE/FIRST frame
  std::atomic<std::uint64_t> tx_count_before;    // put_count before this message
  std::atomic<std::uint64_t> tx_end;             // head after its LAST/ABORT (kNever: none)
  std::atomic<std::uint64_t> tx_aborted_before;  // aborted_count before that ABORT

  // Lines 6-7.
  alignas(kLine) std::byte consumer_lock[kLockBlockBytes];

  // Line 8: the consumer's hot line, with the producer's sleep flag.
  alignas(kLine) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> head_cache;  // head as last seen (never ahead of head)
  std::atomic<std::uint64_t> taken_count;
  std::atomic<std::uint32_t> writer_sleeping;

  // Line 9: the consumer's recovery record for the first frame being taken.
  alignas(kLine) std::atomic<std::uint32_t> rx_valid;
  std::atomic<std::uint64_t> rx_tail_end;      // tail after that frame
  std::atomic<std::uint64_t> rx_count_before;  // taken_count before it
};
static_assert(sizeof(ChannelControl) <= kHeaderBytes);
static_assert(offsetof(ChannelControl, head) == 4 * kLine);
static_assert(offsetof(ChannelControl, tail) == 8 * kLine);

std::uint64_t header_size() noexcept { return kHeaderBytes; }

// ---- robust mutex ---------------------------------------------------------------------

enum class Acquired { no, yes, owner_died };

// pthread_mutex_clocklock(CLOCK_MONOTONIC) until `deadline`; the pthread error code.
int lock_before(pthread_mutex_t* m, SteadyTime deadline) noexcept {
#if defined(__SANITIZE_THREAD__)
  // GCC 12's ThreadSanitizer does not intercept pthread_mutex_clocklock: a lock taken with
  // it is invisible to TSan, which then reports the unlock and every access the lock
  // orders. TSan builds wait on CLOCK_REALTIME instead (a clock step shifts the deadline;
  // acceptable in a test build).
  const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now());
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const auto ns =
      (std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) + left).count();
  const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  return ::pthread_mutex_timedlock(m, &ts);
#else
  // libstdc++'s steady_clock is CLOCK_MONOTONIC.
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  return ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

Acquired lock_until(std::byte* block, SteadyTime deadline) {
  pthread_mutex_t* m = &reinterpret_cast<LockBlock*>(block)->mutex;
  int rc = ::pthread_mutex_trylock(m);
  if (rc == EBUSY) {
    if (deadline == kNoWait) return Acquired::no;
    if (deadline == kForever) {
      rc = ::pthread_mutex_lock(m);
    } else {
      rc = lock_before(m, deadline);
      if (rc == ETIMEDOUT) return Acquired::no;
    }
  }
  if (rc == EOWNERDEAD) {
    // The holder died: the lock is ours. Make it usable again; the caller repairs the
    // state the dead holder was updating.
    ::pthread_mutex_consistent(m);
    return Acquired::owner_died;
  }
  if (rc == EDEADLK)
    throw std::logic_error("mproc queue: this thread already holds the queue's lock");
  if (rc != 0) throw_system_error(rc, "pthread_mutex_lock for a queue");
  return Acquired::yes;
}

void unlock(std::byte* block) noexcept {
  ::pthread_mutex_unlock(&reinterpret_cast<LockBlock*>(block)->mutex);
}

class Unlocker {
 public:
  explicit Unlocker(std::byte* block) noexcept : block_(block) {}
  ~Unlocker() {
    if (block_ != nullptr) unlock(block_);
  }
  Unlocker(const Unlocker&) = delete;
  Unlocker& operator=(const Unlocker&) = delete;
  void unlock_now() noexcept {
    unlock(block_);
    block_ = nullptr;
  }

 private:
  std::byte* block_;
};

enum class Wait { ready, closed, timed_out };

struct NoTick {
  static constexpr bool enabled = false;
  void operator()() const noexcept {}
};

// A thread's spare assembly buffer, kept between gets (up to kKeepBuffer bytes) so that a
// stream of big messages does not fault in fresh pages for every one. Initial-exec and
// trivially destructible on the hot path, as the scratch buffer below.
struct SpareBuffer {
  std::unique_ptr<std::byte[]> bytes;
  std::uint64_t capacity = 0;
};
__attribute__((tls_model("initial-exec"))) thread_local SpareBuffer* tls_spare = nullptr;

[[gnu::noinline]] SpareBuffer* make_spare() {
  thread_local SpareBuffer owner;
  tls_spare = &owner;
  return &owner;
}

// Assembly buffer for a multi-frame message. Taken out of the thread's spare (so a sink
// that itself gets from a queue does not share it) and given back when done.
struct Assembly {
  std::unique_ptr<std::byte[]> bytes;
  std::uint64_t capacity = 0;
  std::uint64_t total = 0;
  std::uint64_t got = 0;

  Assembly() noexcept = default;
  Assembly(const Assembly&) = delete;
  Assembly& operator=(const Assembly&) = delete;
  ~Assembly() {
    if (bytes == nullptr || capacity > kKeepBuffer) return;
    SpareBuffer* spare = tls_spare != nullptr ? tls_spare : make_spare();
    if (capacity > spare->capacity) {
      spare->bytes = std::move(bytes);
      spare->capacity = capacity;
    }
  }

  void start(std::uint64_t n) {
    total = n;
    got = 0;
    if (capacity >= n) return;
    SpareBuffer* spare = tls_spare != nullptr ? tls_spare : make_spare();
    if (spare->capacity >= n) {
      bytes = std::move(spare->bytes);
      capacity = std::exchange(spare->capacity, 0);
      return;
    }
    bytes.reset();
    capacity = 0;
    // Not value-initialized: every byte is about to be overwritten.
    bytes = std::make_unique_for_overwrite<std::byte[]>(n);
    capacity = n;
    if (n >= kHugeMessage) {
      constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
      const auto p = reinterpret_cast<std::uintptr_t>(bytes.get());
      const auto begin = (p + kHuge - 1) & ~(kHuge - 1);
      const auto end = (p + n) & ~(kHuge - 1);
      // Only a hint: where THP is off it changes nothing.
      if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
  }
};

using Parts = std::span<const std::span<const std::byte>>;

// Reads a message given as consecutive parts (a length prefix and a vector's elements, say)
// as if it were one run of bytes.
class Gather {
 public:
  explicit Gather(Parts parts) noexcept : parts_(parts) {}

  std::uint64_t total() const noexcept {
    std::uint64_t n = 0;
    for (const auto& p : parts_) n += p.size();
    return n;
  }
  // Copies the next n bytes to dst.
  void copy_next(std::byte* dst, std::uint64_t n) noexcept {
    while (n != 0) {
      const std::span<const std::byte> part = parts_[index_];
      if (offset_ == part.size()) {
        ++index_;
        offset_ = 0;
        continue;
      }
      const std::uint64_t take = std::min<std::uint64_t>(n, part.size() - offset_);
      std::memcpy(dst, part.data() + offset_, take);
      dst += take;
      n -= take;
      offset_ += take;
    }
  }

 private:
  Parts parts_;
  std::size_t index_ = 0;
  std::size_t offset_ = 0;
};

// Tracing (mproc/trace.hpp). A traced put or get points tls_blocked_ns at its counter of
// time spent waiting; the wait loop, which runs only once the operation could not finish
// at once, adds its time there. initial-exec as the scratch pointers below.
__attribute__((tls_model("initial-exec"))) thread_local std::uint64_t* tls_blocked_ns = nullptr;

struct BlockedTimer {
  std::uint64_t* sum = tls_blocked_ns;
  std::uint64_t start = sum != nullptr ? monotonic_ns() : 0;
  BlockedTimer() = default;
  BlockedTimer(const BlockedTimer&) = delete;
  BlockedTimer& operator=(const BlockedTimer&) = delete;
  ~BlockedTimer() {
    if (sum != nullptr) *sum += monotonic_ns() - start;
  }
};

// This process's view of one channel: pointers into the shared block, and the protocol.
class View {
 public:
  explicit View(const SharedRef& ref) noexcept
      : c_(ref.as<ChannelControl>()),
        data_(ref.get() + kHeaderBytes),
        cap_(c_->capacity),
        mask_(c_->capacity - 1) {}

  bool put(Parts parts, SteadyTime deadline);
  bool get(Channel::Sink sink, void* context, SteadyTime deadline);
  bool wait_message(SteadyTime deadline);
  void close() noexcept;
  void task_done();
  bool join(SteadyTime deadline);

  std::size_t size() const noexcept {
    // taken first: taken <= put at every instant, and put only grows meanwhile (a
    // recovery's roll-back removes an unpublished message, which nobody has taken).
    const std::uint64_t taken = c_->taken_count.load(std::memory_order_acquire);
    const std::uint64_t put = c_->put_count.load(std::memory_order_acquire);
    return put > taken ? static_cast<std::size_t>(put - taken) : 0;
  }
  bool closed() const noexcept { return c_->closed.load(std::memory_order_acquire) != 0; }
  ChannelControl* control() const noexcept { return c_; }

 private:
  [[noreturn]] void throw_closed() const;

  template <class Ready, class Tick>
  Wait wait(std::atomic<std::uint32_t>& flag, Ready&& ready, bool stop_on_close,
            SteadyTime deadline, Tick&& tick, Clock::duration spin = kSpin);

  // ---- producer (the caller holds the producer lock) ----
  std::uint64_t free_bytes(std::uint64_t h, std::uint64_t need) noexcept;
  bool below_maxsize() noexcept;
  std::uint64_t whole_room(std::uint64_t h, std::uint64_t payload) const noexcept;
  struct Chunk {
    std::uint64_t pad;  // 16 if only a header fits before the ring's end, else 0
    std::uint64_t n;    // payload bytes of the frame
    std::uint64_t room() const noexcept { return pad + frame_bytes(n); }
  };
  Chunk next_chunk(std::uint64_t h, std::uint64_t remaining) const noexcept;
  std::uint64_t message_room(std::uint64_t h, std::uint64_t total) const noexcept;
  Wait wait_room(std::uint64_t h, std::uint64_t need, SteadyTime deadline,
                 Clock::duration spin = kSpin);
  std::uint64_t write_whole(std::uint64_t h, Gather& msg, std::uint64_t n) noexcept;
  std::uint64_t write_chunk(std::uint64_t h, const Chunk& chunk, FrameKind kind,
                            std::uint64_t total, Gather& msg) noexcept;
  void write_header(std::uint64_t pos, std::uint64_t total, std::uint64_t payload,
                    FrameKind kind) noexcept;
  void begin_message(std::uint64_t first_end, bool multi) noexcept;
  void publish(std::uint64_t new_head) noexcept;
  void abort_message(std::uint64_t h) noexcept;
  void recover_producer() noexcept;

  // ---- consumer (the caller holds the consumer lock) ----
  Wait wait_data(std::uint64_t t, SteadyTime deadline, bool in_message);
  FrameHeader read_header(std::uint64_t t, std::uint64_t h) const;
  void release(std::uint64_t new_tail) noexcept;
  void take(std::uint64_t new_tail) noexcept;
  void recover_consumer() noexcept;
  void check_producer() noexcept;
  struct ProducerCheck {
    static constexpr bool enabled = true;
    View* view;
    void operator()() const noexcept { view->check_producer(); }
  };

  void wake_joiners() noexcept;
  std::uint64_t unfinished() const noexcept;

  ChannelControl* c_;
  std::byte* data_;
  std::uint64_t cap_;
  std::uint64_t mask_;
};

void View::throw_closed() const {
  const char* name = "mproc::Queue";
  switch (static_cast<ChannelFlavor>(c_->flavor)) {
    case ChannelFlavor::simple_queue:
      name = "mproc::SimpleQueue";
      break;
    case ChannelFlavor::joinable_queue:
      name = "mproc::JoinableQueue";
      break;
    case ChannelFlavor::pipe:
      name = "mproc::Connection";
      break;
    case ChannelFlavor::queue:
      break;
  }
  throw Closed(fmt::format("{} is closed", name));
}

// The waiter's half of the handshake (see the top of this file). `ready` must read the
// peer's index afresh. With stop_on_close, a closed channel ends the wait. `tick` (if
// enabled) runs every kProducerCheck while asleep, with the flag cleared.
template <class Ready, class Tick>
Wait View::wait(std::atomic<std::uint32_t>& flag, Ready&& ready, bool stop_on_close,
                SteadyTime deadline, Tick&& tick, Clock::duration spin) {
  const auto check = [&]() -> std::optional<Wait> {
    if (ready()) return Wait::ready;
    if (stop_on_close && c_->closed.load(std::memory_order_acquire) != 0) return Wait::closed;
    return std::nullopt;
  };
  if (auto w = check()) return *w;
  if (deadline == kNoWait) return Wait::timed_out;
  const BlockedTimer blocked;
  {
    // Read the clock only every 16 rounds: PAUSE alone is 10-140 cycles.
    const auto spin_end = Clock::now() + spin;
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (auto w = check()) return *w;
      if (i % 16 == 0 && Clock::now() >= spin_end) break;
    }
  }
  constexpr bool ticking = std::remove_cvref_t<Tick>::enabled;
  auto next_tick = ticking ? Clock::now() + kProducerCheck : SteadyTime::max();
  for (;;) {
    flag.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // orders the flag before the re-check
    if (auto w = check()) {
      flag.store(0, std::memory_order_relaxed);
      return *w;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      flag.store(0, std::memory_order_relaxed);
      return Wait::timed_out;
    }
    if (ticking && now >= next_tick) {
      flag.store(0, std::memory_order_relaxed);
      tick();
      next_tick = Clock::now() + kProducerCheck;
      continue;
    }
    const SteadyTime until = std::min(deadline, next_tick);
    std::optional<std::chrono::nanoseconds> slice;
    if (until != SteadyTime::max())
      slice = std::chrono::duration_cast<std::chrono::nanoseconds>(until - now) + 1us;
    // Returns at once if a waker cleared the flag after the store above.
    futex_wait(&flag, 1, slice);
  }
}

// ---- producer ---------------------------------------------------------------------------

std::uint64_t View::free_bytes(std::uint64_t h, std::uint64_t need) noexcept {
  std::uint64_t t = c_->tail_cache.load(std::memory_order_relaxed);
  if (cap_ - (h - t) < need) {
    t = c_->tail.load(std::memory_order_acquire);
    c_->tail_cache.store(t, std::memory_order_relaxed);
  }
  return cap_ - (h - t);
}

bool View::below_maxsize() noexcept {
  const std::uint64_t put = c_->put_count.load(std::memory_order_relaxed);
  std::uint64_t taken = c_->taken_cache.load(std::memory_order_relaxed);
  if (put - taken < c_->maxsize) return true;
  taken = c_->taken_count.load(std::memory_order_acquire);
  c_->taken_cache.store(taken, std::memory_order_relaxed);
  return put - taken < c_->maxsize;
}

// Bytes a WHOLE frame of `payload` bytes written at head h takes, with the PAD before it
// if it would cross the ring's end (it is decoded in place, so it must be contiguous).
std::uint64_t View::whole_room(std::uint64_t h, std::uint64_t payload) const noexcept {
  const std::uint64_t to_end = cap_ - (h & mask_);
  const std::uint64_t fb = frame_bytes(payload);
  return (fb > to_end ? to_end : 0) + fb;
}

// The next frame of a multi-frame message with `remaining` bytes to go, written at h: at
// most kStreamPayload (and max_payload) bytes, cut short at the ring's end. Only when a
// header alone fits there does a 16-byte PAD come first.
View::Chunk View::next_chunk(std::uint64_t h, std::uint64_t remaining) const noexcept {
  const std::uint64_t to_end = cap_ - (h & mask_);
  const std::uint64_t pad = to_end == kFrameHeader ? kFrameHeader : 0;
  const std::uint64_t space = (pad != 0 ? cap_ : to_end) - kFrameHeader;
  return Chunk{pad, std::min({remaining, c_->max_payload, kStreamPayload, space})};
}

// Bytes a whole multi-frame message takes from head h, or more than the capacity if it
// cannot fit at once.
std::uint64_t View::message_room(std::uint64_t h, std::uint64_t total) const noexcept {
  std::uint64_t pos = h;
  for (std::uint64_t off = 0; off < total && pos - h <= cap_;) {
    const Chunk chunk = next_chunk(pos, total - off);
    pos += chunk.room();
    off += chunk.n;
  }
  return pos - h;
}

Wait View::wait_room(std::uint64_t h, std::uint64_t need, SteadyTime deadline,
                     Clock::duration spin) {
  if (free_bytes(h, need) >= need) [[likely]]
    return Wait::ready;
  return wait(
      c_->writer_sleeping, [&] { return free_bytes(h, need) >= need; }, true, deadline, NoTick{},
      spin);
}

void View::write_header(std::uint64_t pos, std::uint64_t total, std::uint64_t payload,
                        FrameKind kind) noexcept {
  const FrameHeader hdr{total, static_cast<std::uint32_t>(payload), kind};
  std::memcpy(data_ + pos, &hdr, sizeof hdr);
}

// Writes a WHOLE frame at head h (after a PAD if it would cross the ring's end),
// unpublished; returns the head after it. The caller has made sure the room is free.
std::uint64_t View::write_whole(std::uint64_t h, Gather& msg, std::uint64_t n) noexcept {
  std::uint64_t pos = h & mask_;
  const std::uint64_t fb = frame_bytes(n);
  if (fb > cap_ - pos) {
    write_header(pos, 0, cap_ - pos - kFrameHeader, kPad);
    h += cap_ - pos;
    pos = 0;
  }
  write_header(pos, n, n, kWhole);
  msg.copy_next(data_ + pos + kFrameHeader, n);
  return h + fb;
}

// Writes a frame of a multi-frame message as planned by next_chunk(), unpublished.
std::uint64_t View::write_chunk(std::uint64_t h, const Chunk& chunk, FrameKind kind,
                                std::uint64_t total, Gather& msg) noexcept {
  if (chunk.pad != 0) {
    write_header(h & mask_, 0, 0, kPad);
    h += chunk.pad;
  }
  const std::uint64_t pos = h & mask_;
  write_header(pos, total, chunk.n, kind);
  msg.copy_next(data_ + pos + kFrameHeader, chunk.n);
  return h + frame_bytes(chunk.n);
}

// Records, then counts, a message whose WHOLE/FIRST frame ends at first_end, just before
// it is published. See "Counters" at the top: a holder killed anywhere in here or before
// the publish leaves a record from which recover_producer() gets put_count right.
void View::begin_message(std::uint64_t first_end, bool multi) noexcept {
  const std::uint64_t count = c_->put_count.load(std::memory_order_relaxed);
  // Release stores: they must reach memory in this order, as seen by the next holder
  // (which synchronizes through the mutex), and the compiler must not reorder them.
  c_->tx_valid.store(0, std::memory_order_release);
  c_->tx_count_before.store(count, std::memory_order_release);
  c_->tx_first_end.store(first_end, std::memory_order_release);
  c_->tx_end.store(kNever, std::memory_order_release);
  c_->tx_end_abort.store(0, std::memory_order_release);
  c_->tx_in_message.store(multi ? 1 : 0, std::memory_order_release);
  c_->tx_valid.store(1, std::memory_order_release);
  c_->put_count.store(count + 1, std::memory_order_release);
}

void View::publish(std::uint64_t new_head) noexcept {
  c_->head.store(new_head, std::memory_order_release);
  // The waker's fence of the handshake: orders the head store before the flag load.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_if_sleeping(c_->reader_sleeping);
}

// Abandons the message being written (its FIRST is published, its end is not): publishes
// an ABORT, which always fits (kFrameHeader bytes are kept free after non-final frames,
// and a 16-byte frame at a 16-aligned position never crosses the ring's end).
void View::abort_message(std::uint64_t h) noexcept {
  const std::uint64_t aborted = c_->aborted_count.load(std::memory_order_relaxed);
  c_->tx_aborted_before.store(aborted, std::memory_order_release);
  c_->tx_end_abort.store(1, std::memory_order_release);
  c_->tx_end.store(h + kFrameHeader, std::memory_order_release);
  c_->aborted_count.store(aborted + 1, std::memory_order_release);
  write_header(h & mask_, 0, 0, kAbort);
  publish(h + kFrameHeader);
  c_->tx_in_message.store(0, std::memory_order_release);
  wake_joiners();
}

// The previous holder of the producer lock died. Rebuilds the counters it may have been
// updating from its record, and aborts the message it left unfinished.
void View::recover_producer() noexcept {
  const std::uint64_t h = c_->head.load(std::memory_order_acquire);
  if (c_->tx_valid.load(std::memory_order_acquire) == 0) {
    // Killed while writing the record: nothing of the new message was counted or
    // published yet.
    c_->tx_in_message.store(0, std::memory_order_release);
    return;
  }
  const bool first_published = h >= c_->tx_first_end.load(std::memory_order_acquire);
  c_->put_count.store(
      c_->tx_count_before.load(std::memory_order_acquire) + (first_published ? 1 : 0),
      std::memory_order_release);
  if (c_->tx_in_message.load(std::memory_order_acquire) != 0) {
    if (first_published) {
      const std::uint64_t end = c_->tx_end.load(std::memory_order_acquire);
      const bool end_published = end != kNever && h >= end;
      if (c_->tx_end_abort.load(std::memory_order_acquire) != 0) {
        c_->aborted_count.store(
            c_->tx_aborted_before.load(std::memory_order_acquire) + (end_published ? 1 : 0),
            std::memory_order_release);
      }
      if (!end_published) abort_message(h);
    }
    c_->tx_in_message.store(0, std::memory_order_release);
  }
  // put_count may have been rolled back: join() may be done.
  wake_joiners();
}

bool View::put(Parts parts, SteadyTime deadline) {
  if (closed()) throw_closed();
  std::byte* lock = c_->producer_lock;
  const Acquired acquired = lock_until(lock, deadline);
  if (acquired == Acquired::no) return false;
  Unlocker unlocker(lock);
  if (acquired == Acquired::owner_died) recover_producer();
  if (closed()) throw_closed();

  if (c_->maxsize != 0) {
    switch (wait(
        c_->writer_sleeping, [&] { return below_maxsize(); }, true, deadline, NoTick{})) {
      case Wait::ready:
        break;
      case Wait::closed:
        throw_closed();
      case Wait::timed_out:
        return false;
    }
  }

  Gather msg(parts);
  const std::uint64_t total = msg.total();
  std::uint64_t h = c_->head.load(std::memory_order_relaxed);
  if (total <= c_->max_payload) {
    switch (wait_room(h, whole_room(h, total), deadline)) {
      case Wait::ready:
        break;
      case Wait::closed:
        throw_closed();
      case Wait::timed_out:
        return false;
    }
    const std::uint64_t end = write_whole(h, msg, total);
    begin_message(end, false);
    publish(end);
    return true;
  }

  // try_put: all or nothing, so never start a message that cannot be finished now.
  if (deadline == kNoWait && message_room(h, total) > free_bytes(h, cap_)) return false;

  // Every non-final frame keeps kFrameHeader bytes free after it, for an ABORT.
  Chunk chunk = next_chunk(h, total);
  switch (wait_room(h, chunk.room() + kFrameHeader, deadline)) {
    case Wait::ready:
      break;
    case Wait::closed:
      throw_closed();
    case Wait::timed_out:
      return false;
  }
  h = write_chunk(h, chunk, kFirst, total, msg);
  begin_message(h, true);
  publish(h);
  std::uint64_t off = chunk.n;
  try {
    while (off < total) {
      chunk = next_chunk(h, total - off);
      const bool last = off + chunk.n == total;
      const Wait w =
          closed() ? Wait::closed
                   : wait_room(h, chunk.room() + (last ? 0 : kFrameHeader), deadline, kStreamSpin);
      if (w == Wait::closed) {
        abort_message(h);
        throw_closed();
      }
      if (w == Wait::timed_out) {
        abort_message(h);
        return false;
      }
      const std::uint64_t end = write_chunk(h, chunk, last ? kLast : kMiddle, total, msg);
      if (last) c_->tx_end.store(end, std::memory_order_release);
      publish(end);
      h = end;
      off += chunk.n;
    }
  } catch (const Closed&) {
    throw;
  } catch (...) {
    // Only a futex failure can get here (a bug); leave the ring consistent anyway.
    if (c_->tx_in_message.load(std::memory_order_relaxed) != 0) abort_message(h);
    throw;
  }
  c_->tx_in_message.store(0, std::memory_order_release);
  return true;
}

// ---- consumer ---------------------------------------------------------------------------

Wait View::wait_data(std::uint64_t t, SteadyTime deadline, bool in_message) {
  const auto ready = [&] {
    const std::uint64_t h = c_->head.load(std::memory_order_acquire);
    if (h == t) return false;
    c_->head_cache.store(h, std::memory_order_relaxed);
    return true;
  };
  if (!in_message) return wait(c_->reader_sleeping, ready, true, deadline, NoTick{});
  // Inside a message: wait for the rest whatever the deadline or close() say, but check
  // now and then that its producer is alive.
  return wait(c_->reader_sleeping, ready, false, kForever, ProducerCheck{this}, kStreamSpin);
}

// If the producer lock's holder is dead, does its recovery (which publishes an ABORT for
// the message this consumer is waiting on). A busy lock means the producer lives.
void View::check_producer() noexcept {
  Acquired a = Acquired::no;
  try {
    a = lock_until(c_->producer_lock, kNoWait);
  } catch (...) {
    return;  // a system error on try-lock: try again at the next check
  }
  if (a == Acquired::no) return;
  Unlocker unlocker(c_->producer_lock);
  if (a == Acquired::owner_died) recover_producer();
}

FrameHeader View::read_header(std::uint64_t t, std::uint64_t h) const {
  FrameHeader hdr;
  const std::uint64_t pos = t & mask_;
  std::memcpy(&hdr, data_ + pos, sizeof hdr);
  const std::uint64_t fb = frame_bytes(hdr.payload);
  const bool ok = hdr.kind >= kWhole && hdr.kind <= kPad && fb <= h - t && fb <= cap_ - pos &&
                  (hdr.kind == kPad ? fb == cap_ - pos : hdr.payload <= c_->max_payload) &&
                  (hdr.kind != kFirst || (hdr.total > hdr.payload && hdr.total <= kMaxMessage));
  if (!ok) [[unlikely]]
    throw SharedStateError(
        fmt::format("mproc queue: corrupt frame in shared memory at offset {} (kind {}, {} bytes)",
                    pos, hdr.kind, hdr.payload));
  return hdr;
}

void View::release(std::uint64_t new_tail) noexcept {
  c_->tail.store(new_tail, std::memory_order_release);
  // The waker's fence of the handshake with a producer waiting for room or for a count.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_if_sleeping(c_->writer_sleeping);
}

// Releases a WHOLE/FIRST frame and counts its message taken, with the record that lets
// recover_consumer() get taken_count right if this process dies in between.
void View::take(std::uint64_t new_tail) noexcept {
  const std::uint64_t count = c_->taken_count.load(std::memory_order_relaxed);
  c_->rx_valid.store(0, std::memory_order_release);
  c_->rx_count_before.store(count, std::memory_order_release);
  c_->rx_tail_end.store(new_tail, std::memory_order_release);
  c_->rx_valid.store(1, std::memory_order_release);
  c_->taken_count.store(count + 1, std::memory_order_release);
  release(new_tail);
}

void View::recover_consumer() noexcept {
  if (c_->rx_valid.load(std::memory_order_acquire) == 0) return;
  const std::uint64_t t = c_->tail.load(std::memory_order_acquire);
  const bool released = t >= c_->rx_tail_end.load(std::memory_order_acquire);
  c_->taken_count.store(c_->rx_count_before.load(std::memory_order_acquire) + (released ? 1 : 0),
                        std::memory_order_release);
}

bool View::get(Channel::Sink sink, void* context, SteadyTime deadline) {
  std::byte* lock = c_->consumer_lock;
  const Acquired acquired = lock_until(lock, deadline);
  if (acquired == Acquired::no) return false;
  Unlocker unlocker(lock);
  if (acquired == Acquired::owner_died) recover_consumer();

  Assembly message;
  bool in_message = false;
  for (;;) {
    const std::uint64_t t = c_->tail.load(std::memory_order_relaxed);
    std::uint64_t h = c_->head_cache.load(std::memory_order_relaxed);
    if (h == t) {
      h = c_->head.load(std::memory_order_acquire);
      c_->head_cache.store(h, std::memory_order_relaxed);
    }
    if (h == t) {
      if (in_message) {
        wait_data(t, kForever, true);
        continue;
      }
      switch (wait_data(t, deadline, false)) {
        case Wait::ready:
          continue;
        case Wait::timed_out:
          return false;
        case Wait::closed:
          // Closed: drain first. A put that completed before close() was called is
          // visible now (close's store is ordered after it).
          if (c_->head.load(std::memory_order_acquire) != t) continue;
          throw_closed();
      }
    }

    const FrameHeader hdr = read_header(t, h);
    const std::uint64_t end = t + frame_bytes(hdr.payload);
    const std::byte* payload = data_ + (t & mask_) + kFrameHeader;
    switch (hdr.kind) {
      case kPad:
        release(end);
        continue;
      case kAbort:  // the producer gave up on the message (or died writing it)
        in_message = false;
        release(end);
        continue;
      case kWhole:
        // Decoded in place, then released; a decoding error consumes the message too.
        try {
          sink(context, {payload, hdr.payload});
        } catch (...) {
          take(end);
          throw;
        }
        take(end);
        return true;
      case kFirst:
        in_message = false;  // a partial message before it was abandoned
        try {
          message.start(hdr.total);
        } catch (...) {
          take(end);  // the rest of the message will be discarded as orphans
          throw;
        }
        std::memcpy(message.bytes.get(), payload, hdr.payload);
        message.got = hdr.payload;
        take(end);
        in_message = true;
        continue;
      case kMiddle:
      case kLast: {
        if (!in_message) {  // an orphan: its message's reader died, or it was abandoned
          release(end);
          continue;
        }
        const bool last = hdr.kind == kLast;
        if (message.got + hdr.payload > message.total ||
            last != (message.got + hdr.payload == message.total)) [[unlikely]] {
          in_message = false;  // cannot happen without corruption: drop the message
          release(end);
          continue;
        }
        std::memcpy(message.bytes.get() + message.got, payload, hdr.payload);
        message.got += hdr.payload;
        release(end);
        if (!last) continue;
        // The message is ours: decode it without holding up the other consumers.
        unlocker.unlock_now();
        sink(context, {message.bytes.get(), message.total});
        return true;
      }
      default:
        break;
    }
  }
}

bool View::wait_message(SteadyTime deadline) {
  std::byte* lock = c_->consumer_lock;
  const Acquired acquired = lock_until(lock, deadline);
  if (acquired == Acquired::no) return false;
  Unlocker unlocker(lock);
  if (acquired == Acquired::owner_died) recover_consumer();
  for (;;) {
    const std::uint64_t t = c_->tail.load(std::memory_order_relaxed);
    const std::uint64_t h = c_->head.load(std::memory_order_acquire);
    if (h == t) {
      switch (wait_data(t, deadline, false)) {
        case Wait::ready:
          continue;
        case Wait::timed_out:
          return false;
        case Wait::closed:
          return true;
      }
    }
    const FrameHeader hdr = read_header(t, h);
    if (hdr.kind == kWhole || hdr.kind == kFirst) return true;
    // PAD, ABORT and orphans (nobody is inside a message while we hold the lock).
    release(t + frame_bytes(hdr.payload));
  }
}

void View::close() noexcept {
  c_->closed.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_if_sleeping(c_->reader_sleeping);
  wake_if_sleeping(c_->writer_sleeping);
  wake_joiners();
}

// ---- JoinableQueue ------------------------------------------------------------------------

std::uint64_t View::unfinished() const noexcept {
  // aborted before put: a message put and aborted between the two loads is then counted
  // in neither, never in aborted alone.
  const std::uint64_t aborted = c_->aborted_count.load(std::memory_order_seq_cst);
  const std::uint64_t put = c_->put_count.load(std::memory_order_seq_cst);
  const std::uint64_t done = c_->done_count.load(std::memory_order_seq_cst);
  const std::uint64_t live = put - std::min(put, aborted);
  return live > done ? live - done : 0;
}

void View::wake_joiners() noexcept {
  // Pairs with join()'s increment of join_waiters before its re-check (Dekker again).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (c_->join_waiters.load(std::memory_order_relaxed) != 0) {
    c_->join_seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&c_->join_seq);
  }
}

void View::task_done() {
  std::uint64_t done = c_->done_count.load(std::memory_order_seq_cst);
  for (;;) {
    if (unfinished() == 0)
      throw std::logic_error(
          "mproc::JoinableQueue::task_done() called more times than there were items");
    if (c_->done_count.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst)) break;
  }
  if (unfinished() == 0) wake_joiners();
}

bool View::join(SteadyTime deadline) {
  for (;;) {
    if (unfinished() == 0) return true;
    c_->join_waiters.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint32_t seq = c_->join_seq.load(std::memory_order_seq_cst);
    bool timed_out = false;
    if (unfinished() != 0) {
      if (deadline == kForever) {
        futex_wait(&c_->join_seq, seq);
      } else {
        const auto left = deadline - Clock::now();
        timed_out = left <= Clock::duration::zero() ||
                    futex_wait(&c_->join_seq, seq,
                               std::chrono::duration_cast<std::chrono::nanoseconds>(left));
      }
    }
    c_->join_waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (timed_out) return unfinished() == 0;
  }
}

// ---- creation ---------------------------------------------------------------------------

std::uint64_t capacity_for(std::size_t buffer_bytes) {
  if (buffer_bytes > kMaxCapacity)
    throw std::invalid_argument(
        fmt::format("mproc queue: buffer_bytes {} is more than the limit of 2^40", buffer_bytes));
  return std::max<std::uint64_t>(kMinCapacity, std::bit_ceil(std::uint64_t{buffer_bytes}));
}

void init_channel(std::byte* p, ChannelFlavor flavor, std::uint64_t capacity,
                  std::uint64_t maxsize) {
  auto* c = new (p) ChannelControl{};
  c->kind = static_cast<std::uint32_t>(SharedKind::channel);
  c->flavor = static_cast<std::uint32_t>(flavor);
  c->capacity = capacity;
  c->maxsize = maxsize;
  c->max_payload = capacity / 4 - kFrameHeader;
  static std::atomic<std::uint32_t> serial{0};
  c->trace_id = static_cast<std::uint64_t>(::getpid()) << 32 |
                (serial.fetch_add(1, std::memory_order_relaxed) + 1);
  init_lock_block(c->producer_lock, false);
  init_lock_block(c->consumer_lock, false);
}

const char* purpose_of(ChannelFlavor flavor) noexcept {
  switch (flavor) {
    case ChannelFlavor::simple_queue:
      return "SimpleQueue";
    case ChannelFlavor::joinable_queue:
      return "JoinableQueue";
    case ChannelFlavor::pipe:
      return "Pipe";
    case ChannelFlavor::queue:
      break;
  }
  return "Queue";
}

// The scratch buffer of each thread. The hot variables are trivially destructible and
// initial-exec, as libmproc's other thread-locals (src/wait_helper.hpp): one instruction
// to reach them. A thread_local with a destructor would need a guard reached through
// __tls_get_addr on every access; the owner below pays for that once per thread.
__attribute__((tls_model("initial-exec"))) thread_local std::vector<std::byte>* tls_scratch =
    nullptr;
__attribute__((tls_model("initial-exec"))) thread_local bool tls_scratch_busy = false;

[[gnu::noinline]] std::vector<std::byte>* make_scratch() {
  thread_local std::vector<std::byte> owner;
  tls_scratch = &owner;
  return &owner;
}

}  // namespace

// ---- Channel -------------------------------------------------------------------------------

Channel Channel::create(const QueueOptions& options, ChannelFlavor flavor) {
  const std::uint64_t capacity = capacity_for(options.buffer_bytes);
  SharedRef ref;
  ref.segment = Segment::create(kHeaderBytes + capacity, purpose_of(flavor));
  ref.offset = 0;
  init_channel(ref.get(), flavor, capacity, options.maxsize);
  return Channel(std::move(ref));
}

std::pair<Channel, Channel> Channel::create_pipe(std::size_t buffer_bytes) {
  const std::uint64_t capacity = capacity_for(buffer_bytes);
  const std::uint64_t stride = kHeaderBytes + capacity;
  Segment segment = Segment::create(2 * stride, "Pipe");
  init_channel(segment.data(), ChannelFlavor::pipe, capacity, 0);
  init_channel(segment.data() + stride, ChannelFlavor::pipe, capacity, 0);
  return {Channel(SharedRef{segment, 0}), Channel(SharedRef{segment, stride})};
}

namespace {

// The traced twins of put and get: one event each in the trace slots, with the time the
// call waited. An operation that gave up at once (try_put, try_get) is not an event. They
// call Channel::put and get again, which see tls_blocked_ns set and take the plain path:
// so View::get keeps a single caller and stays inlined into Channel::get.
/// Runs `call` (a put or a get on `channel`) and records it as one queue event of
/// `direction` (0 put, 1 get): its start, the time it blocked, `bytes()` after the call,
/// and how it ended. A try_ call that found nothing to do is not recorded.
template <class Call, class Bytes>
bool traced_op(int direction, const SharedRef& ref, SteadyTime deadline, Call call,
               Bytes bytes) {
  View view(ref);
  std::uint64_t blocked = 0;
  std::uint64_t* const outer = std::exchange(tls_blocked_ns, &blocked);
  const std::uint64_t start = monotonic_ns();
  const ChannelControl* c = view.control();
  const char* kind = purpose_of(static_cast<ChannelFlavor>(c->flavor));
  bool ok = false;
  try {
    ok = call();
  } catch (const Closed&) {
    tls_blocked_ns = outer;
    trace_queue_op(direction, c->trace_id, kind, start, blocked, bytes(),
                   QueueTraceStatus::closed);
    throw;
  } catch (...) {
    tls_blocked_ns = outer;
    throw;
  }
  tls_blocked_ns = outer;
  if (ok || deadline != kNoWait)
    trace_queue_op(direction, c->trace_id, kind, start, blocked, bytes(),
                   ok ? QueueTraceStatus::ok : QueueTraceStatus::timeout);
  return ok;
}

[[gnu::noinline]] bool traced_put(const Channel& channel, const SharedRef& ref, Parts parts,
                                  SteadyTime deadline) {
  std::uint64_t bytes = 0;
  for (const auto& p : parts) bytes += p.size();
  return traced_op(
      0, ref, deadline, [&] { return channel.put(parts, deadline); }, [&] { return bytes; });
}

struct CountingSink {
  Channel::Sink sink;
  void* context;
  std::uint64_t bytes = 0;
  static void take(void* self, std::span<const std::byte> message) {
    auto* s = static_cast<CountingSink*>(self);
    s->bytes += message.size();
    s->sink(s->context, message);
  }
};

[[gnu::noinline]] bool traced_get(const Channel& channel, const SharedRef& ref,
                                  Channel::Sink sink, void* context, SteadyTime deadline) {
  CountingSink counting{sink, context};
  return traced_op(
      1, ref, deadline, [&] { return channel.get(&CountingSink::take, &counting, deadline); },
      [&] { return counting.bytes; });
}

}  // namespace

bool Channel::put(std::span<const std::byte> message, SteadyTime deadline) const {
  const std::span<const std::byte> parts[1] = {message};
  if (trace_slots() != nullptr && tls_blocked_ns == nullptr) [[unlikely]]
    return traced_put(*this, ref_, parts, deadline);
  return View(ref_).put(parts, deadline);
}

bool Channel::put(std::span<const std::span<const std::byte>> parts, SteadyTime deadline) const {
  // One branch when tracing is off; the second test runs only when it is on.
  if (trace_slots() != nullptr && tls_blocked_ns == nullptr) [[unlikely]]
    return traced_put(*this, ref_, parts, deadline);
  return View(ref_).put(parts, deadline);
}

bool Channel::get(Sink sink, void* context, SteadyTime deadline) const {
  if (trace_slots() != nullptr && tls_blocked_ns == nullptr) [[unlikely]]
    return traced_get(*this, ref_, sink, context, deadline);
  return View(ref_).get(sink, context, deadline);
}

bool Channel::wait_message(SteadyTime deadline) const { return View(ref_).wait_message(deadline); }

std::size_t Channel::size() const noexcept { return View(ref_).size(); }

std::size_t Channel::maxsize() const noexcept {
  return static_cast<std::size_t>(ref_.as<ChannelControl>()->maxsize);
}

bool Channel::full() const noexcept {
  const std::size_t max = maxsize();
  return max != 0 && size() >= max;
}

void Channel::close() const noexcept { View(ref_).close(); }

bool Channel::closed() const noexcept { return View(ref_).closed(); }

void Channel::task_done() const { View(ref_).task_done(); }

bool Channel::join(SteadyTime deadline) const { return View(ref_).join(deadline); }

std::uint64_t Channel::header_bytes() noexcept { return header_size(); }

void Channel::check_loaded(const SharedRef& ref, ChannelFlavor flavor, ChannelFlavor also) {
  const char* what = purpose_of(flavor);
  check_kind(ref.get(), SharedKind::channel, what);
  const auto* c = ref.as<ChannelControl>();
  const auto got = static_cast<ChannelFlavor>(c->flavor);
  if (got != flavor && (also == ChannelFlavor{} || got != also))
    throw SharedStateError(
        fmt::format("{}: the handle names a {}, not a {}", what, purpose_of(got), what));
  const std::uint64_t capacity = c->capacity;
  if (capacity < kMinCapacity || capacity > kMaxCapacity || !std::has_single_bit(capacity) ||
      c->max_payload != capacity / 4 - kFrameHeader ||
      ref.offset + kHeaderBytes + capacity > ref.segment.size())
    throw SharedStateError(fmt::format("{}: the handle names a damaged {}", what, what));
  // A channel starts its segment; a Pipe's second direction follows the first.
  const bool second_of_pipe = got == ChannelFlavor::pipe && ref.offset == kHeaderBytes + capacity;
  if (ref.offset != 0 && !second_of_pipe)
    throw SharedStateError(
        fmt::format("{}: the handle does not name a {} (offset {})", what, what, ref.offset));
}

void Channel::check_pipe_ends(const Channel& tx, const Channel& rx) {
  if (!(tx.ref_.segment == rx.ref_.segment) || tx.ref_.offset == rx.ref_.offset)
    throw SharedStateError("Pipe: the handle's two directions are not the two of one Pipe");
}

std::vector<std::byte>* acquire_scratch() noexcept {
  if (tls_scratch_busy) return nullptr;
  tls_scratch_busy = true;
  std::vector<std::byte>* s = tls_scratch != nullptr ? tls_scratch : make_scratch();
  s->clear();
  return s;
}

void release_scratch() noexcept {
  tls_scratch_busy = false;
  std::vector<std::byte>* s = tls_scratch;
  if (s != nullptr && s->capacity() > kKeepBuffer) std::vector<std::byte>().swap(*s);
}

}  // namespace mproc::detail
