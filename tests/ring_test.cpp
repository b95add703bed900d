// Tests of the shared-memory transport (src/os/shm, src/os/futex, src/pool/ring) between real
// processes: fork() a peer, move bytes, check every byte, kill peers.
//
// Under TSan only the *Threads* tests mean anything (TSan does not see the other process
// of a fork), so the sanitizer job runs this binary with --gtest_filter='*Thread*'.
#include "pool/ring.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "os/futex.hpp"
#include "os/shm.hpp"

namespace {

using namespace mproc::detail;
using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;
using Span = std::span<const std::byte>;

// ---- helpers ---------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Byte k of the pattern `seed` is byte k % 8 of splitmix64(seed ^ (k / 8)): any slice of
// a (huge) message can be generated or checked on its own.
void fill_pattern(std::byte* dst, std::size_t n, std::uint64_t seed, std::uint64_t offset = 0) {
  std::size_t i = 0;
  while (i < n && (offset + i) % 8 != 0) {
    const std::uint64_t k = offset + i;
    dst[i++] = static_cast<std::byte>(splitmix64(seed ^ (k / 8)) >> (8 * (k % 8)));
  }
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t w = splitmix64(seed ^ ((offset + i) / 8));
    std::memcpy(dst + i, &w, 8);  // little-endian: byte j of w is byte k%8 == j
  }
  for (; i < n; ++i) {
    const std::uint64_t k = offset + i;
    dst[i] = static_cast<std::byte>(splitmix64(seed ^ (k / 8)) >> (8 * (k % 8)));
  }
}

Bytes pattern(std::size_t n, std::uint64_t seed) {
  Bytes b(n);
  fill_pattern(b.data(), n, seed);
  return b;
}

Span as_span(const std::uint64_t& v) { return std::as_bytes(std::span(&v, 1)); }

std::uint64_t load_u64(const Bytes& b, std::size_t at = 0) {
  std::uint64_t v = 0;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}

// Runs body() in a forked child that dies with the test process and never returns into
// GoogleTest: its return value (or 100+ on an exception) is the exit code.
pid_t fork_child(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::system_category(), "fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(99);
    int rc = 100;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: exception: %s\n", ::getpid(), e.what());
      rc = 101;
    } catch (...) {
      rc = 102;
    }
    std::fflush(stderr);
    ::_exit(rc);
  }
  return pid;
}

// The child's exit code, or minus the signal that killed it.
int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1000;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// True once the child has exited (without reaping it: wait_child still works). For the
// abort predicate of a parent that waits on a child, so a crashed child fails the test
// instead of hanging it.
std::function<bool()> child_exited(pid_t pid) {
  auto fd = std::make_shared<UniqueFd>(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  return [fd] {
    pollfd p{fd->get(), POLLIN, 0};
    return !*fd || ::poll(&p, 1, 0) != 0;
  };
}

std::function<bool()> parent_died() {
  const pid_t parent = ::getpid();  // evaluated in the parent, before fork
  return [parent] { return ::getppid() != parent; };
}

// A mapping holding `count` rings of one capacity, then a Doorbell.
struct RingSet {
  SharedMapping map;
  std::size_t capacity;
  std::size_t stride;
  std::size_t count;
  UniqueFd efd;

  RingSet(std::size_t n, std::size_t cap)
      : capacity(cap), stride(SpscRing::bytes_needed(cap)), count(n) {
    map = SharedMapping(stride * n + sizeof(Doorbell), "ring_test", SharedMapping::FdPolicy::close);
    for (std::size_t i = 0; i < n; ++i) view(i).init();
    efd = Doorbell::make_eventfd();
    ::new (map.bytes() + stride * n) Doorbell(efd.get());
  }
  void* mem(std::size_t i) const { return map.bytes() + stride * i; }
  SpscRing view(std::size_t i, RingDoorbells bells = {}) const {
    return SpscRing(mem(i), capacity, bells);
  }
  Doorbell& doorbell() const { return *reinterpret_cast<Doorbell*>(map.bytes() + stride * count); }
};

// ---- SharedMapping and futex ----------------------------------------------------------

TEST(SharedMapping, SizeFdAndMove) {
  SharedMapping m(100, "test", SharedMapping::FdPolicy::keep);
  ASSERT_TRUE(m);
  EXPECT_EQ(m.size(), static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
  ASSERT_GE(m.fd(), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(m.fd(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), m.size());
  EXPECT_EQ(::fcntl(m.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  char link[256] = {};
  const std::string path = "/proc/self/fd/" + std::to_string(m.fd());
  ASSERT_GT(::readlink(path.c_str(), link, sizeof link - 1), 0);
  EXPECT_EQ(std::string(link).rfind("/memfd:mproc:test", 0), 0u) << link;
  for (std::size_t i = 0; i < m.size(); ++i) ASSERT_EQ(m.bytes()[i], std::byte{0});

  const int fd = m.fd();
  SharedMapping moved(std::move(m));
  EXPECT_FALSE(m);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(moved.fd(), fd);
  moved.close_fd();
  EXPECT_EQ(moved.fd(), -1);
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // really closed
  moved.bytes()[0] = std::byte{42};     // mapping outlives the fd
  EXPECT_EQ(moved.bytes()[0], std::byte{42});

  SharedMapping closed(1, "test", SharedMapping::FdPolicy::close);
  EXPECT_EQ(closed.fd(), -1);
  EXPECT_THROW(SharedMapping(0, "test"), std::invalid_argument);
}

TEST(SharedMapping, SharedWithForkedChild) {
  SharedMapping m(1 << 16, "test", SharedMapping::FdPolicy::close);
  auto* words = reinterpret_cast<std::uint64_t*>(m.data());
  const pid_t pid = fork_child([&] {
    for (std::uint64_t i = 0; i < 8192; ++i) words[i] = i * 7;
    return 0;
  });
  ASSERT_EQ(wait_child(pid), 0);
  for (std::uint64_t i = 0; i < 8192; ++i) ASSERT_EQ(words[i], i * 7);
}

TEST(Futex, TimeoutAndMismatch) {
  SharedMapping m(64, "test");
  auto* word = ::new (m.data()) std::atomic<std::uint32_t>(0);
  auto t0 = Clock::now();
  EXPECT_TRUE(futex_wait(word, 0, 50ms));
  EXPECT_GE(Clock::now() - t0, 50ms);
  t0 = Clock::now();
  EXPECT_FALSE(futex_wait(word, 1, 5s));  // value differs: EAGAIN at once
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_TRUE(futex_wait(word, 0, 0ns));
  EXPECT_EQ(futex_wake(word, 1), 0);
}

// Raw futex ping-pong between two processes, every turn through FUTEX_WAIT/FUTEX_WAKE
// on a word in MAP_SHARED memory. With the _PRIVATE ops this would hang (and time out).
TEST(Futex, PingPongBetweenProcesses) {
  SharedMapping m(64, "test", SharedMapping::FdPolicy::close);
  auto* word = ::new (m.data()) std::atomic<std::uint32_t>(0);
  constexpr std::uint32_t kRounds = 20000;
  auto await = [word](std::uint32_t want) {
    const auto give_up = Clock::now() + 20s;
    for (std::uint32_t v; (v = word->load(std::memory_order_acquire)) != want;) {
      if (Clock::now() > give_up) return false;
      futex_wait(word, v, 1s);
    }
    return true;
  };
  const pid_t pid = fork_child([&] {
    for (std::uint32_t i = 0; i < kRounds; ++i) {
      if (!await(2 * i + 1)) return 2;
      word->store(2 * i + 2, std::memory_order_release);
      futex_wake(word, 1);
    }
    return 0;
  });
  const auto t0 = Clock::now();
  for (std::uint32_t i = 0; i < kRounds; ++i) {
    word->store(2 * i + 1, std::memory_order_release);
    futex_wake(word, 1);
    ASSERT_TRUE(await(2 * i + 2)) << "round " << i;
  }
  const auto dt = Clock::now() - t0;
  EXPECT_EQ(word->load(), 2 * kRounds);
  EXPECT_EQ(wait_child(pid), 0);
  std::printf("  raw futex round trip (no spin): %.2f us\n",
              std::chrono::duration<double, std::micro>(dt).count() / kRounds);
}

// ---- byte level, one process -----------------------------------------------------------

TEST(SpscRing, BytesNeededAndValidation) {
  EXPECT_THROW(SpscRing::bytes_needed(100), std::invalid_argument);
  EXPECT_THROW(SpscRing::bytes_needed(32), std::invalid_argument);
  EXPECT_EQ(SpscRing::bytes_needed(64) % 64, 0u);
  EXPECT_EQ(SpscRing::bytes_needed(1 << 20) - SpscRing::bytes_needed(64), (1u << 20) - 64);
  SharedMapping m(4096, "test");
  EXPECT_THROW(SpscRing(m.bytes() + 8, 64), std::invalid_argument);
  EXPECT_THROW(SpscRing(m.data(), 96), std::invalid_argument);
}

TEST(SpscRing, WrapAroundAtEveryOffset) {
  constexpr std::size_t kCap = 64;
  RingSet set(1, kCap);
  SpscRing ring = set.view(0);
  Bytes junk(kCap), out(2 * kCap);
  for (std::size_t start = 0; start < kCap; ++start) {
    for (std::size_t n = 0; n <= kCap; ++n) {
      ring.init();
      // Move head and tail to `start`.
      ASSERT_EQ(ring.write_some(std::span(junk).first(start)), start);
      ASSERT_EQ(ring.read_some(out), start);
      ASSERT_EQ(ring.readable(), 0u);
      ASSERT_EQ(ring.writable(), kCap);

      const Bytes src = pattern(n, start * 1000 + n);
      ASSERT_EQ(ring.write_some(src), n) << "start " << start << " n " << n;
      ASSERT_EQ(ring.readable(), n);
      ASSERT_EQ(ring.writable(), kCap - n);
      // Read back in two uneven pieces.
      const std::size_t k = n / 3;
      std::fill(out.begin(), out.end(), std::byte{0xee});
      ASSERT_EQ(ring.read_some(std::span(out).first(k)), k);
      ASSERT_EQ(ring.read_some(std::span(out).subspan(k)), n - k);
      ASSERT_TRUE(std::equal(src.begin(), src.end(), out.begin()))
          << "start " << start << " n " << n;
      ASSERT_EQ(ring.readable(), 0u);
    }
  }
  // Full ring: a write takes what fits, then nothing.
  ring.init();
  const Bytes big = pattern(3 * kCap, 7);
  EXPECT_EQ(ring.write_some(big), kCap);
  EXPECT_EQ(ring.write_some(big), 0u);
  EXPECT_EQ(ring.writable(), 0u);
  EXPECT_EQ(ring.read_some(out), kCap);
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + kCap, big.begin()));
  EXPECT_EQ(ring.read_some(out), 0u);
}

// MessageReader keeps a partly read length prefix and a partly read payload between
// polls; MessageWriter streams messages bigger than the ring, one poll at a time.
TEST(SpscRing, ReaderWriterStateMachinesInOneProcess) {
  constexpr std::size_t kCap = 64;
  RingSet set(1, kCap);
  SpscRing ring = set.view(0);

  // One byte at a time.
  const Bytes msg = pattern(20, 1);
  std::array<std::byte, 8> prefix{};
  const std::uint64_t len = msg.size();
  std::memcpy(prefix.data(), &len, 8);
  Bytes wire(prefix.begin(), prefix.end());
  wire.insert(wire.end(), msg.begin(), msg.end());
  MessageReader reader;
  Bytes out;
  for (std::size_t i = 0; i < wire.size(); ++i) {
    EXPECT_FALSE(reader.poll(ring, out)) << i;
    EXPECT_EQ(reader.in_message(), i > 0);
    ASSERT_EQ(ring.write_some(std::span(wire).subspan(i, 1)), 1u);
  }
  ASSERT_TRUE(reader.poll(ring, out));
  EXPECT_EQ(out, msg);
  EXPECT_FALSE(reader.in_message());

  // Sizes 0..300 through a 64-byte ring, written and read alternately.
  MessageWriter writer;
  for (std::size_t n = 0; n <= 300; ++n) {
    Bytes m = pattern(n, 100 + n);
    const Bytes copy = m;
    if (n % 3 == 0) {
      writer.start(std::move(m));
    } else if (n % 3 == 1) {
      writer.start_borrowed(std::span<const std::byte>(copy));
    } else {
      const std::array<Span, 3> parts{Span(copy).first(n / 2), Span(), Span(copy).subspan(n / 2)};
      writer.start_borrowed(std::span<const Span>(parts));
    }
    EXPECT_EQ(writer.remaining(), n + 8);
    bool done_w = false;
    bool done_r = false;
    int rounds = 0;
    while (!done_r) {
      ASSERT_LT(++rounds, 100);
      if (!done_w) done_w = writer.poll(ring);
      done_r = reader.poll(ring, out);
    }
    EXPECT_TRUE(done_w);
    EXPECT_FALSE(writer.busy());
    ASSERT_EQ(out, copy) << n;
  }
  writer.start(Bytes(1000));
  EXPECT_THROW(writer.start(Bytes(1)), std::logic_error);
  EXPECT_EQ(writer.remaining(), 1008u);
  writer.reset();
  EXPECT_FALSE(writer.busy());
}

TEST(SpscRing, CloseDrainsThenThrows) {
  RingSet set(1, 256);
  SpscRing ring = set.view(0);
  ASSERT_TRUE(ring.send(pattern(10, 1)));
  ASSERT_TRUE(ring.send(Bytes{}));
  ring.close();
  EXPECT_TRUE(ring.closed());
  EXPECT_THROW(ring.send(pattern(1, 1)), RingClosed);
  Bytes out;
  ASSERT_TRUE(ring.recv(out));
  EXPECT_EQ(out, pattern(10, 1));
  ASSERT_TRUE(ring.recv(out));
  EXPECT_TRUE(out.empty());
  EXPECT_THROW((void)ring.recv(out, within(1s)), RingClosed);

  // Closed in the middle of a message: the reader says so.
  ring.init();
  const std::uint64_t len = 100;
  ASSERT_EQ(ring.write_some(as_span(len)), 8u);
  ASSERT_EQ(ring.write_some(pattern(10, 2)), 10u);
  ring.close();
  try {
    (void)ring.recv(out, within(1s));
    ADD_FAILURE() << "recv on a closed ring returned";
  } catch (const RingClosed& e) {
    EXPECT_NE(std::string(e.what()).find("middle of a message (10 of 100"), std::string::npos)
        << e.what();
  }
}

TEST(SpscRing, CorruptLengthIsAnError) {
  RingSet set(1, 256);
  SpscRing ring = set.view(0);
  const std::uint64_t len = ~std::uint64_t{0};
  ASSERT_EQ(ring.write_some(as_span(len)), 8u);
  Bytes out;
  MessageReader reader(1 << 20);
  EXPECT_THROW((void)reader.poll(ring, out), RingError);
}

// ---- random messages between two processes ---------------------------------------------

constexpr std::size_t kRandomCap = 4096;
constexpr int kRandomMessages = 100000;

// Mostly small, some around the capacity, some up to 3x it; the first few are the edges.
std::size_t pick_size(std::mt19937_64& rng, int i) {
  constexpr std::size_t c = kRandomCap;
  static constexpr std::array<std::size_t, 12> edges{0,     1,     7, 8,     9,     c - 9,
                                                     c - 8, c - 7, c, c + 1, 2 * c, 3 * c};
  if (static_cast<std::size_t>(i) < edges.size()) return edges[static_cast<std::size_t>(i)];
  const auto r = rng() % 100;
  if (r < 55) return rng() % 65;
  if (r < 80) return rng() % 1025;
  if (r < 92) return rng() % (c + 1);
  return rng() % (3 * c + 1);
}

// Sends kRandomMessages messages, alternating send(), gather send() and send_stream(),
// then closes the ring.
int produce_random(SpscRing& ring, std::uint64_t seed, const WaitOptions& wait) {
  std::mt19937_64 sizes(seed);
  std::mt19937_64 cuts(seed + 1);
  Bytes msg;
  for (int i = 0; i < kRandomMessages; ++i) {
    const std::size_t n = pick_size(sizes, i);
    msg.resize(n);
    fill_pattern(msg.data(), n, seed + static_cast<std::uint64_t>(i));
    bool ok = false;
    switch (i % 3) {
      case 0:
        ok = ring.send(msg, wait);
        break;
      case 1: {
        const std::size_t a = n == 0 ? 0 : cuts() % (n + 1);
        const std::size_t b = a + (n == a ? 0 : cuts() % (n - a + 1));
        const std::array<Span, 3> parts{Span(msg).first(a), Span(msg).subspan(a, b - a),
                                        Span(msg).subspan(b)};
        ok = ring.send(std::span<const Span>(parts), wait);
        break;
      }
      default: {
        std::size_t at = 0;
        ok = ring.send_stream(
            n,
            [&]() -> Span {
              const std::size_t k = std::min<std::size_t>(n - at, 1 + cuts() % 1500);
              const Span piece = Span(msg).subspan(at, k);
              at += k;
              return piece;
            },
            wait);
        break;
      }
    }
    if (!ok) {
      std::fprintf(stderr, "producer: send %d gave up\n", i);
      return 2;
    }
  }
  ring.close();
  return 0;
}

// Receives and checks every message (size and every byte, in order), alternating the
// blocking recv() and a MessageReader; then expects RingClosed. Returns 0 if all is well.
int consume_random(SpscRing& ring, std::uint64_t seed, const WaitOptions& wait,
                   std::uint64_t* bytes) {
  std::mt19937_64 sizes(seed);
  MessageReader reader;
  Bytes msg;
  Bytes expect;
  *bytes = 0;
  for (int i = 0; i < kRandomMessages; ++i) {
    const std::size_t n = pick_size(sizes, i);
    if (i % 2 == 0) {
      if (!ring.recv(msg, wait)) {
        std::fprintf(stderr, "consumer: recv %d gave up\n", i);
        return 2;
      }
    } else {
      while (!reader.poll(ring, msg)) {
        if (ring.wait_readable(wait) != WaitStatus::ready) {
          std::fprintf(stderr, "consumer: wait %d gave up\n", i);
          return 2;
        }
      }
    }
    expect.resize(n);
    fill_pattern(expect.data(), n, seed + static_cast<std::uint64_t>(i));
    if (msg != expect) {
      std::fprintf(stderr, "consumer: message %d: got %zu bytes, want %zu%s\n", i, msg.size(), n,
                   msg.size() == n ? " (content differs)" : "");
      return 3;
    }
    *bytes += n;
  }
  try {
    (void)ring.recv(msg, wait);
    std::fprintf(stderr, "consumer: a message after the last one\n");
    return 4;
  } catch (const RingClosed&) {
  }
  return 0;
}

enum class Peer { forked_producer, forked_consumer, threads };

class RandomMessages : public ::testing::TestWithParam<Peer> {};

TEST_P(RandomMessages, AllArriveInOrderIntact) {
  RingSet set(1, kRandomCap);
  const std::uint64_t seed = 12345;
  const auto abort = parent_died();
  WaitOptions wait;
  wait.abort = &abort;
  std::uint64_t bytes = 0;
  const auto t0 = Clock::now();
  switch (GetParam()) {
    case Peer::forked_producer: {
      const pid_t pid = fork_child([&] {
        SpscRing ring = set.view(0);
        return produce_random(ring, seed, wait);
      });
      SpscRing ring = set.view(0);
      const auto child_gone = child_exited(pid);
      WaitOptions parent_wait;
      parent_wait.abort = &child_gone;
      EXPECT_EQ(consume_random(ring, seed, parent_wait, &bytes), 0);
      EXPECT_EQ(wait_child(pid), 0);
      break;
    }
    case Peer::forked_consumer: {
      SharedMapping result(sizeof(std::uint64_t), "test");
      auto* child_bytes = static_cast<std::uint64_t*>(result.data());
      const pid_t pid = fork_child([&] {
        SpscRing ring = set.view(0);
        return consume_random(ring, seed, wait, child_bytes);
      });
      SpscRing ring = set.view(0);
      const auto child_gone = child_exited(pid);
      WaitOptions parent_wait;
      parent_wait.abort = &child_gone;
      EXPECT_EQ(produce_random(ring, seed, parent_wait), 0);
      EXPECT_EQ(wait_child(pid), 0);
      bytes = *child_bytes;
      break;
    }
    case Peer::threads: {
      int produced = -1;
      std::thread producer([&] {
        SpscRing ring = set.view(0);
        produced = produce_random(ring, seed, {});
      });
      SpscRing ring = set.view(0);
      EXPECT_EQ(consume_random(ring, seed, {}, &bytes), 0);
      producer.join();
      EXPECT_EQ(produced, 0);
      break;
    }
  }
  EXPECT_GT(bytes, std::uint64_t{50} << 20);  // the size mix really moved data
  std::printf("  %d messages, %.1f MiB in %.0f ms\n", kRandomMessages, bytes / 1048576.0,
              std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
}

INSTANTIATE_TEST_SUITE_P(Peers, RandomMessages,
                         ::testing::Values(Peer::forked_producer, Peer::forked_consumer,
                                           Peer::threads),
                         [](const auto& param_info) {
                           switch (param_info.param) {
                             case Peer::forked_producer:
                               return std::string("ForkedProducer");
                             case Peer::forked_consumer:
                               return std::string("ForkedConsumer");
                             case Peer::threads:
                               return std::string("Threads");
                           }
                           return std::string();
                         });

// ---- one huge message ------------------------------------------------------------------

TEST(SpscRing, OneGibMessageThroughOneMibRing) {
  constexpr std::size_t kCap = 1 << 20;
  constexpr std::uint64_t kSize = std::uint64_t{1} << 30;
  constexpr std::uint64_t kSeed = 0xfeed;
  RingSet set(1, kCap);
  const auto abort = parent_died();
  const pid_t pid = fork_child([&] {
    SpscRing ring = set.view(0);
    Bytes piece(256 << 10);  // generated on the fly: the sender never holds 1 GiB
    std::uint64_t at = 0;
    WaitOptions wait;
    wait.abort = &abort;
    const bool ok = ring.send_stream(
        kSize,
        [&]() -> Span {
          const auto n =
              static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), kSize - at));
          fill_pattern(piece.data(), n, kSeed, at);
          at += n;
          return Span(piece).first(n);
        },
        wait);
    return ok ? 0 : 2;
  });
  SpscRing ring = set.view(0);
  Bytes out;
  const auto child_gone = child_exited(pid);
  const auto t0 = Clock::now();
  ASSERT_TRUE(ring.recv(out, within(60s, &child_gone)));
  const auto dt = Clock::now() - t0;
  ASSERT_EQ(out.size(), kSize);
  Bytes expect(1 << 20);
  for (std::uint64_t at = 0; at < kSize; at += expect.size()) {
    fill_pattern(expect.data(), expect.size(), kSeed, at);
    ASSERT_EQ(std::memcmp(out.data() + at, expect.data(), expect.size()), 0) << "at byte " << at;
  }
  EXPECT_EQ(wait_child(pid), 0);
  std::printf("  1 GiB in %.0f ms (%.2f GB/s, sender generating the bytes)\n",
              std::chrono::duration<double, std::milli>(dt).count(),
              static_cast<double>(kSize) / std::chrono::duration<double>(dt).count() / 1e9);
}

// ---- ping-pong through two rings -------------------------------------------------------

// spin = 0 forces every wait through the futex sleep, so every round trip exercises the
// sleep/wake handshake in both directions.
TEST(SpscRing, PingPongBetweenProcessesThroughFutexSleeps) {
  RingSet set(2, 4096);
  constexpr std::uint64_t kRounds = 20000;
  const auto abort = parent_died();
  const pid_t pid = fork_child([&] {
    SpscRing in = set.view(0);
    SpscRing out = set.view(1);
    WaitOptions wait;
    wait.spin = 0ns;
    wait.abort = &abort;
    Bytes msg;
    for (;;) {
      try {
        if (!in.recv(msg, wait)) return 2;
      } catch (const RingClosed&) {
        return 0;
      }
      if (msg.size() != 8) return 3;
      const std::uint64_t v = load_u64(msg) + 1;
      if (!out.send(as_span(v), wait)) return 4;
    }
  });
  SpscRing out = set.view(0);
  SpscRing in = set.view(1);
  const auto child_gone = child_exited(pid);
  WaitOptions wait = within(30s, &child_gone);
  wait.spin = 0ns;
  Bytes msg;
  const auto t0 = Clock::now();
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    const std::uint64_t v = i * 2;
    ASSERT_TRUE(out.send(as_span(v), wait));
    ASSERT_TRUE(in.recv(msg, wait)) << "round " << i;
    ASSERT_EQ(msg.size(), 8u);
    ASSERT_EQ(load_u64(msg), v + 1);
  }
  const auto dt = Clock::now() - t0;
  out.close();
  EXPECT_EQ(wait_child(pid), 0);
  std::printf("  ring round trip (no spin): %.2f us\n",
              std::chrono::duration<double, std::micro>(dt).count() / kRounds);
}

// ---- timeouts and dead peers -----------------------------------------------------------

TEST(SpscRing, RecvTimesOutOnEmptyRing) {
  RingSet set(1, 256);
  SpscRing ring = set.view(0);
  Bytes out{std::byte{1}};
  auto t0 = Clock::now();
  EXPECT_FALSE(ring.recv(out, within(200ms)));
  auto dt = Clock::now() - t0;
  EXPECT_GE(dt, 200ms);
  EXPECT_LT(dt, 400ms);
  EXPECT_EQ(out, Bytes{std::byte{1}});  // untouched

  // Sliced by an abort predicate that never fires: still ends at the deadline.
  const std::function<bool()> never = [] { return false; };
  t0 = Clock::now();
  EXPECT_FALSE(ring.recv(out, within(120ms, &never)));
  dt = Clock::now() - t0;
  EXPECT_GE(dt, 120ms);
  EXPECT_LT(dt, 300ms);

  // A partial message stays partial across a timeout, and completes later.
  const std::uint64_t len = 5;
  ASSERT_EQ(ring.write_some(as_span(len)), 8u);
  ASSERT_EQ(ring.write_some(pattern(2, 9)), 2u);
  EXPECT_FALSE(ring.recv(out, within(20ms)));
  ASSERT_EQ(ring.write_some(Span(pattern(5, 9)).subspan(2)), 3u);
  ASSERT_TRUE(ring.recv(out, within(20ms)));
  EXPECT_EQ(out, pattern(5, 9));
}

TEST(SpscRing, SendTimesOutOnFullRing) {
  RingSet set(1, 64);
  SpscRing ring = set.view(0);
  ASSERT_EQ(ring.write_some(pattern(64, 1)), 64u);
  const auto t0 = Clock::now();
  EXPECT_FALSE(ring.send(pattern(10, 2), within(100ms)));
  EXPECT_GE(Clock::now() - t0, 100ms);
  EXPECT_FALSE(ring.closed());  // nothing of the message went in: the stream is intact

  Bytes junk(64);
  ASSERT_EQ(ring.read_some(std::span(junk).first(20)), 20u);
  EXPECT_FALSE(ring.send(pattern(100, 3), within(50ms)));
  EXPECT_TRUE(ring.closed());  // 20 bytes of it went in: the stream had to end
}

// A SIGKILLed peer never writes again: a wait with an abort predicate that notices the
// death returns (false) within a slice, instead of hanging.
TEST(SpscRing, AbortPredicateEndsWaitOnKilledPeer) {
  for (const bool reading : {true, false}) {
    RingSet set(1, 64);
    const pid_t pid = fork_child([] {
      for (;;) ::pause();
      return 0;
    });
    std::atomic<bool> dead{false};
    const std::function<bool()> peer_dead = [&] {
      if (dead.load()) return true;
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) dead.store(true);
      return dead.load();
    };
    std::thread killer([pid] {
      std::this_thread::sleep_for(100ms);
      ::kill(pid, SIGKILL);
    });
    SpscRing ring = set.view(0);
    WaitOptions wait;  // no deadline: only the predicate can end it
    wait.abort = &peer_dead;
    const auto t0 = Clock::now();
    if (reading) {
      Bytes out;
      EXPECT_FALSE(ring.recv(out, wait));
    } else {
      ASSERT_EQ(ring.write_some(pattern(60, 1)), 60u);
      EXPECT_FALSE(ring.send(pattern(100, 1), wait));
      EXPECT_TRUE(ring.closed());
    }
    const auto dt = Clock::now() - t0;
    killer.join();
    EXPECT_TRUE(dead.load());
    EXPECT_GE(dt, 90ms);
    EXPECT_LT(dt, 1s) << (reading ? "recv" : "send");
  }
}

// ---- event loop with a doorbell ---------------------------------------------------------

// The Pool's shape: one parent event loop, 4 forked workers, a task ring and a result
// ring each, small rings so that both sides fill them. The loop never blocks on a ring:
// it polls MessageWriters and MessageReaders and sleeps on one Doorbell that workers
// ring when they publish results (data) or free task space (space). Workers 0 and 1
// answer every task; workers 2 and 3 answer once per group of 64 tasks, more than their
// task ring holds, so the loop depends on the space doorbell to finish each group. A
// lost wake-up leaves the loop asleep with work pending: the 5 s wait then fails.
TEST(Doorbell, EventLoopWithFourWorkersLosesNoWakeUp) {
  constexpr std::size_t kWorkers = 4;
  constexpr std::uint64_t kPerWorker = 50000;
  constexpr std::uint64_t kGroup = 64;
  RingSet set(2 * kWorkers, 512);  // ring 2w: tasks to worker w; 2w+1: its results
  Doorbell& bell = set.doorbell();
  const auto abort = parent_died();
  auto grouped = [](std::size_t w) { return w >= 2; };
  auto task = [](std::size_t w, std::uint64_t seq) {
    Bytes m(8);
    std::memcpy(m.data(), &seq, 8);
    const Bytes p =
        pattern(static_cast<std::size_t>(splitmix64(seq ^ (w << 40)) % 49), seq * 8 + w);
    m.insert(m.end(), p.begin(), p.end());
    return m;
  };
  auto fnv = [](std::uint64_t h, const Bytes& b) {
    for (const std::byte x : b) h = (h ^ std::to_integer<std::uint64_t>(x)) * 0x100000001b3ULL;
    return h;
  };
  constexpr std::uint64_t kFnvBasis = 0xcbf29ce484222325ULL;

  std::vector<pid_t> pids;
  for (std::size_t w = 0; w < kWorkers; ++w) {
    pids.push_back(fork_child([&, w] {
      SpscRing tasks = set.view(2 * w, {.data = nullptr, .space = &bell});
      SpscRing results = set.view(2 * w + 1, {.data = &bell, .space = nullptr});
      WaitOptions wait;
      wait.abort = &abort;
      if (w % 2 == 0) wait.spin = 0ns;  // these always sleep when idle
      std::mt19937_64 rng(w);
      Bytes msg;
      Bytes reply;
      std::uint64_t hash = kFnvBasis;
      for (std::uint64_t seq = 0;; ++seq) {
        try {
          if (!tasks.recv(msg, wait)) return 2;
        } catch (const RingClosed&) {
          break;
        }
        if (msg.size() < 8 || load_u64(msg) != seq) return 3;
        if (rng() % 2048 == 0) std::this_thread::sleep_for(100us);  // vary the timing
        if (grouped(w)) {
          // One answer per group: (last seq, hash of the group's messages).
          hash = fnv(hash, msg);
          if (seq % kGroup != kGroup - 1 && seq != kPerWorker - 1) continue;
          reply.resize(16);
          std::memcpy(reply.data(), &seq, 8);
          std::memcpy(reply.data() + 8, &hash, 8);
          hash = kFnvBasis;
        } else {
          // One answer per task: seq * 3, then the payload with every byte flipped.
          const std::uint64_t tag = seq * 3;
          reply.resize(msg.size());
          std::memcpy(reply.data(), &tag, 8);
          for (std::size_t i = 8; i < msg.size(); ++i) reply[i] = ~msg[i];
        }
        if (!results.send(reply, wait)) return 4;
      }
      results.close();
      return 0;
    }));
  }

  struct Worker {
    SpscRing tasks, results;
    MessageWriter writer;
    MessageReader reader;
    std::uint64_t sent = 0;   // tasks started
    std::uint64_t acked = 0;  // tasks answered for
  };
  std::vector<Worker> workers;
  workers.reserve(kWorkers);
  for (std::size_t w = 0; w < kWorkers; ++w) {
    workers.push_back(Worker{set.view(2 * w), set.view(2 * w + 1), {}, {}});
  }
  std::uint64_t total = 0;
  std::uint64_t sleeps = 0;
  std::uint64_t bad = 0;
  Bytes msg;
  const auto t0 = Clock::now();
  while (total < kWorkers * kPerWorker) {
    bool progress = false;
    for (std::size_t w = 0; w < kWorkers; ++w) {
      Worker& k = workers[w];
      while (k.sent < kPerWorker || k.writer.busy()) {
        if (!k.writer.busy()) k.writer.start(task(w, k.sent++));
        if (!k.writer.poll(k.tasks)) break;
        progress = true;
      }
      while (k.reader.poll(k.results, msg)) {
        progress = true;
        bool ok = false;
        std::uint64_t answered = 1;
        if (grouped(w)) {
          const std::uint64_t last = std::min(k.acked + kGroup, kPerWorker) - 1;
          std::uint64_t hash = kFnvBasis;
          for (std::uint64_t seq = k.acked; seq <= last; ++seq) hash = fnv(hash, task(w, seq));
          ok = msg.size() == 16 && load_u64(msg) == last && load_u64(msg, 8) == hash;
          answered = last + 1 - k.acked;
        } else {
          const Bytes t = task(w, k.acked);
          ok = msg.size() == t.size() && load_u64(msg) == k.acked * 3;
          for (std::size_t i = 8; ok && i < t.size(); ++i) ok = msg[i] == ~t[i];
        }
        bad += ok ? 0 : 1;
        k.acked += answered;
        total += answered;
      }
    }
    if (progress) continue;
    bell.arm();
    bool ready = false;  // the re-check after arm(): anything a worker would ring for
    for (Worker& k : workers) {
      ready = ready || k.results.readable() > 0 || (k.writer.busy() && k.tasks.writable() > 0);
    }
    if (ready) {
      bell.disarm();
      continue;
    }
    ++sleeps;
    ASSERT_TRUE(bell.wait(5s)) << "lost wake-up: loop asleep with " << total << " of "
                               << kWorkers * kPerWorker << " tasks answered";
  }
  const auto dt = Clock::now() - t0;
  for (Worker& k : workers) k.tasks.close();
  for (const pid_t pid : pids) EXPECT_EQ(wait_child(pid), 0);
  EXPECT_EQ(bad, 0u);
  for (Worker& k : workers) {
    EXPECT_EQ(k.acked, kPerWorker);
    EXPECT_THROW((void)k.reader.poll(k.results, msg), RingClosed);  // each worker closed
  }
  EXPECT_GT(sleeps, 100u) << "the loop hardly slept: the doorbell path was not exercised";
  std::printf("  %zu tasks in %.0f ms, loop slept %llu times\n", kWorkers * kPerWorker,
              std::chrono::duration<double, std::milli>(dt).count(),
              static_cast<unsigned long long>(sleeps));
}

// Two threads in one process hammering the same doorbell handshake (for TSan).
TEST(Doorbell, ThreadsProducerWakesArmedLoop) {
  RingSet set(1, 256);
  Doorbell& bell = set.doorbell();
  constexpr std::uint64_t kCount = 100000;
  std::thread producer([&] {
    SpscRing ring = set.view(0, {.data = &bell, .space = nullptr});
    WaitOptions wait = within(30s);
    wait.spin = 0ns;
    for (std::uint64_t i = 0; i < kCount; ++i) {
      if (!ring.send(as_span(i), wait)) return;
    }
    ring.close();
  });
  SpscRing ring = set.view(0);
  MessageReader reader;
  Bytes msg;
  std::uint64_t next = 0;
  bool closed = false;
  while (!closed) {
    try {
      while (reader.poll(ring, msg)) {
        ASSERT_EQ(load_u64(msg), next);
        ++next;
      }
    } catch (const RingClosed&) {
      closed = true;
      break;
    }
    bell.arm();
    if (ring.readable() > 0 || ring.closed()) {
      bell.disarm();
      continue;
    }
    ASSERT_TRUE(bell.wait(5s)) << "lost wake-up at message " << next;
  }
  producer.join();
  EXPECT_EQ(next, kCount);
}

}  // namespace
