// SpscRing: a single-producer single-consumer byte ring in shared memory, carrying
// length-prefixed messages between two processes: the transport between the process
// Pool's parent and each worker (docs/architecture.md). Internal to libmproc.
//
// Layout. A ring is a control block followed by a power-of-two data area of `capacity`
// bytes; bytes_needed(capacity) is the total and a multiple of 64, so rings (and
// Doorbells) can be packed one after another in one SharedMapping. `head` and `tail` are
// free-running 64-bit byte counts (written and read), never reduced modulo the capacity:
// head - tail is the fill level, and at 2^64 bytes they never wrap in practice.
//
// Lifetime. The creator calls init() on memory nobody else is using (before fork, or
// before a replacement worker is started); any number of SpscRing views may then point
// at the memory, in any processes. A view caches the peer's index, so after init()
// every *other* view of the same ring must be reconstructed or reset_view()ed.
//
// Roles. At any moment one thread of one process is the producer (write_some, send,
// MessageWriter) and one is the consumer (read_some, recv, MessageReader). A view may be
// used in both roles by two threads at once: the two roles touch disjoint members.
//
// Messages. A message is its length as a little-endian u64, then its bytes. The ring
// needs no room for a whole message: a message larger than the capacity streams through
// in pieces (a 1 GiB result through a 1 MiB ring). The reader assembles it in a vector.
//
// Memory ordering. The producer copies bytes into the data area, then stores `head` with
// release; the consumer loads `head` with acquire before copying them out, so it sees
// every byte written before that head. Symmetrically the consumer stores `tail` with
// release after copying bytes out, and the producer loads `tail` with acquire before it
// overwrites that space, so a slot is never reused while it is still being read. Each
// side loads its own index relaxed (only it writes it) and keeps a cached copy of the
// peer's (rigtorp's SPSCQueue trick): it re-reads the peer's cache line only when the
// cached value says the ring is empty (consumer) or too full (producer), so in steady
// state each index line moves between cores about once per batch instead of once per
// operation. `head`, `tail` and the `closed` flag each sit on their own 64-byte line
// (head and tail 128 bytes apart). Big transfers are published and freed in pieces of
// at most 64 KiB, so that the two copies (in, out) overlap instead of alternating.
//
// Wake-ups. A waiter spins for WaitOptions::spin (a few µs, PAUSE in the loop), then
// sleeps. Sleeping is Dekker's handshake, made of a store and a load on each side with a
// seq_cst fence between them:
//
//     waiter (consumer)                    waker (producer)
//     reader_sleeping = 1           (a)    head = h (release)            (c)
//     fence(seq_cst)                (F1)   fence(seq_cst)                (F2)
//     if (head != tail) don't sleep (b)    if (reader_sleeping) wake     (d)
//     futex_wait(reader_sleeping, 1)
//
// The fences are totally ordered. If F1 precedes F2, (d) reads the 1 stored by (a) and the
// producer wakes the consumer (futex_wait returns at once if the word is already 0 when
// the kernel looks, so a wake that lands before the consumer is asleep is not lost). If
// F2 precedes F1, (b) sees (c) and the consumer does not sleep. Without the fences both
// loads could be satisfied before the other side's store leaves its store buffer (x86
// reorders a store with a later load: acquire/release cannot prevent it), both would
// read the old values, and the consumer would sleep on data that is already there: a
// lost wake-up. The producer's space wait (writer_sleeping against tail), close() against
// both waits, and the Doorbell below are the same pattern. The fast path therefore costs
// one fence and one load of a line the waker usually owns; it makes no system call
// unless the peer has declared itself asleep. The waker clears the flag with an exchange
// so that one sleep costs at most one FUTEX_WAKE.
//
// Event loops. The parent cannot futex-wait on many rings at once. A view can name a
// Doorbell (in shared memory; its eventfd created before fork, so the number is the same
// in every process): the producer rings the `data` doorbell after publishing bytes and
// the consumer rings the `space` doorbell after freeing space, in both cases only if the
// loop has armed it. The loop: arm(); re-check every ring (readable()/writable(), or
// MessageReader/Writer::poll); if nothing moved, block on the eventfd (poll/epoll,
// together with pidfds); disarm(). arm() is (a)+(F1) above, and the re-check is (b).
// Doorbells belong to a view, not to the shared block: each process names them on its
// own views (a view inherited through fork keeps them).
//
// Dead peers. Every blocking call takes WaitOptions: a deadline and an `abort` predicate
// evaluated before each sleep, the sleeps being sliced to at most abort_interval (50 ms),
// so a wait on a peer that was SIGKILLed ends within one slice of the predicate noticing.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "mproc/error.hpp"
#include "os/platform.hpp"

namespace mproc::detail {

inline constexpr std::size_t kCacheLine = 64;

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

/// How a blocking ring call waits.
struct WaitOptions {
  /// Give up (return false) at this time. kNoDeadline: never.
  Deadline deadline = kNoDeadline;
  /// If set, called before each sleep; returning true ends the wait (return false).
  /// The Pool passes "is the peer dead?". Must not throw.
  const std::function<bool()>* abort = nullptr;
  /// Busy-wait this long (re-checking with a PAUSE in between) before the first sleep.
  std::chrono::nanoseconds spin = std::chrono::microseconds(5);
  /// With an abort predicate, sleep at most this long at a time.
  std::chrono::nanoseconds abort_interval = std::chrono::milliseconds(50);
};

/// WaitOptions whose deadline is `timeout` from now (saturating: a huge timeout is none).
WaitOptions within(std::chrono::nanoseconds timeout, const std::function<bool()>* abort = nullptr);

enum class WaitStatus {
  ready,      ///< the condition holds (or the ring is closed)
  timed_out,  ///< the deadline passed
  aborted,    ///< the abort predicate returned true
};

/// The ring was closed (by either side), or its bytes are not a valid message stream.
class RingError : public Error {
 public:
  using Error::Error;
  ~RingError() override;
};

/// Receiving from a ring that is closed and drained (or closed in the middle of a
/// message), or sending to a closed ring.
class RingClosed : public RingError {
 public:
  using RingError::RingError;
  ~RingClosed() override;
};

/// Wakes an event loop that waits on many rings: a sleeping flag plus an eventfd, both
/// usable from every process that inherited them. Construct it in shared memory (it is
/// trivially destructible), with an eventfd from make_eventfd() created before fork.
struct alignas(kCacheLine) Doorbell {
  /// 1 while the loop is (about to be) blocked on `eventfd`. Written by the loop (arm,
  /// disarm) and cleared by the one peer that rings.
  std::atomic<std::uint32_t> sleeping{0};
  /// Non-blocking, close-on-exec eventfd; owned by whoever created it, not by this struct.
  int eventfd = -1;
  /// What fstat said of `eventfd` when the doorbell was made. A task that closes the fds
  /// it inherited (closefrom(3), close_range) can leave that number closed, or reused by
  /// a file of its own; a peer checks before it writes (see intact()).
  std::uint64_t device = 0;
  std::uint64_t inode = 0;

  /// Records `efd`'s identity (fstat). Throws std::system_error.
  explicit Doorbell(int efd);

  /// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK). Throws std::system_error.
  static UniqueFd make_eventfd();

  /// Loop side: declare the intent to sleep, with the fence that orders this store
  /// before the loop's re-check of its rings (see "Wake-ups" above). Re-check every
  /// ring after arm() and before blocking on the eventfd.
  void arm() noexcept;
  /// Loop side: no longer sleeping (call after waking, whatever woke the loop).
  void disarm() noexcept { sleeping.store(0, std::memory_order_relaxed); }
  /// Loop side: block until the eventfd is readable or `timeout` passes (none: forever),
  /// then drain it and disarm(). Returns true if it was rung. Retries EINTR.
  /// Throws std::system_error.
  bool wait(std::optional<std::chrono::nanoseconds> timeout);
  /// Loop side: reset the eventfd counter to 0 (after epoll reported it readable).
  void drain() noexcept;

  /// Peer side: if the loop is armed, disarm it and write the eventfd. The caller must
  /// have published its change (head/tail) and then executed a seq_cst fence; SpscRing
  /// does. At most one peer writes per arm(). If `eventfd` is no longer this doorbell's
  /// (see intact()), nothing is written, the loop stays armed for the next peer, and
  /// lost() becomes true in this process.
  void ring() noexcept;

  /// Whether `eventfd`, in this process, still names the file it named when the doorbell
  /// was made: open, and the same device and inode. An eventfd shares its inode with the
  /// kernel's other anonymous files, so this tells a closed number or a reused one (a
  /// file, a pipe, a socket) from the doorbell, not one eventfd from another.
  bool intact() const noexcept;
  /// Whether a ring() in this process found its doorbell's eventfd gone.
  static bool lost() noexcept;
};
static_assert(sizeof(Doorbell) == kCacheLine);

/// Which doorbells a ring view rings: `data` when the producer publishes bytes (the
/// consumer is an event loop), `space` when the consumer frees space (the producer is).
struct RingDoorbells {
  Doorbell* data = nullptr;
  Doorbell* space = nullptr;
};

class SpscRing;

/// Incremental, non-blocking assembly of one message at a time from a ring, for an
/// event loop. Keeps partial state (including a partly read length prefix) between
/// calls. One reader per ring, used by the ring's consumer.
class MessageReader {
 public:
  /// Messages longer than this are treated as a corrupt stream (RingError).
  static constexpr std::uint64_t kDefaultMaxMessage = std::uint64_t{1} << 40;

  MessageReader() noexcept = default;
  explicit MessageReader(std::uint64_t max_message) noexcept : max_message_(max_message) {}

  /// Reads whatever the ring holds, up to the end of the current message. Returns true
  /// when a whole message has arrived: it is moved into `out` (whose old storage the
  /// reader keeps for the next message); false if more bytes are needed. Never blocks.
  /// Throws RingClosed if the ring is closed and drained (also mid-message: the peer
  /// gave up on it), RingError if a length exceeds max_message, std::bad_alloc. After
  /// a throw the reader is unusable until reset().
  [[nodiscard]] bool poll(SpscRing& ring, std::vector<std::byte>& out);

  /// True while part of a message (even one byte of its length) has been read.
  bool in_message() const noexcept { return have_prefix_ != 0; }
  /// Bytes of the current message's payload read so far, and its length (0 until the
  /// length prefix is complete).
  std::uint64_t received() const noexcept { return got_; }
  std::uint64_t expected() const noexcept { return have_prefix_ == 8 ? length_ : 0; }

  /// Forgets any partial message.
  void reset() noexcept;

 private:
  std::uint64_t max_message_ = kDefaultMaxMessage;
  std::array<std::byte, 8> prefix_{};
  std::size_t have_prefix_ = 0;  // bytes of prefix_ filled (8 = length known)
  std::uint64_t length_ = 0;
  std::uint64_t got_ = 0;
  std::vector<std::byte> buf_;
};

/// Incremental, non-blocking writing of one message, for an event loop. Used by the
/// ring's producer; one writer per ring (or several used strictly one after another).
class MessageWriter {
 public:
  /// Starts a message that owns its bytes. Throws std::logic_error if busy().
  void start(std::vector<std::byte>&& msg);
  /// Starts a message made of `msg`, which must stay alive and unchanged until poll()
  /// returns true. Throws std::logic_error if busy().
  void start_borrowed(std::span<const std::byte> msg);
  /// Starts one message made of the concatenation of `parts` (e.g. a header and a
  /// payload). The bytes must stay alive until poll() returns true; the span array
  /// itself is copied. Throws std::logic_error if busy().
  void start_borrowed(std::span<const std::span<const std::byte>> parts);

  /// Writes as much of the message as fits. Returns true when it is entirely in the
  /// ring (and then the writer is idle again), or if idle. Never blocks.
  /// Throws RingClosed if the ring is closed.
  [[nodiscard]] bool poll(SpscRing& ring);

  bool busy() const noexcept { return busy_; }
  /// Bytes of the current message, length prefix included, not yet in the ring.
  std::uint64_t remaining() const noexcept;

  /// Abandons the current message. If part of it is already in the ring, the stream is
  /// broken: close the ring too.
  void reset() noexcept;

 private:
  void begin(std::uint64_t length);

  bool busy_ = false;
  std::array<std::byte, 8> prefix_{};
  std::vector<std::byte> owned_;
  std::vector<std::span<const std::byte>> parts_;  // parts_[0] is the prefix
  std::size_t part_ = 0;
  std::size_t offset_ = 0;
};

/// A view of one ring in shared memory. Copying is disabled (the caches and the
/// partial-message state belong to one user); moving is allowed.
class SpscRing {
 public:
  /// Smallest supported capacity (a power of two, like every capacity).
  static constexpr std::size_t kMinCapacity = 64;

  /// Bytes of shared memory (alignment 64) needed for a ring of `capacity` data bytes:
  /// a multiple of 64. Throws std::invalid_argument unless capacity is a power of two
  /// >= kMinCapacity.
  static std::size_t bytes_needed(std::size_t capacity);

  /// A detached view; only assignment and destruction are valid.
  SpscRing() noexcept = default;
  /// A view of the ring at `mem` (aligned to 64, bytes_needed(capacity) bytes). Does not
  /// touch the memory: the creator calls init() once. Throws std::invalid_argument.
  SpscRing(void* mem, std::size_t capacity, RingDoorbells doorbells = {});

  SpscRing(SpscRing&&) noexcept = default;
  SpscRing& operator=(SpscRing&&) noexcept = default;
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;
  ~SpscRing() = default;

  /// Creator: makes the ring empty and open with nobody asleep, and resets this view.
  /// Only while no other process or thread uses the ring.
  void init() noexcept;
  /// Forgets this view's cached indices and partial recv() state (after someone else
  /// called init()).
  void reset_view() noexcept;

  void set_doorbells(RingDoorbells doorbells) noexcept { bells_ = doorbells; }
  RingDoorbells doorbells() const noexcept { return bells_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool attached() const noexcept { return ctl_ != nullptr; }

  // ---- producer -----------------------------------------------------------------

  /// Bytes that can be written now without blocking (reads the consumer's index).
  /// Non-blocking.
  std::size_t writable() noexcept;
  /// Copies as many bytes of `src` as fit and publishes them (wrapping around the end
  /// of the data area costs one more memcpy, never a pass per byte). Returns the count,
  /// possibly 0. Non-blocking. Throws RingClosed if closed.
  [[nodiscard]] std::size_t write_some(std::span<const std::byte> src);

  /// Sends one message, blocking while the ring is full. Returns true once the whole
  /// message is in the ring. Returns false if the deadline passes or the abort
  /// predicate fires first; if part of the message had entered the ring, the ring is
  /// then closed (the reader gets RingClosed: a half message cannot be taken back).
  /// Throws RingClosed if the ring is or becomes closed.
  bool send(std::span<const std::byte> msg, const WaitOptions& wait = {});
  /// Sends the concatenation of `parts` as one message (a header and a payload without
  /// copying them together). Same contract as send(msg).
  bool send(std::span<const std::span<const std::byte>> parts, const WaitOptions& wait = {});
  /// Sends the concatenation of `parts` as one message if it fits in the ring now, and
  /// returns false (writing nothing) if it does not. Unlike send(), it skips the seq_cst
  /// fence of the wake-up handshake: it wakes the reader only if the reader is already
  /// seen asleep. A reader that goes to sleep at the same moment can miss this message
  /// until the next send() or notify() on this ring, so use it for a stream of messages
  /// that ends with a send() or notify(), to a reader that sleeps with a timeout. The
  /// message itself is published (release) at once: it is never lost, only its wake-up
  /// may be late. Non-blocking. Throws RingClosed if closed.
  [[nodiscard]] bool try_send_relaxed(std::span<const std::span<const std::byte>> parts);
  /// Wakes the reader if it sleeps (with the full handshake). Non-blocking.
  void notify() noexcept { wake_reader(); }
  /// Sends one message of `length` bytes produced on the fly: calls next() for the next
  /// piece (its bytes must stay valid until the following call) until `length` bytes
  /// have been sent. Same contract as send(msg); throws std::logic_error (and closes the
  /// ring) if the pieces do not add up to `length` (an empty piece before the end).
  bool send_stream(std::uint64_t length, const std::function<std::span<const std::byte>()>& next,
                   const WaitOptions& wait = {});

  /// Blocks until writable() > 0 or the ring is closed (ready), the deadline passes or
  /// the abort predicate fires.
  WaitStatus wait_writable(const WaitOptions& wait = {});

  // ---- consumer -----------------------------------------------------------------

  /// Bytes that can be read now without blocking (reads the producer's index).
  /// Non-blocking.
  std::size_t readable() noexcept;
  /// Copies up to dst.size() available bytes (at most two memcpys) and frees their
  /// space. Returns the count; 0 if empty (check closed() to tell the end). Non-blocking.
  [[nodiscard]] std::size_t read_some(std::span<std::byte> dst);

  /// Receives one message into `out`, blocking while none is complete. `out`'s old
  /// contents are discarded (its storage is recycled for the next message). Returns
  /// false if the deadline passes or the abort predicate fires first; a partly received
  /// message is kept and the next recv() continues it. Throws RingClosed once the ring
  /// is closed and every complete message has been received (RingError, std::bad_alloc:
  /// see MessageReader::poll). Do not mix with a MessageReader on the same ring except
  /// between messages.
  [[nodiscard]] bool recv(std::vector<std::byte>& out, const WaitOptions& wait = {});
  /// recv() without blocking.
  [[nodiscard]] bool try_recv(std::vector<std::byte>& out);

  /// Blocks until readable() > 0 or the ring is closed (ready), the deadline passes or
  /// the abort predicate fires.
  WaitStatus wait_readable(const WaitOptions& wait = {});

  // ---- either side --------------------------------------------------------------

  /// Marks the ring closed and wakes both sides (futex and doorbells). Bytes already in
  /// the ring can still be read; writes throw RingClosed. Idempotent. Process-safe.
  void close() noexcept;
  bool closed() const noexcept;

 private:
  friend class MessageReader;
  friend class MessageWriter;

  // Shared control block. Each line is written by one side only, except the sleep
  // flags, which the waker clears, and then only while the owner is asleep.
  struct Control {
    // Producer's line: head, and the consumer's sleep flag (futex word). The producer
    // reads the flag after every publish, so it sits where the producer already owns
    // the line; the consumer writes it only on its way to sleep.
    alignas(kCacheLine) std::atomic<std::uint64_t> head;
    std::atomic<std::uint32_t> reader_sleeping;
    // Read-mostly line, between the two hot ones so that head and tail are 128 bytes
    // apart: Intel's spatial prefetcher fetches lines in aligned pairs.
    alignas(kCacheLine) std::atomic<std::uint32_t> closed;
    std::uint64_t capacity;
    std::uint64_t magic;
    // Consumer's line: tail, and the producer's sleep flag.
    alignas(kCacheLine) std::atomic<std::uint64_t> tail;
    std::atomic<std::uint32_t> writer_sleeping;
  };
  static_assert(sizeof(Control) % kCacheLine == 0);

  // Producer: copies `parts` from the cursor (part, offset) into the ring as far as
  // space allows, publishing every publish_chunk() bytes and at the end (a small
  // message is one publish), waking the reader if needed. True when done.
  bool write_parts(std::span<const std::span<const std::byte>> parts, std::size_t& part,
                   std::size_t& offset);
  // Producer: write_parts until done, waiting for space in between.
  WaitStatus write_parts_blocking(std::span<const std::span<const std::byte>> parts,
                                  std::size_t& part, std::size_t& offset, const WaitOptions& wait);
  bool send_framed(std::span<const std::span<const std::byte>> parts_with_prefix,
                   const WaitOptions& wait);
  void copy_in(std::uint64_t pos, const std::byte* src, std::size_t n) noexcept;
  void copy_out(std::uint64_t pos, std::byte* dst, std::size_t n) const noexcept;
  // Big transfers are published (and freed) in pieces of this size, so that the peer
  // copies one piece while we copy the next, instead of waiting for a whole ring's
  // worth: a quarter of the ring, at most 64 KiB (a few µs of memcpy, against a fence
  // and a load per piece).
  std::size_t publish_chunk() const noexcept {
    return capacity_ / 4 < kMaxChunk ? capacity_ / 4 : kMaxChunk;
  }
  static constexpr std::size_t kMaxChunk = std::size_t{64} << 10;

  // Lower bounds from the cached peer index, refreshed only when they would be 0.
  std::size_t writable_cached() noexcept;
  std::size_t readable_cached() noexcept;
  void publish(std::uint64_t new_head) noexcept;
  void release(std::uint64_t new_tail) noexcept;
  void wake_reader() noexcept;
  void wake_writer() noexcept;
  void throw_if_closed() const;

  Control* ctl_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  RingDoorbells bells_{};
  // Producer-only: the consumer's tail as last seen (never ahead of the real tail).
  std::uint64_t tail_cache_ = 0;
  // Consumer-only: the producer's head as last seen (never ahead of the real head).
  std::uint64_t head_cache_ = 0;
  // Consumer-only: recv()'s partial message.
  MessageReader rx_;
};

}  // namespace mproc::detail
