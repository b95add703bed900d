// Queues and pipes between processes: Python's multiprocessing Queue, SimpleQueue,
// JoinableQueue and Pipe, over shared memory, for any number of producer and consumer
// processes and threads at once.
//
// What they are. A queue is one anonymous shared-memory segment (see detail/segment.hpp)
// holding a control block and a byte ring (QueueOptions::buffer_bytes, 1 MiB by default).
// put() serializes the value (mproc/serialize.hpp) and copies its bytes into the ring;
// get() decodes the next message. A message of any size works: one bigger than the ring
// streams through it in frames while a consumer reads (a 256 MiB vector through a 1 MiB
// ring). A Pipe is one segment with two such rings, one per direction.
//
// Lifetime. The C++ objects are handles: copies share the queue, a forked Process
// inherits it, and a handle is serializable, so it can be an argument of a Pool task or
// be sent through another queue. Like a const std::shared_ptr, a const handle still puts
// and gets: every operation is const, so a lambda can capture a handle by copy. The queue goes away
// with the last handle in the last process, however the processes ended. Messages still in the ring
// are then lost.
//
// Ordering and visibility. Once put() returns, the whole message is in shared memory
// and visible to every process: the next get() to run, in whatever process, receives it
// or a message put before it. Messages from one producer thread arrive in the order they were put;
// messages of different producers interleave whole, never byte by byte. Each message is
// received by exactly one get().
//
// Robustness. At any moment one producer and one consumer touch the ring; the others
// wait on two robust process-shared mutexes. A process SIGKILLed at any point never
// hangs or corrupts the others:
//   - A producer killed in the middle of a multi-frame message: the next producer, or the
//     consumer waiting for the rest (it checks every 50 ms), finds the producer lock's
//     holder dead and marks the message aborted; consumers discard the part they have and
//     go on with the next message. A message is visible only once its first frame is
//     completely written, so a producer killed before that leaves no trace.
//   - A consumer killed while it holds a message: a message that fits in one frame (up to
//     buffer_bytes / 4, 256 KiB by default) stays in the ring for the next consumer; the
//     rest of a bigger message it had started to read is discarded by the next consumer:
//     that message is lost with the consumer that was reading it.
//   - A JoinableQueue item taken by a consumer that dies before task_done() is never
//     done, and join() waits for it, as in Python.
//
// Cost. A put encodes into a per-thread buffer and copies into the ring; a get decodes
// straight from the ring when the message is one frame. In steady state neither makes a
// system call (a sleeping peer is woken with one FUTEX_WAKE) nor allocates beyond what
// decoding T needs. A thread keeps its encoding buffer, and the buffer in which it
// assembles multi-frame messages, for reuse, unless one grew past 64 MiB. Once the
// program calls mproc::trace_to (mproc/trace.hpp), each put and get is also recorded on
// its timeline, with the time it waited; before that the hook is one branch.
//
// Departures from Python:
//   - put() blocks while the byte ring is full, even with maxsize 0 (Python's put returns
//     at once because a feeder thread writes to the pipe later; there is none here, so a
//     put() that returns has really delivered the message to shared memory).
//   - close() closes the queue for every process, not only the calling one: later puts
//     throw Closed everywhere and gets throw Closed once the queue is drained.
//   - A message being read by a consumer that is killed is lost with it (see above).
//   - Closed is thrown where Python raises ValueError/OSError/EOFError.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/deadline.hpp"
#include "detail/segment.hpp"
#include "error.hpp"
#include "export.hpp"
#include "serialize.hpp"

namespace mproc {

/// How a Queue is sized.
struct QueueOptions {
  /// Most messages in the queue at once; 0: no limit on the count (put() still waits
  /// while the byte ring is full).
  std::size_t maxsize = 0;
  /// Capacity of the byte ring, rounded up to a power of two, at least 4096. Messages up
  /// to a quarter of it travel as one frame and are decoded in place; bigger ones stream.
  std::size_t buffer_bytes = std::size_t{1} << 20;
};

template <class T>
class Connection;
template <class T>
std::pair<Connection<T>, Connection<T>> Pipe(std::size_t buffer_bytes = std::size_t{1} << 20);

namespace detail {

/// Which public type a channel segment was created for; checked when a handle is loaded.
enum class ChannelFlavor : std::uint32_t {
  queue = 1,
  simple_queue = 2,
  joinable_queue = 3,
  pipe = 4,
};

/// The deadline of the non-blocking twins: give up at once rather than wait.
inline constexpr SteadyTime kNoWait = SteadyTime::min();

/// The non-template core shared by Queue, SimpleQueue, JoinableQueue and Connection: one
/// direction of message transport in a shared segment, moving bytes. The templates only
/// encode and decode. Every member is thread-safe and process-safe.
class MPROC_API Channel {
 public:
  /// Receives a message's bytes, valid only during the call. May throw; the message is
  /// consumed anyway.
  using Sink = void (*)(void* context, std::span<const std::byte> message);

  Channel() noexcept = default;

  /// A new channel in its own segment. Throws std::invalid_argument (buffer_bytes above
  /// 2^40), std::system_error.
  static Channel create(const QueueOptions& options, ChannelFlavor flavor);
  /// The two directions of a new Pipe, in one segment.
  static std::pair<Channel, Channel> create_pipe(std::size_t buffer_bytes);

  /// Copies one message into the ring. Waits until `deadline` (kForever: no limit;
  /// kNoWait: not at all) for the producer lock, below-maxsize and ring space. Returns
  /// false if it could not finish by then (nothing of the message is delivered).
  /// Throws Closed.
  bool put(std::span<const std::byte> message, SteadyTime deadline) const;
  /// put() of the message made of `parts`, one after the other.
  bool put(std::span<const std::span<const std::byte>> parts, SteadyTime deadline) const;
  /// Takes the next message and calls sink with it. Waits until `deadline` for the
  /// consumer lock and for a message to start; once inside a message, waits for the rest.
  /// Returns false on timeout. Throws Closed once closed and drained, and what sink throws.
  bool get(Sink sink, void* context, SteadyTime deadline) const;
  /// Waits until a message can be taken or the channel is closed (true), or the deadline
  /// passes (false).
  bool wait_message(SteadyTime deadline) const;

  std::size_t size() const noexcept;
  std::size_t maxsize() const noexcept;
  bool full() const noexcept;
  void close() const noexcept;
  bool closed() const noexcept;
  void task_done() const;
  bool join(SteadyTime deadline) const;

  /// Saves the handle, or loads one and checks that it names a channel of one of the
  /// given flavors where such a channel lies: at the start of its segment, or for a Pipe
  /// at the start of either direction (SharedStateError or SerializationError otherwise).
  template <class Archive>
  void serialize_as(Archive& ar, ChannelFlavor flavor, ChannelFlavor also = ChannelFlavor{}) {
    if constexpr (Archive::is_saving) {
      ref_.save(ar);
    } else {
      SharedRef ref;
      ref.load_inside(ar, header_bytes(), kControlAlignment);
      check_loaded(ref, flavor, also);
      ref_ = std::move(ref);
    }
  }
  /// Throws SharedStateError unless tx and rx are the two directions of one Pipe.
  static void check_pipe_ends(const Channel& tx, const Channel& rx);

  /// The same queue (or the same direction of the same pipe).
  friend bool operator==(const Channel& a, const Channel& b) noexcept {
    return a.ref_.segment == b.ref_.segment && a.ref_.offset == b.ref_.offset;
  }

 private:
  // The control block is cache-line aligned (its atomics each own a line).
  static constexpr std::uint64_t kControlAlignment = 64;
  static std::uint64_t header_bytes() noexcept;
  static void check_loaded(const SharedRef& ref, ChannelFlavor flavor, ChannelFlavor also);
  explicit Channel(SharedRef ref) noexcept : ref_(std::move(ref)) {}

  SharedRef ref_;
};

/// This thread's encoding buffer, or null while it is in use (a serialize() that itself
/// puts into a queue). release_scratch() frees it if a big message grew it.
MPROC_API std::vector<std::byte>* acquire_scratch() noexcept;
MPROC_API void release_scratch() noexcept;

/// The thread's scratch buffer for one put(), or a buffer of its own when that is busy.
class ScratchLease {
 public:
  ScratchLease() noexcept : bytes_(acquire_scratch()) {
    if (bytes_ == nullptr) bytes_ = &own_;
  }
  ~ScratchLease() {
    if (bytes_ != &own_) release_scratch();
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  std::vector<std::byte>& bytes() noexcept { return *bytes_; }

 private:
  std::vector<std::byte> own_;
  std::vector<std::byte>* bytes_;
};

/// True for the types whose encoding is their length as a u64 and then their elements'
/// memory (mproc/serialize.hpp, "Wire format"): strings, and vectors of elements that are
/// their own encoding. put() copies those (and values that are their own encoding,
/// is_bulk_v) straight into the ring, without encoding them into the scratch buffer
/// first: for a big vector that is one copy instead of two.
template <class T>
constexpr bool is_flat_message() {
  if constexpr (kind_v<T> == Kind::string) {
    return true;
  } else if constexpr (kind_v<T> == Kind::vector) {
    return is_bulk_v<typename StdTraits<T>::element>;
  } else {
    return false;
  }
}

template <class T>
bool put_value(const Channel& channel, const T& value, SteadyTime deadline) {
  if constexpr (is_bulk_v<T>) {
    // A number, or a plain struct or array of them: its memory is its encoding.
    return channel.put(std::as_bytes(std::span(&value, 1)), deadline);
  } else if constexpr (is_flat_message<T>()) {
    const auto length = static_cast<std::uint64_t>(value.size());
    std::array<std::byte, sizeof length> prefix;
    std::memcpy(prefix.data(), &length, sizeof length);
    const std::span<const std::byte> parts[2] = {
        prefix, std::as_bytes(std::span(value.data(), value.size()))};
    return channel.put(parts, deadline);
  } else {
    ScratchLease scratch;
    dump_into(scratch.bytes(), value);
    return channel.put(scratch.bytes(), deadline);
  }
}

template <class T>
std::optional<T> get_value(const Channel& channel, SteadyTime deadline) {
  std::optional<T> out;
  channel.get(
      [](void* context, std::span<const std::byte> bytes) {
        auto& slot = *static_cast<std::optional<T>*>(context);
        slot.emplace();
        if constexpr (is_bulk_v<T>) {
          if (bytes.size() == sizeof(T)) {
            std::memcpy(static_cast<void*>(&*slot), bytes.data(), sizeof(T));
            return;
          }
        }
        loads_into(bytes, *slot);  // also reports the wrong size of a bulk T
      },
      &out, deadline);
  return out;
}

template <class T>
constexpr void check_message_type() {
  static_assert(serializable<T>,
                "mproc queues carry serializable values: give T a serialize(Archive&) member "
                "or free function (see mproc/serialize.hpp)");
  static_assert(std::is_default_constructible_v<T> && !std::is_const_v<T>,
                "mproc queues decode into a new T: T must be a default-constructible, "
                "non-const value type");
}

}  // namespace detail

/// Python's multiprocessing.Queue: a FIFO of T values between processes and threads.
template <class T>
class Queue {
  static_assert((detail::check_message_type<T>(), true));

 public:
  /// A new queue holding at most `maxsize` messages (0: no count limit), with a 1 MiB
  /// ring. Throws std::system_error if the system refuses the shared memory.
  explicit Queue(std::size_t maxsize = 0) : Queue(QueueOptions{.maxsize = maxsize}) {}
  /// A new queue sized by `options`. Throws std::invalid_argument (buffer_bytes above
  /// 2^40), std::system_error.
  explicit Queue(QueueOptions options) : Queue(options, detail::ChannelFlavor::queue) {}

  /// Appends a copy of `v`. Blocks while the queue holds maxsize messages or the ring
  /// lacks room, and while other producers write. Thread-safe. Process-safe.
  /// Throws Closed after close(), SerializationError if v cannot be encoded.
  void put(const T& v) const { detail::put_value(ch_, v, detail::kForever); }
  /// put() that waits at most `timeout`; returns false (delivering nothing) if the
  /// message could not be written by then. Thread-safe. Process-safe. Throws as put().
  template <class Rep, class Period>
  bool put(const T& v, std::chrono::duration<Rep, Period> timeout) const {
    return detail::put_value(ch_, v, detail::deadline_after(timeout));
  }
  /// put() only if it can be done without waiting: false if the queue is full, another
  /// producer is writing, or the whole message does not fit in the ring's free space now
  /// (so a message larger than buffer_bytes never fits). Does not block. Thread-safe.
  /// Process-safe. Throws as put().
  [[nodiscard]] bool try_put(const T& v) const {
    return detail::put_value(ch_, v, detail::kNoWait);
  }

  /// Removes and returns the oldest message. Blocks until there is one. Thread-safe.
  /// Process-safe. Throws Closed once the queue is closed and empty; SerializationError
  /// if the message does not decode as a T (it is consumed anyway).
  T get() const { return std::move(*detail::get_value<T>(ch_, detail::kForever)); }
  /// get() that waits at most `timeout` for a message to start; nullopt if none did.
  /// Once a message larger than a frame has started, waits for all of it. Thread-safe.
  /// Process-safe. Throws as get().
  template <class Rep, class Period>
  std::optional<T> get(std::chrono::duration<Rep, Period> timeout) const {
    return detail::get_value<T>(ch_, detail::deadline_after(timeout));
  }
  /// get() without waiting for a message to start: nullopt if the queue is empty or
  /// another consumer is reading. A message larger than a frame that has started is
  /// waited for whole. Thread-safe. Process-safe. Throws as get().
  [[nodiscard]] std::optional<T> try_get() const {
    return detail::get_value<T>(ch_, detail::kNoWait);
  }

  /// Messages put and not yet taken (approximate while others put and get; Python's
  /// qsize()). Does not block. Thread-safe. Process-safe.
  std::size_t size() const noexcept { return ch_.size(); }
  /// size() == 0. Does not block. Thread-safe. Process-safe.
  bool empty() const noexcept { return ch_.size() == 0; }
  /// size() >= maxsize() with a maxsize; always false without one. Does not block.
  /// Thread-safe. Process-safe.
  bool full() const noexcept { return ch_.full(); }
  /// The maxsize the queue was created with (0: none). Thread-safe. Process-safe.
  std::size_t maxsize() const noexcept { return ch_.maxsize(); }

  /// Closes the queue for every process: put() throws Closed from now on, get() drains
  /// what is left and then throws Closed, and blocked calls wake up. A producer in the
  /// middle of a large message abandons it. Idempotent. Does not block. Thread-safe.
  /// Process-safe.
  void close() const noexcept { ch_.close(); }
  /// True once close() was called by any process. Thread-safe. Process-safe.
  bool closed() const noexcept { return ch_.closed(); }

  /// Ships the handle (the segment's address for another process, not the messages).
  /// Loading throws SharedStateError if the bytes do not name a reachable Queue.
  template <class Archive>
  void serialize(Archive& ar) {
    ch_.serialize_as(ar, detail::ChannelFlavor::queue, detail::ChannelFlavor::joinable_queue);
  }

  /// Whether two handles refer to the same queue.
  friend bool operator==(const Queue& a, const Queue& b) noexcept { return a.ch_ == b.ch_; }

 protected:
  // While a handle is being decoded (serialize.hpp's decode_depth), the object starts
  // empty: the decoder is about to replace it, and a new ring would be thrown away.
  Queue(QueueOptions options, detail::ChannelFlavor flavor)
      : ch_(detail::decoding() ? detail::Channel() : detail::Channel::create(options, flavor)) {}

  detail::Channel ch_;
};

/// Python's multiprocessing.SimpleQueue: an unbounded Queue with fewer methods.
template <class T>
class SimpleQueue {
  static_assert((detail::check_message_type<T>(), true));

 public:
  /// A new queue with a ring of `buffer_bytes` (rounded up to a power of two, at least
  /// 4096). Throws std::invalid_argument, std::system_error.
  explicit SimpleQueue(std::size_t buffer_bytes = std::size_t{1} << 20)
      : ch_(detail::decoding()
                ? detail::Channel()
                : detail::Channel::create(QueueOptions{.maxsize = 0, .buffer_bytes = buffer_bytes},
                                          detail::ChannelFlavor::simple_queue)) {}

  /// Appends a copy of `v`. Blocks only while the ring lacks room. Thread-safe.
  /// Process-safe. Throws Closed, SerializationError.
  void put(const T& v) const { detail::put_value(ch_, v, detail::kForever); }
  /// Removes and returns the oldest message; blocks until there is one. Thread-safe.
  /// Process-safe. Throws Closed once closed and empty, SerializationError.
  T get() const { return std::move(*detail::get_value<T>(ch_, detail::kForever)); }
  /// get() that waits at most `timeout` for a message to start. Thread-safe.
  /// Process-safe. Throws as get().
  template <class Rep, class Period>
  std::optional<T> get(std::chrono::duration<Rep, Period> timeout) const {
    return detail::get_value<T>(ch_, detail::deadline_after(timeout));
  }
  /// get() without waiting. Thread-safe. Process-safe. Throws as get().
  [[nodiscard]] std::optional<T> try_get() const {
    return detail::get_value<T>(ch_, detail::kNoWait);
  }
  /// True if no message is waiting. Does not block. Thread-safe. Process-safe.
  bool empty() const noexcept { return ch_.size() == 0; }
  /// As Queue::close(). Does not block. Thread-safe. Process-safe.
  void close() const noexcept { ch_.close(); }
  /// True once close() was called by any process. Thread-safe. Process-safe.
  bool closed() const noexcept { return ch_.closed(); }

  /// Ships the handle. Loading throws SharedStateError if the bytes do not name a
  /// reachable SimpleQueue.
  template <class Archive>
  void serialize(Archive& ar) {
    ch_.serialize_as(ar, detail::ChannelFlavor::simple_queue);
  }

 private:
  detail::Channel ch_;
};

/// Python's multiprocessing.JoinableQueue: a Queue that counts unfinished items. Each
/// put() adds one; task_done() removes one; join() waits until none is left.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  /// As Queue's constructors. Throws std::invalid_argument, std::system_error.
  explicit JoinableQueue(std::size_t maxsize = 0)
      : JoinableQueue(QueueOptions{.maxsize = maxsize}) {}
  explicit JoinableQueue(QueueOptions options)
      : Queue<T>(options, detail::ChannelFlavor::joinable_queue) {}

  /// Marks one item got from the queue as processed. Does not block. Thread-safe.
  /// Process-safe. Throws std::logic_error if called more times than items were put.
  void task_done() const { this->ch_.task_done(); }
  /// Blocks until every item put has been marked done. Thread-safe. Process-safe.
  void join() const { this->ch_.join(detail::kForever); }
  /// join() that waits at most `timeout`; returns whether every item is done.
  /// Thread-safe. Process-safe.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return this->ch_.join(detail::deadline_after(timeout));
  }

  /// Ships the handle. Loading throws SharedStateError if the bytes do not name a
  /// reachable JoinableQueue.
  template <class Archive>
  void serialize(Archive& ar) {
    this->ch_.serialize_as(ar, detail::ChannelFlavor::joinable_queue);
  }
};

/// One end of a Pipe: sends to the other end and receives from it. Copies of a
/// Connection share the end; any number of threads and processes may use it.
template <class T>
class Connection {
  static_assert((detail::check_message_type<T>(), true));

 public:
  /// An end that is not connected to anything until a loaded handle is assigned to it
  /// (it needs no shared memory). Every other call on it is undefined.
  Connection() noexcept = default;

  /// Sends a copy of `v` to the other end. Blocks while this direction's ring lacks room.
  /// Thread-safe. Process-safe. Throws Closed once either end was closed,
  /// SerializationError.
  void send(const T& v) const { detail::put_value(tx_, v, detail::kForever); }
  /// Receives the next message from the other end; blocks until there is one.
  /// Thread-safe. Process-safe. Throws Closed once either end is closed and every
  /// message sent before has been received; SerializationError.
  T recv() const { return std::move(*detail::get_value<T>(rx_, detail::kForever)); }
  /// recv() that waits at most `timeout` for a message to start; nullopt if none did.
  /// Thread-safe. Process-safe. Throws as recv().
  template <class Rep, class Period>
  std::optional<T> recv(std::chrono::duration<Rep, Period> timeout) const {
    return detail::get_value<T>(rx_, detail::deadline_after(timeout));
  }
  /// True if recv() would not wait for a message to start: one is ready, or the pipe is
  /// closed (recv() then returns what is left or throws Closed). Waits at most
  /// `timeout`. Thread-safe. Process-safe.
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) const {
    return rx_.wait_message(detail::deadline_after(timeout));
  }
  /// poll() without waiting. Thread-safe. Process-safe.
  bool poll() const { return rx_.wait_message(detail::kNoWait); }

  /// Closes both directions, for both ends: sends throw Closed and receives drain what
  /// was sent and then throw Closed. Idempotent. Does not block. Thread-safe.
  /// Process-safe.
  void close() const noexcept {
    tx_.close();
    rx_.close();
  }
  /// True once either end was closed. Thread-safe. Process-safe.
  bool closed() const noexcept { return tx_.closed() || rx_.closed(); }

  /// Ships the handle. Loading throws SharedStateError if the bytes do not name a
  /// reachable Pipe end (both directions of one Pipe), SerializationError if they are
  /// malformed.
  template <class Archive>
  void serialize(Archive& ar) {
    tx_.serialize_as(ar, detail::ChannelFlavor::pipe);
    rx_.serialize_as(ar, detail::ChannelFlavor::pipe);
    if constexpr (Archive::is_loading) detail::Channel::check_pipe_ends(tx_, rx_);
  }

 private:
  friend std::pair<Connection<T>, Connection<T>> Pipe<T>(std::size_t buffer_bytes);
  Connection(detail::Channel tx, detail::Channel rx) noexcept
      : tx_(std::move(tx)), rx_(std::move(rx)) {}

  detail::Channel tx_;
  detail::Channel rx_;
};

/// Python's Pipe(duplex=True): two connected ends; a.send(x) is b.recv()'s and b.send(y)
/// is a.recv()'s. `buffer_bytes` is each direction's ring (see QueueOptions).
/// `auto [a, b] = mproc::Pipe<int>();`. Throws std::invalid_argument, std::system_error.
template <class T>
std::pair<Connection<T>, Connection<T>> Pipe(std::size_t buffer_bytes) {
  auto [ab, ba] = detail::Channel::create_pipe(buffer_bytes);
  return {Connection<T>(ab, ba), Connection<T>(ba, ab)};
}

}  // namespace mproc
