// Micro-benchmarks of the process transport (src/pool/ring, src/os/futex), between two real
// processes: each benchmark forks its peer before the timed loop.
//
//   BM_Futex_pingpong        the anchor of the design's targets ("apply round trip <= 2x raw
//                            futex ping-pong"): one shared word flipped back and forth,
//                            spin first, then FUTEX_WAIT; FUTEX_WAKE only for a sleeper.
//   BM_Ring_roundtrip/size   a message of `size` bytes there and back through two rings
//                            (send + recv each way), with the same spin-then-sleep policy.
//   *_nospin                 the same with no spinning: every wait is a futex sleep, so
//                            every round trip pays two sleeps and two wake-ups.
//   BM_Ring_throughput       64 KiB messages one way through a 1 MiB ring (bytes/s).
//   BM_Memcpy                64 KiB memcpy in one process: the bandwidth the ring's
//                            two copies (in, then out on the other core) compete with.
//
// Times are wall-clock (UseRealTime): the peer's CPU time is not this process's.
// Each implementation checks its result (the echoed value, the message count).
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>
#include <span>
#include <vector>

#include "os/futex.hpp"
#include "pool/ring.hpp"
#include "os/shm.hpp"

namespace {

using namespace mproc::detail;
using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;

constexpr std::size_t kRingCapacity = std::size_t{1} << 20;
constexpr std::chrono::nanoseconds kSpin = WaitOptions{}.spin;

// Forks body() as a child that dies with us; its return value is its exit code.
pid_t fork_peer(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(99);
    int rc = 100;
    try {
      rc = body();
    } catch (...) {
      rc = 101;
    }
    ::_exit(rc);
  }
  return pid;
}

int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// True once the process that forked us has died (we were re-parented).
bool orphaned_from(pid_t parent) { return ::getppid() != parent; }

// ---- raw futex ping-pong ----------------------------------------------------------------

// The word holds a turn counter (odd: the child's turn, even: the parent's) and, in
// bit 31, "the waiter is asleep". The passer swaps in the next turn with one exchange,
// which also clears the flag; it calls FUTEX_WAKE only if the flag was set. The
// sleeper sets the flag with a CAS on the very value it waits to change, so the two
// RMWs are ordered on the word itself and no wake-up can be lost.
constexpr std::uint32_t kAsleep = 1u << 31;

void await_turn(std::atomic<std::uint32_t>& word, std::uint32_t turn,
                std::chrono::nanoseconds spin) {
  if ((word.load(std::memory_order_acquire) & ~kAsleep) == turn) return;
  if (spin.count() > 0) {
    const auto end = Clock::now() + spin;
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if ((word.load(std::memory_order_acquire) & ~kAsleep) == turn) return;
      if (i % 16 == 0 && Clock::now() >= end) break;
    }
  }
  for (;;) {
    std::uint32_t cur = word.load(std::memory_order_acquire);
    if ((cur & ~kAsleep) == turn) return;
    if ((cur & kAsleep) == 0 &&
        !word.compare_exchange_weak(cur, cur | kAsleep, std::memory_order_acq_rel)) {
      continue;
    }
    futex_wait(&word, cur | kAsleep, 50ms);
  }
}

void pass_turn(std::atomic<std::uint32_t>& word, std::uint32_t turn) {
  if ((word.exchange(turn, std::memory_order_acq_rel) & kAsleep) != 0) futex_wake(&word, 1);
}

void futex_pingpong(benchmark::State& state, std::chrono::nanoseconds spin) {
  SharedMapping shm(4096, "bench", SharedMapping::FdPolicy::close);
  auto* word = ::new (shm.data()) std::atomic<std::uint32_t>(0);
  auto* stop = ::new (shm.bytes() + 64) std::atomic<std::uint32_t>(0);
  const pid_t parent = ::getpid();
  const pid_t pid = fork_peer([&] {
    for (std::uint32_t turn = 1;; turn += 2) {
      await_turn(*word, turn, spin);
      if (stop->load(std::memory_order_acquire) != 0 || orphaned_from(parent)) return 0;
      pass_turn(*word, turn + 1);
    }
  });
  if (pid < 0) {
    state.SkipWithError("fork failed");
    return;
  }
  std::uint32_t turn = 0;
  for (auto _ : state) {
    pass_turn(*word, turn + 1);
    await_turn(*word, turn + 2, spin);
    turn += 2;
  }
  stop->store(1, std::memory_order_release);
  pass_turn(*word, turn + 1);
  if (reap(pid) != 0) state.SkipWithError("peer failed");
  if ((word->load() & ~kAsleep) != turn + 1) state.SkipWithError("turn count mismatch");
}

void BM_Futex_pingpong(benchmark::State& state) { futex_pingpong(state, kSpin); }
void BM_Futex_pingpong_nospin(benchmark::State& state) { futex_pingpong(state, 0ns); }

// ---- ring round trip --------------------------------------------------------------------

struct RingPair {
  SharedMapping shm;
  std::size_t stride = SpscRing::bytes_needed(kRingCapacity);
  RingPair()
      : shm(2 * SpscRing::bytes_needed(kRingCapacity), "bench", SharedMapping::FdPolicy::close) {
    view(0).init();
    view(1).init();
  }
  SpscRing view(int i) {
    return SpscRing(shm.bytes() + stride * static_cast<std::size_t>(i), kRingCapacity);
  }
};

void ring_roundtrip(benchmark::State& state, std::chrono::nanoseconds spin) {
  const auto size = static_cast<std::size_t>(state.range(0));
  RingPair rings;
  const pid_t parent = ::getpid();
  const pid_t pid = fork_peer([&] {
    SpscRing requests = rings.view(0);
    SpscRing replies = rings.view(1);
    const std::function<bool()> orphaned = [parent] { return orphaned_from(parent); };
    WaitOptions wait;
    wait.spin = spin;
    wait.abort = &orphaned;
    Bytes msg;
    for (;;) {
      try {
        if (!requests.recv(msg, wait)) return 2;
      } catch (const RingClosed&) {
        return 0;
      }
      msg[0] = static_cast<std::byte>(std::to_integer<unsigned>(msg[0]) + 1);
      if (!replies.send(msg, wait)) return 3;
    }
  });
  if (pid < 0) {
    state.SkipWithError("fork failed");
    return;
  }
  SpscRing requests = rings.view(0);
  SpscRing replies = rings.view(1);
  WaitOptions wait;
  wait.spin = spin;
  Bytes msg(size, std::byte{0});
  Bytes reply;
  unsigned expect = 0;
  bool ok = true;
  for (auto _ : state) {
    requests.send(msg, wait);
    if (!replies.recv(reply, wait)) ok = false;
    expect = (expect + 1) & 0xff;
    if (reply.size() != size || std::to_integer<unsigned>(reply[0]) != expect) ok = false;
    msg.swap(reply);
  }
  requests.close();
  if (reap(pid) != 0) state.SkipWithError("peer failed");
  if (!ok) state.SkipWithError("wrong reply");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(2 * size));
}

void BM_Ring_roundtrip(benchmark::State& state) { ring_roundtrip(state, kSpin); }
void BM_Ring_roundtrip_nospin(benchmark::State& state) { ring_roundtrip(state, 0ns); }

// ---- ring throughput --------------------------------------------------------------------

constexpr std::size_t kThroughputMessage = 64 << 10;

// Per iteration: one 64 KiB message into the ring. The peer drains and counts them; at
// most a ring's worth (16 messages) is still in flight when the timed loop ends.
void BM_Ring_throughput(benchmark::State& state) {
  RingPair rings;
  SharedMapping tally(4096, "bench", SharedMapping::FdPolicy::close);
  auto* count = ::new (tally.data()) std::atomic<std::uint64_t>(0);
  auto* sum = ::new (tally.bytes() + 64) std::atomic<std::uint64_t>(0);
  const pid_t parent = ::getpid();
  const pid_t pid = fork_peer([&] {
    SpscRing in = rings.view(0);
    const std::function<bool()> orphaned = [parent] { return orphaned_from(parent); };
    WaitOptions wait;
    wait.abort = &orphaned;
    Bytes msg;
    std::uint64_t n = 0;
    std::uint64_t s = 0;
    for (;;) {
      try {
        if (!in.recv(msg, wait)) return 2;
      } catch (const RingClosed&) {
        break;
      }
      if (msg.size() != kThroughputMessage) return 3;
      std::uint64_t first = 0;
      std::memcpy(&first, msg.data(), 8);
      s += first;
      ++n;
    }
    count->store(n);
    sum->store(s);
    return 0;
  });
  if (pid < 0) {
    state.SkipWithError("fork failed");
    return;
  }
  SpscRing out = rings.view(0);
  Bytes msg(kThroughputMessage, std::byte{1});
  std::uint64_t i = 0;
  std::uint64_t s = 0;
  for (auto _ : state) {
    std::memcpy(msg.data(), &i, 8);
    s += i++;
    out.send(msg);
  }
  out.close();
  if (reap(pid) != 0) state.SkipWithError("peer failed");
  if (count->load() != i || sum->load() != s) state.SkipWithError("messages lost or damaged");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kThroughputMessage));
}

void BM_Memcpy(benchmark::State& state) {
  Bytes src(kThroughputMessage, std::byte{1});
  Bytes dst(kThroughputMessage);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  if (dst != src) state.SkipWithError("memcpy");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kThroughputMessage));
}

}  // namespace

BENCHMARK(BM_Futex_pingpong)->UseRealTime()->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Ring_roundtrip)
    ->Arg(8)
    ->Arg(64)
    ->Arg(4096)
    ->UseRealTime()
    ->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Futex_pingpong_nospin)->UseRealTime()->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Ring_roundtrip_nospin)
    ->Arg(8)
    ->Arg(64)
    ->Arg(4096)
    ->UseRealTime()
    ->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Ring_throughput)->UseRealTime()->Unit(benchmark::kNanosecond);
BENCHMARK(BM_Memcpy)->Unit(benchmark::kNanosecond);

BENCHMARK_MAIN();
