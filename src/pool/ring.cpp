#include "pool/ring.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "os/futex.hpp"

namespace mproc::detail {

namespace {

constexpr std::uint64_t kMagic = 0x6e6952636f72706dULL;  // "mprocRin"
// A reader keeps its buffer between messages (the caller's old `out`), unless it is
// bigger than this: one 1 GiB message must not pin 1 GiB for the life of the ring.
constexpr std::size_t kKeepBuffer = std::size_t{1} << 20;

using Span = std::span<const std::byte>;

// A message this big is received into transparent huge pages where the system allows
// them on request (/sys/kernel/mm/transparent_hugepage/enabled = madvise): faulting in
// 4 KiB pages one by one dominates the cost of receiving a huge message (a 1 GiB
// result is 262144 faults; under a hypervisor ~1.5 s of the ~2 s it takes).
constexpr std::uint64_t kHugeMessage = std::uint64_t{8} << 20;

void advise_huge_pages(void* p, std::size_t n) noexcept {
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + n) & ~(kHuge - 1);
  // Only a hint: where THP is off (or on arm64 with other page sizes) it changes nothing.
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

std::array<std::byte, 8> encode_length(std::uint64_t n) noexcept {
  std::array<std::byte, 8> b{};
  for (std::size_t i = 0; i < 8; ++i) b[i] = static_cast<std::byte>(n >> (8 * i));
  return b;
}

std::uint64_t decode_length(const std::array<std::byte, 8>& b) noexcept {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 8; ++i) n |= std::to_integer<std::uint64_t>(b[i]) << (8 * i);
  return n;
}

std::uint64_t total_size(std::span<const Span> parts) noexcept {
  std::uint64_t n = 0;
  for (const Span& p : parts) n += p.size();
  return n;
}

timespec to_timespec(std::chrono::nanoseconds d) noexcept {
  if (d.count() < 0) d = std::chrono::nanoseconds(0);
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d);
  return timespec{static_cast<time_t>(s.count()), static_cast<long>((d - s).count())};
}

// The waiter's half of the handshake described in ring.hpp ("Wake-ups"): spin, then
// declare the sleep in `flag`, fence, re-check, sleep on the flag. `ready` must read the
// peer's index afresh when its cache says "not ready".
template <class Ready>
WaitStatus wait_on(std::atomic<std::uint32_t>& flag, Ready&& ready, const WaitOptions& wait) {
  if (ready()) return WaitStatus::ready;
  if (wait.spin.count() > 0) {
    // Spinning pays when the peer answers within a few µs (a round trip on another
    // core); a futex sleep and wake costs more than that. Read the clock only every 16
    // rounds: PAUSE alone is 10-140 cycles depending on the core.
    const Deadline spin_end = Clock::now() + wait.spin;
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (ready()) return WaitStatus::ready;
      if (i % 16 == 0 && Clock::now() >= spin_end) break;
    }
  }
  for (;;) {
    flag.store(1, std::memory_order_relaxed);             // (a)
    std::atomic_thread_fence(std::memory_order_seq_cst);  // (F1): orders (a) before (b)
    if (ready()) {                                        // (b)
      flag.store(0, std::memory_order_relaxed);
      return WaitStatus::ready;
    }
    if (wait.abort != nullptr && (*wait.abort)()) {
      flag.store(0, std::memory_order_relaxed);
      return WaitStatus::aborted;
    }
    std::optional<std::chrono::nanoseconds> slice;
    if (wait.deadline != kNoDeadline) {
      const Deadline now = Clock::now();
      if (now >= wait.deadline) {
        flag.store(0, std::memory_order_relaxed);
        return WaitStatus::timed_out;
      }
      slice = std::chrono::duration_cast<std::chrono::nanoseconds>(wait.deadline - now);
    }
    if (wait.abort != nullptr && (!slice || *slice > wait.abort_interval)) {
      slice = wait.abort_interval;
    }
    // Returns at once if a waker already cleared the flag after (a).
    futex_wait(&flag, 1, slice);
  }
}

}  // namespace

RingError::~RingError() = default;
RingClosed::~RingClosed() = default;

WaitOptions within(std::chrono::nanoseconds timeout, const std::function<bool()>* abort) {
  WaitOptions w;
  w.abort = abort;
  const Deadline now = Clock::now();
  if (timeout.count() <= 0) {
    w.deadline = now;
  } else if (timeout >= kNoDeadline - now) {
    w.deadline = kNoDeadline;
  } else {
    w.deadline = now + std::chrono::duration_cast<Clock::duration>(timeout);
  }
  return w;
}

// ---- Doorbell ------------------------------------------------------------------------

UniqueFd Doorbell::make_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw_system_error(errno, "eventfd for ring doorbell");
  return fd;
}

namespace {
std::atomic<bool> g_doorbell_lost{false};
}  // namespace

Doorbell::Doorbell(int efd) : eventfd(efd) {
  struct stat st {};
  if (::fstat(efd, &st) != 0) throw_system_error(errno, "fstat of ring doorbell");
  device = st.st_dev;
  inode = st.st_ino;
}

bool Doorbell::intact() const noexcept {
  struct stat st {};
  return ::fstat(eventfd, &st) == 0 && st.st_dev == device && st.st_ino == inode;
}

bool Doorbell::lost() noexcept { return g_doorbell_lost.load(std::memory_order_relaxed); }

void Doorbell::arm() noexcept {
  sleeping.store(1, std::memory_order_relaxed);
  // (F1) of the handshake: the loop's re-check of its rings must not be satisfied
  // before this store is visible to the producers (see ring.hpp, "Wake-ups").
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool Doorbell::wait(std::optional<std::chrono::nanoseconds> timeout) {
  const Deadline deadline = timeout ? within(*timeout).deadline : kNoDeadline;
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline != kNoDeadline) {
      ts = to_timespec(
          std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now()));
      tsp = &ts;
    }
    pollfd p{eventfd, POLLIN, 0};
    const int r = ::ppoll(&p, 1, tsp, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_system_error(errno, "ppoll on ring doorbell");
    }
    if (r > 0) drain();
    disarm();
    return r > 0;
  }
}

void Doorbell::drain() noexcept {
  // A read returns the whole counter and resets it; EAGAIN means it was already 0.
  std::uint64_t value = 0;
  (void)retry_eintr([&] { return ::read(eventfd, &value, sizeof value); });
}

void Doorbell::ring() noexcept {
  if (sleeping.load(std::memory_order_relaxed) != 0 &&
      sleeping.exchange(0, std::memory_order_relaxed) != 0) {
    // Writing to a number the process's own code closed or reused would lose the
    // wake-up, or put 8 bytes into someone else's file. Leave the loop armed instead: the
    // next peer (or the loop's own bounded sleep) wakes it.
    if (!intact()) {
      g_doorbell_lost.store(true, std::memory_order_relaxed);
      sleeping.store(1, std::memory_order_relaxed);
      return;
    }
    // Fails only with EAGAIN when the counter would overflow, and then it is readable.
    const std::uint64_t one = 1;
    (void)retry_eintr([&] { return ::write(eventfd, &one, sizeof one); });
  }
}

// ---- MessageReader -------------------------------------------------------------------

void MessageReader::reset() noexcept {
  have_prefix_ = 0;
  length_ = 0;
  got_ = 0;
  buf_.clear();
  if (buf_.capacity() > kKeepBuffer) std::vector<std::byte>().swap(buf_);
}

bool MessageReader::poll(SpscRing& ring, std::vector<std::byte>& out) {
  for (;;) {
    std::size_t avail = ring.readable_cached();
    if (avail == 0) {
      if (!ring.closed()) return false;
      // The producer publishes its last bytes before it closes: having seen `closed`
      // (acquire), a fresh look at head sees them.
      avail = ring.readable_cached();
      if (avail == 0) {
        if (!in_message()) throw RingClosed("ring closed");
        throw RingClosed("ring closed in the middle of a message (" + std::to_string(got_) +
                         " of " + (have_prefix_ == 8 ? std::to_string(length_) : "?") +
                         " bytes received)");
      }
    }
    const std::uint64_t tail = ring.ctl_->tail.load(std::memory_order_relaxed);
    std::size_t used = 0;
    if (have_prefix_ < 8) {
      const std::size_t n = std::min(8 - have_prefix_, avail);
      ring.copy_out(tail, prefix_.data() + have_prefix_, n);
      have_prefix_ += n;
      used += n;
      if (have_prefix_ == 8) {
        length_ = decode_length(prefix_);
        if (length_ > max_message_) {
          throw RingError("ring message of " + std::to_string(length_) +
                          " bytes exceeds the limit of " + std::to_string(max_message_) +
                          ": corrupt stream");
        }
        got_ = 0;
        buf_.clear();
        buf_.reserve(static_cast<std::size_t>(length_));
        if (length_ >= kHugeMessage) advise_huge_pages(buf_.data(), buf_.capacity());
      }
    }
    if (have_prefix_ == 8 && got_ < length_ && used < avail) {
      const auto n = static_cast<std::size_t>(
          std::min<std::uint64_t>({length_ - got_, avail - used, ring.publish_chunk()}));
      // resize() zero-fills n bytes that the copy overwrites at once, while they are in
      // cache; reserve() above means no reallocation, and no zeroing of the whole
      // message ahead of its bytes.
      buf_.resize(static_cast<std::size_t>(got_) + n);
      ring.copy_out(tail + used, buf_.data() + got_, n);
      got_ += n;
      used += n;
    }
    ring.release(tail + used);
    if (have_prefix_ == 8 && got_ == length_) {
      out.swap(buf_);
      reset();
      return true;
    }
  }
}

// ---- MessageWriter -------------------------------------------------------------------

void MessageWriter::begin(std::uint64_t length) {
  prefix_ = encode_length(length);
  part_ = 0;
  offset_ = 0;
  busy_ = true;
}

void MessageWriter::start(std::vector<std::byte>&& msg) {
  if (busy_) throw std::logic_error("MessageWriter::start while a message is in progress");
  owned_ = std::move(msg);
  parts_.assign({Span(prefix_), Span(owned_)});
  begin(owned_.size());
}

void MessageWriter::start_borrowed(std::span<const std::byte> msg) {
  if (busy_) throw std::logic_error("MessageWriter::start while a message is in progress");
  parts_.assign({Span(prefix_), msg});
  begin(msg.size());
}

void MessageWriter::start_borrowed(std::span<const std::span<const std::byte>> parts) {
  if (busy_) throw std::logic_error("MessageWriter::start while a message is in progress");
  parts_.clear();
  parts_.push_back(Span(prefix_));
  parts_.insert(parts_.end(), parts.begin(), parts.end());
  begin(total_size(parts));
}

bool MessageWriter::poll(SpscRing& ring) {
  if (!busy_) return true;
  parts_[0] = Span(prefix_);  // in case *this was moved since start()
  if (!ring.write_parts(parts_, part_, offset_)) return false;
  reset();
  return true;
}

std::uint64_t MessageWriter::remaining() const noexcept {
  if (!busy_) return 0;
  return total_size(std::span(parts_).subspan(part_)) - offset_;
}

void MessageWriter::reset() noexcept {
  busy_ = false;
  owned_ = std::vector<std::byte>();
  parts_.clear();
  part_ = 0;
  offset_ = 0;
}

// ---- SpscRing ------------------------------------------------------------------------

std::size_t SpscRing::bytes_needed(std::size_t capacity) {
  if (capacity < kMinCapacity || !std::has_single_bit(capacity)) {
    throw std::invalid_argument("ring capacity " + std::to_string(capacity) +
                                " is not a power of two >= " + std::to_string(kMinCapacity));
  }
  return sizeof(Control) + capacity;
}

SpscRing::SpscRing(void* mem, std::size_t capacity, RingDoorbells doorbells)
    : capacity_(capacity), mask_(capacity - 1), bells_(doorbells) {
  (void)bytes_needed(capacity);
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % alignof(Control) != 0) {
    throw std::invalid_argument("ring memory must be non-null and 64-byte aligned");
  }
  ctl_ = static_cast<Control*>(mem);
  data_ = static_cast<std::byte*>(mem) + sizeof(Control);
}

void SpscRing::init() noexcept {
  // Value-initialisation zeroes the atomics: head = tail = 0, open, nobody asleep.
  ctl_ = ::new (static_cast<void*>(ctl_)) Control{};
  ctl_->capacity = capacity_;
  ctl_->magic = kMagic;
  reset_view();
}

void SpscRing::reset_view() noexcept {
  tail_cache_ = ctl_->tail.load(std::memory_order_acquire);
  head_cache_ = ctl_->head.load(std::memory_order_acquire);
  rx_.reset();
}

bool SpscRing::closed() const noexcept { return ctl_->closed.load(std::memory_order_acquire) != 0; }

void SpscRing::throw_if_closed() const {
  if (closed()) throw RingClosed("send on a closed ring");
}

void SpscRing::close() noexcept {
  ctl_->closed.store(1, std::memory_order_release);
  // Pairs with (F1) in each waiter: either the waiter's re-check sees `closed`, or we
  // see its sleep flag and wake it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_if_sleeping(ctl_->reader_sleeping);
  wake_if_sleeping(ctl_->writer_sleeping);
  if (bells_.data != nullptr) bells_.data->ring();
  if (bells_.space != nullptr) bells_.space->ring();
}

void SpscRing::copy_in(std::uint64_t pos, const std::byte* src, std::size_t n) noexcept {
  if (n == 0) return;
  const auto off = static_cast<std::size_t>(pos & mask_);
  const std::size_t first = std::min(n, capacity_ - off);
  std::memcpy(data_ + off, src, first);
  if (n > first) std::memcpy(data_, src + first, n - first);
}

void SpscRing::copy_out(std::uint64_t pos, std::byte* dst, std::size_t n) const noexcept {
  if (n == 0) return;
  const auto off = static_cast<std::size_t>(pos & mask_);
  const std::size_t first = std::min(n, capacity_ - off);
  std::memcpy(dst, data_ + off, first);
  if (n > first) std::memcpy(dst + first, data_, n - first);
}

void SpscRing::publish(std::uint64_t new_head) noexcept {
  // Release: the bytes copied in happen-before the consumer's acquire load of head.
  ctl_->head.store(new_head, std::memory_order_release);  // (c)
  wake_reader();
}

void SpscRing::release(std::uint64_t new_tail) noexcept {
  // Release: our reads of the freed bytes happen-before the producer, having loaded
  // this tail with acquire, overwrites them.
  ctl_->tail.store(new_tail, std::memory_order_release);
  wake_writer();
}

void SpscRing::wake_reader() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // (F2): orders (c) before (d)
  wake_if_sleeping(ctl_->reader_sleeping);              // (d)
  if (bells_.data != nullptr) bells_.data->ring();
}

void SpscRing::wake_writer() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // (F2) of the space handshake
  wake_if_sleeping(ctl_->writer_sleeping);
  if (bells_.space != nullptr) bells_.space->ring();
}

std::size_t SpscRing::writable_cached() noexcept {
  const std::uint64_t head = ctl_->head.load(std::memory_order_relaxed);
  if (head - tail_cache_ >= capacity_) {
    // Acquire: pairs with the consumer's release store of tail (see release()).
    tail_cache_ = ctl_->tail.load(std::memory_order_acquire);
  }
  return capacity_ - static_cast<std::size_t>(head - tail_cache_);
}

std::size_t SpscRing::readable_cached() noexcept {
  const std::uint64_t tail = ctl_->tail.load(std::memory_order_relaxed);
  if (head_cache_ <= tail) {
    // Acquire: pairs with the producer's release store of head (see publish()).
    head_cache_ = ctl_->head.load(std::memory_order_acquire);
  }
  return static_cast<std::size_t>(head_cache_ - tail);
}

std::size_t SpscRing::writable() noexcept {
  tail_cache_ = ctl_->tail.load(std::memory_order_acquire);
  return capacity_ -
         static_cast<std::size_t>(ctl_->head.load(std::memory_order_relaxed) - tail_cache_);
}

std::size_t SpscRing::readable() noexcept {
  head_cache_ = ctl_->head.load(std::memory_order_acquire);
  return static_cast<std::size_t>(head_cache_ - ctl_->tail.load(std::memory_order_relaxed));
}

bool SpscRing::write_parts(std::span<const Span> parts, std::size_t& part, std::size_t& offset) {
  throw_if_closed();
  const std::uint64_t want = total_size(parts.subspan(part)) - offset;
  const std::uint64_t head = ctl_->head.load(std::memory_order_relaxed);
  std::uint64_t used = head - tail_cache_;
  if (used >= capacity_ || capacity_ - used < want) {
    tail_cache_ = ctl_->tail.load(std::memory_order_acquire);
    used = head - tail_cache_;
  }
  auto space = static_cast<std::size_t>(capacity_ - used);
  std::uint64_t pos = head;
  std::uint64_t published = head;
  while (part < parts.size()) {
    const Span p = parts[part];
    const std::size_t n = std::min({p.size() - offset, space, publish_chunk()});
    copy_in(pos, p.data() + offset, n);
    pos += n;
    space -= n;
    offset += n;
    if (pos - published >= publish_chunk()) {
      publish(pos);
      published = pos;
    }
    if (offset < p.size()) {
      if (space == 0) break;
      continue;
    }
    ++part;
    offset = 0;
  }
  // A small message is one release store (and one fence) however many parts it has.
  if (pos != published) publish(pos);
  return part == parts.size();
}

WaitStatus SpscRing::write_parts_blocking(std::span<const Span> parts, std::size_t& part,
                                          std::size_t& offset, const WaitOptions& wait) {
  for (;;) {
    if (write_parts(parts, part, offset)) return WaitStatus::ready;
    const WaitStatus st = wait_writable(wait);
    if (st != WaitStatus::ready) return st;
  }
}

bool SpscRing::try_send_relaxed(std::span<const Span> parts) {
  throw_if_closed();
  const std::uint64_t length = total_size(parts);
  const std::uint64_t head = ctl_->head.load(std::memory_order_relaxed);
  if (capacity_ - (head - tail_cache_) < length + 8) {
    tail_cache_ = ctl_->tail.load(std::memory_order_acquire);
    if (capacity_ - (head - tail_cache_) < length + 8) return false;
  }
  std::byte prefix[8];
  std::memcpy(prefix, &length, 8);
  copy_in(head, prefix, 8);
  std::uint64_t pos = head + 8;
  for (const Span p : parts) {
    copy_in(pos, p.data(), p.size());
    pos += p.size();
  }
  // Release: as in publish(), the bytes happen-before the reader's acquire of head.
  ctl_->head.store(pos, std::memory_order_release);
  // The relaxed half of the handshake: no fence, so this load may miss a reader that is
  // arming right now (see the header); a reader already asleep is seen and woken.
  if (ctl_->reader_sleeping.load(std::memory_order_relaxed) != 0 ||
      (bells_.data != nullptr && bells_.data->sleeping.load(std::memory_order_relaxed) != 0))
    wake_reader();
  return true;
}

std::size_t SpscRing::write_some(std::span<const std::byte> src) {
  const std::array<Span, 1> one{src};
  std::size_t part = 0;
  std::size_t offset = 0;
  write_parts(one, part, offset);
  return part == 1 ? src.size() : offset;
}

std::size_t SpscRing::read_some(std::span<std::byte> dst) {
  const std::uint64_t tail = ctl_->tail.load(std::memory_order_relaxed);
  const std::size_t n = std::min(readable_cached(), dst.size());
  if (n == 0) return 0;
  copy_out(tail, dst.data(), n);
  release(tail + n);
  return n;
}

bool SpscRing::send_framed(std::span<const Span> framed, const WaitOptions& wait) {
  std::size_t part = 0;
  std::size_t offset = 0;
  if (write_parts_blocking(framed, part, offset, wait) == WaitStatus::ready) return true;
  // Gave up. Bytes of this message already in the ring cannot be taken back, and the
  // reader would take whatever comes next for the rest of it: end the stream.
  if (part != 0 || offset != 0) close();
  return false;
}

bool SpscRing::send(std::span<const std::byte> msg, const WaitOptions& wait) {
  const std::array<std::byte, 8> prefix = encode_length(msg.size());
  const std::array<Span, 2> framed{Span(prefix), msg};
  return send_framed(framed, wait);
}

bool SpscRing::send(std::span<const Span> parts, const WaitOptions& wait) {
  const std::array<std::byte, 8> prefix = encode_length(total_size(parts));
  constexpr std::size_t kInline = 8;
  if (parts.size() < kInline) {
    std::array<Span, kInline> framed{};
    framed[0] = Span(prefix);
    std::copy(parts.begin(), parts.end(), framed.begin() + 1);
    return send_framed(std::span(framed).first(parts.size() + 1), wait);
  }
  std::vector<Span> framed;
  framed.reserve(parts.size() + 1);
  framed.push_back(Span(prefix));
  framed.insert(framed.end(), parts.begin(), parts.end());
  return send_framed(framed, wait);
}

bool SpscRing::send_stream(std::uint64_t length,
                           const std::function<std::span<const std::byte>()>& next,
                           const WaitOptions& wait) {
  const std::array<std::byte, 8> prefix = encode_length(length);
  const std::array<Span, 1> head{Span(prefix)};
  if (!send_framed(head, wait)) return false;
  std::uint64_t left = length;
  while (left > 0) {
    const Span piece = next();
    if (piece.empty() || piece.size() > left) {
      close();
      throw std::logic_error("SpscRing::send_stream: the pieces do not add up to the length");
    }
    const std::array<Span, 1> one{piece};
    std::size_t part = 0;
    std::size_t offset = 0;
    if (write_parts_blocking(one, part, offset, wait) != WaitStatus::ready) {
      close();  // mid-message: see send_framed
      return false;
    }
    left -= piece.size();
  }
  return true;
}

WaitStatus SpscRing::wait_writable(const WaitOptions& wait) {
  return wait_on(
      ctl_->writer_sleeping, [this] { return writable_cached() > 0 || closed(); }, wait);
}

WaitStatus SpscRing::wait_readable(const WaitOptions& wait) {
  return wait_on(
      ctl_->reader_sleeping, [this] { return readable_cached() > 0 || closed(); }, wait);
}

bool SpscRing::recv(std::vector<std::byte>& out, const WaitOptions& wait) {
  for (;;) {
    if (rx_.poll(*this, out)) return true;
    if (wait_readable(wait) != WaitStatus::ready) return false;
  }
}

bool SpscRing::try_recv(std::vector<std::byte>& out) { return rx_.poll(*this, out); }

}  // namespace mproc::detail
