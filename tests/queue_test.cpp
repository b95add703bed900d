// Queue, SimpleQueue, JoinableQueue and Pipe: real processes (fork), real SIGKILLs in the
// middle of messages, real fds counted in /proc. Every wait that a bug could turn into a
// hang has a timeout, and its result is asserted.
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/serialize.hpp>

#include <gtest/gtest.h>

#include <signal.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// ThreadSanitizer builds read this at start-up (other builds ignore it): these tests fork
// after threads have run, which TSan refuses unless die_after_fork=0, and each forked
// child would otherwise sleep atexit_sleep_ms (1 s) on exit. process_test says the same.
extern "C" const char* __tsan_default_options() { return "atexit_sleep_ms=0:die_after_fork=0"; }

namespace {

using namespace std::chrono_literals;

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// Joins `p`, killing it if it has not ended within `limit`; its exit code (-9 if killed).
int finish(mproc::Process& p, std::chrono::seconds limit = 60s) {
  if (!p.join(limit)) {
    p.kill();
    p.join();
  }
  return p.exitcode().value_or(-1000);
}

struct Point {
  int x = 0;
  std::string label;
  std::vector<double> weights;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, label, weights);
  }
  friend bool operator==(const Point&, const Point&) = default;
};

/// A message's bytes as they are, whatever was put.
struct RawMessage {
  std::vector<std::byte> bytes;
  template <class Archive>
  void serialize(Archive& ar) {
    if constexpr (Archive::is_loading) {
      bytes.resize(ar.remaining());
      ar.read_bytes(bytes.data(), bytes.size());
    } else {
      ar.write_bytes(bytes.data(), bytes.size());
    }
  }
};

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

/// A message that carries its own checksum: {id, n words derived from id, checksum}.
std::vector<std::uint64_t> make_message(std::uint64_t id, std::size_t words) {
  std::vector<std::uint64_t> m(words + 2);
  m[0] = id;
  std::uint64_t sum = id;
  for (std::size_t i = 1; i <= words; ++i) {
    m[i] = mix(id * 1'000'003 + i);
    sum = mix(sum ^ m[i]);
  }
  m[words + 1] = sum;
  return m;
}

bool intact(const std::vector<std::uint64_t>& m) {
  if (m.size() < 2) return false;
  std::uint64_t sum = m[0];
  for (std::size_t i = 1; i + 1 < m.size(); ++i) {
    if (m[i] != mix(m[0] * 1'000'003 + i)) return false;
    sum = mix(sum ^ m[i]);
  }
  return sum == m.back();
}

std::byte pattern_byte(std::size_t i, std::size_t salt) {
  return static_cast<std::byte>((i * 131 + (i >> 11) + salt * 7) & 0xff);
}

std::vector<std::byte> pattern(std::size_t n, std::size_t salt) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = pattern_byte(i, salt);
  return v;
}

bool has_pattern(const std::vector<std::byte>& v, std::size_t n, std::size_t salt) {
  if (v.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (v[i] != pattern_byte(i, salt)) return false;
  return true;
}

/// prefix followed by i ("p12"). (Not "p" + std::to_string(i): GCC 12 reports a bogus
/// -Wrestrict in it, PR 105329.)
std::string label(char prefix, int i) {
  std::string s = std::to_string(i);
  s.insert(s.begin(), prefix);
  return s;
}

/// Waits until pred() or the limit; returns pred().
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  return pred();
}

// ---- basics ---------------------------------------------------------------------------

TEST(Queue, IsFifoForManyTypes) {
  mproc::Queue<int> ints;
  mproc::Queue<std::string> strings;
  mproc::Queue<std::vector<double>> vectors;
  mproc::Queue<Point> points;
  for (int i = 0; i < 1000; ++i) {
    ints.put(i);
    strings.put(std::string(static_cast<std::size_t>(i % 50), 'a' + static_cast<char>(i % 26)));
    vectors.put(std::vector<double>(static_cast<std::size_t>(i % 7), i * 0.5));
    points.put(Point{i, label('p', i), {double(i), -1.0}});
  }
  EXPECT_EQ(ints.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(ints.get(), i);
    EXPECT_EQ(strings.get(),
              std::string(static_cast<std::size_t>(i % 50), 'a' + static_cast<char>(i % 26)));
    EXPECT_EQ(vectors.get(), std::vector<double>(static_cast<std::size_t>(i % 7), i * 0.5));
    EXPECT_EQ(points.get(), (Point{i, label('p', i), {double(i), -1.0}}));
  }
  EXPECT_TRUE(ints.empty());
  EXPECT_EQ(ints.size(), 0u);
}

TEST(Queue, EmptyQueueDoesNotBlockTryGetOrTimedGet) {
  mproc::Queue<int> q;
  EXPECT_EQ(q.try_get(), std::nullopt);
  EXPECT_EQ(q.get(20ms), std::nullopt);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  EXPECT_EQ(q.maxsize(), 0u);
  ASSERT_TRUE(q.try_put(7));
  EXPECT_EQ(q.get(1s), 7);
}

TEST(Queue, MaxsizeAppliesBackPressure) {
  mproc::Queue<int> q(2);
  EXPECT_EQ(q.maxsize(), 2u);
  EXPECT_TRUE(q.try_put(1));
  EXPECT_TRUE(q.try_put(2));
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.size(), 2u);
  EXPECT_FALSE(q.try_put(3));
  EXPECT_FALSE(q.put(3, 20ms));
  EXPECT_EQ(q.get(), 1);
  EXPECT_FALSE(q.full());
  EXPECT_TRUE(q.put(3, 1s));
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);

  // A put blocked on maxsize proceeds when a consumer takes a message.
  ASSERT_TRUE(q.try_put(10));
  ASSERT_TRUE(q.try_put(11));
  std::thread producer([q]() mutable { q.put(12); });
  EXPECT_EQ(q.get(), 10);
  producer.join();
  EXPECT_EQ(q.get(), 11);
  EXPECT_EQ(q.get(), 12);
}

TEST(Queue, ByteRingFullBlocksEvenWithoutMaxsize) {
  mproc::Queue<std::vector<std::byte>> q(mproc::QueueOptions{.buffer_bytes = 4096});
  // Each message is one 544-byte frame: seven fit in the ring, the eighth does not.
  int put = 0;
  while (q.try_put(std::vector<std::byte>(520)) && put < 100) ++put;
  EXPECT_EQ(put, 7);
  EXPECT_FALSE(q.put(std::vector<std::byte>(520), 10ms));
  EXPECT_EQ(q.size(), 7u);
  // A message bigger than the ring never fits at once; try_put refuses it whole.
  EXPECT_FALSE(q.try_put(std::vector<std::byte>(10'000)));
  for (int i = 0; i < put; ++i) ASSERT_TRUE(q.try_get().has_value());
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST(Queue, VectorsAndStringsSkipTheScratchBufferButKeepTheWireFormat) {
  // put() copies a string or a vector of plain elements straight into the ring; the bytes
  // must be what dumps() makes, so that any handle of the queue decodes them.
  mproc::Queue<std::vector<double>> doubles;
  auto raw = mproc::loads<mproc::Queue<RawMessage>>(mproc::dumps(doubles));
  const std::vector<double> v{1.5, -2.0, 1e300};
  doubles.put(v);
  auto message = raw.get(1s);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->bytes, mproc::dumps(v));

  mproc::Queue<std::string> strings(mproc::QueueOptions{.buffer_bytes = 4096});
  std::thread producer([strings] {
    for (std::size_t n : {0, 1, 1000, 1001, 5000, 100'000}) strings.put(std::string(n, 'q'));
  });
  for (std::size_t n : {0, 1, 1000, 1001, 5000, 100'000}) {
    auto got = strings.get(10s);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, std::string(n, 'q'));
  }
  producer.join();
}

TEST(Queue, DecodeFailureConsumesTheMessage) {
  mproc::Queue<std::string> strings;
  // The same queue seen as carrying ints: a string's bytes do not decode as an int.
  auto ints = mproc::loads<mproc::Queue<int>>(mproc::dumps(strings));
  strings.put("not an int");
  strings.put("x");
  EXPECT_THROW((void)ints.get(1s), mproc::SerializationError);
  EXPECT_EQ(strings.get(1s), "x");
  EXPECT_TRUE(strings.empty());
}

TEST(SimpleQueue, PutGetCloseAcrossAProcess) {
  mproc::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.try_get(), std::nullopt);
  mproc::Process child([q]() mutable {
    for (int i = 0; i < 100; ++i) q.put(label('m', i));
    q.close();
  });
  child.start();
  for (int i = 0; i < 100; ++i) {
    auto m = q.get(10s);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(*m, label('m', i));
  }
  EXPECT_THROW((void)q.get(10s), mproc::Closed);
  EXPECT_TRUE(q.closed());
  EXPECT_EQ(finish(child), 0);
}

// ---- big messages and frame boundaries --------------------------------------------------

TEST(Queue, A256MiBMessageStreamsThroughTheDefaultRing) {
  constexpr std::size_t kSize = std::size_t{256} << 20;
  mproc::Queue<std::vector<std::byte>> q;
  mproc::Process producer([q]() mutable {
    q.put(pattern(kSize, 1));
    q.put(pattern(100, 2));
  });
  producer.start();
  auto big = q.get(60s);
  ASSERT_TRUE(big.has_value());
  EXPECT_TRUE(has_pattern(*big, kSize, 1));
  big.reset();
  auto small = q.get(10s);
  ASSERT_TRUE(small.has_value());
  EXPECT_TRUE(has_pattern(*small, 100, 2));
  EXPECT_EQ(finish(producer), 0);
}

TEST(Queue, MessagesAtFrameAndRingBoundariesArriveIntact) {
  // A 4096-byte ring: frames carry up to 1008 payload bytes (1024 with the header). The
  // encoding of a vector<byte> of n is n + 8 bytes. Sizes around one frame, one ring, and
  // in between, sent back to back so that frames land at every offset from the ring's end.
  constexpr std::size_t kCap = 4096;
  std::vector<std::size_t> sizes;
  for (std::size_t center : {kCap / 4 - 16 - 8, kCap / 4, kCap - 8, kCap, 2 * kCap, 3 * kCap / 2})
    for (std::size_t n = center - 20; n <= center + 20; ++n) sizes.push_back(n);
  sizes.push_back(0);
  sizes.push_back(1);

  mproc::Queue<std::vector<std::byte>> q(mproc::QueueOptions{.buffer_bytes = kCap});
  std::thread producer([q, sizes]() mutable {
    for (std::size_t i = 0; i < sizes.size(); ++i) q.put(pattern(sizes[i], i));
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto m = q.get(10s);
    ASSERT_TRUE(m.has_value()) << "message " << i << " of " << sizes[i] << " bytes";
    EXPECT_TRUE(has_pattern(*m, sizes[i], i)) << "message " << i << " of " << sizes[i] << " bytes";
  }
  producer.join();
  EXPECT_TRUE(q.empty());
}

TEST(Queue, TimedOutPutMidMessageIsAbortedAndSkipped) {
  mproc::Queue<std::vector<std::byte>> q(mproc::QueueOptions{.buffer_bytes = 4096});
  // Nobody reads: the ring fills in the middle of the message and the put gives up.
  EXPECT_FALSE(q.put(pattern(50'000, 1), 30ms));
  std::thread producer([q]() mutable { q.put(pattern(20'000, 2)); });
  auto m = q.get(10s);  // drops the abandoned part, then takes the next message
  producer.join();
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(has_pattern(*m, 20'000, 2));
  EXPECT_EQ(q.try_get(), std::nullopt);
}

// ---- close ------------------------------------------------------------------------------

TEST(Queue, CloseDrainsThenThrowsClosed) {
  mproc::Queue<int> q;
  q.put(1);
  q.put(2);
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_THROW(q.put(3), mproc::Closed);
  EXPECT_THROW((void)q.try_put(3), mproc::Closed);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(1s), 2);
  try {
    (void)q.get();
    ADD_FAILURE() << "get() on a closed, empty queue returned";
  } catch (const mproc::Closed& e) {
    EXPECT_STREQ(e.what(), "mproc::Queue is closed");
  }
  EXPECT_THROW((void)q.try_get(), mproc::Closed);
}

TEST(Queue, CloseWakesBlockedGetAndPutInOtherProcesses) {
  mproc::Queue<int> empty;
  mproc::Queue<int> full(1);
  full.put(0);
  mproc::Queue<int> ready;
  const auto expect_closed = [](auto call) {
    try {
      call();
    } catch (const mproc::Closed&) {
      return;
    }
    throw std::runtime_error("no Closed");
  };
  mproc::Process getter([=]() mutable {
    ready.put(1);
    expect_closed([&] { (void)empty.get(); });
  });
  mproc::Process putter([=]() mutable {
    ready.put(2);
    expect_closed([&] { full.put(1); });
  });
  getter.start();
  putter.start();
  ASSERT_TRUE(ready.get(10s).has_value());
  ASSERT_TRUE(ready.get(10s).has_value());
  std::this_thread::sleep_for(50ms);  // let them block (the test passes either way)
  empty.close();
  full.close();
  EXPECT_EQ(finish(getter, 10s), 0);
  EXPECT_EQ(finish(putter, 10s), 0);
}

// ---- many producers and consumers -------------------------------------------------------

// n producer processes and n consumer processes move a million uint64 messages; the
// consumers' counts, sums and sums of squares prove that none was lost or duplicated.
class QueueStress : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(QueueStress, ProducersAndConsumersMoveAMillionMessages) {
  const std::uint64_t procs_each = GetParam();
  constexpr std::uint64_t kTotal = 1'000'000;
  const std::uint64_t each = kTotal / procs_each;
  mproc::Queue<std::uint64_t> q;
  mproc::Queue<std::array<std::uint64_t, 3>> results;
  std::vector<mproc::Process> procs;
  for (std::uint64_t p = 0; p < procs_each; ++p) {
    procs.emplace_back([q, p, each]() mutable {
      for (std::uint64_t i = 1; i <= each; ++i) q.put(p * each + i);  // 1 .. kTotal
    });
  }
  for (std::uint64_t c = 0; c < procs_each; ++c) {
    procs.emplace_back([q, results]() mutable {
      std::array<std::uint64_t, 3> r{0, 0, 0};  // count, sum, sum of squares (mod 2^64)
      for (;;) {
        const auto v = q.get(60s);
        if (!v) throw std::runtime_error("consumer starved");
        if (*v == 0) break;
        r[0] += 1;
        r[1] += *v;
        r[2] += *v * *v;
      }
      results.put(r);
    });
  }
  for (auto& p : procs) p.start();
  for (std::uint64_t p = 0; p < procs_each; ++p) EXPECT_EQ(finish(procs[p], 90s), 0);
  for (std::uint64_t c = 0; c < procs_each; ++c) q.put(0);
  std::array<std::uint64_t, 3> total{0, 0, 0};
  for (std::uint64_t c = 0; c < procs_each; ++c) {
    auto r = results.get(30s);
    ASSERT_TRUE(r.has_value());
    for (int k = 0; k < 3; ++k) total[k] += (*r)[k];
  }
  for (std::uint64_t c = 0; c < procs_each; ++c) EXPECT_EQ(finish(procs[procs_each + c], 30s), 0);
  std::uint64_t squares = 0;
  for (std::uint64_t v = 1; v <= kTotal; ++v) squares += v * v;
  EXPECT_EQ(total[0], kTotal);
  EXPECT_EQ(total[1], kTotal * (kTotal + 1) / 2);
  EXPECT_EQ(total[2], squares);
  EXPECT_TRUE(q.empty());
}

INSTANTIATE_TEST_SUITE_P(Processes, QueueStress, ::testing::Values(1, 2, 4, 8),
                         [](const auto& test) {
                           const auto n = std::to_string(test.param);
                           return n + "x" + n;
                         });

TEST(Queue, ThreadsOfOneProcessShareAQueue) {
  mproc::Queue<int> q(64);
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < 3; ++p)
    threads.emplace_back([q, p]() mutable {
      for (int i = 1; i <= 20'000; ++i) q.put(p * 20'000 + i);
    });
  for (int c = 0; c < 3; ++c)
    threads.emplace_back([q, &sum]() mutable {
      for (int i = 0; i < 20'000; ++i) {
        auto v = q.get(30s);
        if (!v) return;
        sum += *v;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(sum.load(), 60'000L * 60'001 / 2);
}

// ---- killed processes -------------------------------------------------------------------

// A consumer is SIGKILLed while it reads; the producer and the next consumer carry on, and
// every message the survivor receives is intact, in order, and the stream reaches its end.
void kill_consumer_mid_stream(std::uint64_t messages, std::size_t words, std::uint64_t kill_after) {
  mproc::Queue<std::vector<std::uint64_t>> q;
  mproc::Queue<int> progress;
  mproc::Process producer([=]() mutable {
    for (std::uint64_t id = 1; id <= messages; ++id) q.put(make_message(id, words));
  });
  mproc::Process victim([=]() mutable {
    for (std::uint64_t n = 1;; ++n) {
      auto m = q.get(30s);
      if (!m || !intact(*m)) throw std::runtime_error("victim saw a bad message");
      if (n == kill_after) progress.put(1);
    }
  });
  producer.start();
  victim.start();
  ASSERT_TRUE(progress.get(30s).has_value());
  victim.kill();
  EXPECT_EQ(finish(victim, 10s), -9);

  std::uint64_t last = 0, received = 0;
  while (last != messages) {
    auto m = q.get(30s);
    ASSERT_TRUE(m.has_value()) << "the survivor starved after message " << last;
    ASSERT_TRUE(intact(*m)) << "corrupt message after " << last;
    ASSERT_GT((*m)[0], last) << "out of order or duplicated";
    last = (*m)[0];
    ++received;
  }
  EXPECT_GT(received, 0u);
  EXPECT_EQ(finish(producer, 30s), 0);
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST(QueueCrash, ConsumerKilledWhileReadingSmallMessages) {
  kill_consumer_mid_stream(300'000, 2, 20'000);
}

TEST(QueueCrash, ConsumerKilledWhileReadingMultiFrameMessages) {
  // 2 MiB messages through a 1 MiB ring: the victim is almost always inside one.
  kill_consumer_mid_stream(40, 256 * 1024, 3);
}

TEST(QueueCrash, ConsumerKilledInsideAMessageLeavesOrphansThatAreDiscarded) {
  // The producer is stopped in the middle of a 16 MiB message, so the victim is certainly
  // inside it (holding the consumer lock, waiting for the rest) when it is killed.
  constexpr std::size_t kBig = std::size_t{16} << 20;
  mproc::Queue<std::vector<std::byte>> q;
  mproc::Process producer([q]() mutable {
    q.put(pattern(kBig, 1));
    q.put(pattern(3000, 2));
  });
  producer.start();
  ASSERT_TRUE(eventually([&] { return q.size() == 1; })) << "the message never started";
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::kill(producer.pid(), SIGSTOP), 0);
  mproc::Process victim([q]() mutable { (void)q.get(); });
  victim.start();
  const bool victim_took_it = eventually([&] { return q.size() == 0; });
  std::this_thread::sleep_for(20ms);
  victim.kill();
  EXPECT_EQ(finish(victim, 10s), -9);
  ASSERT_EQ(::kill(producer.pid(), SIGCONT), 0);
  ASSERT_TRUE(victim_took_it) << "the victim never started reading";
  // The rest of the big message arrives with nobody inside it: orphans, discarded.
  auto m = q.get(30s);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(has_pattern(*m, 3000, 2));
  EXPECT_EQ(finish(producer, 30s), 0);
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST(QueueCrash, ProducerKilledMidMessageIsDiscarded) {
  constexpr std::size_t kBig = std::size_t{64} << 20;
  for (const bool consumer_first : {true, false}) {
    SCOPED_TRACE(consumer_first ? "the waiting consumer recovers" : "the next producer recovers");
    mproc::Queue<std::vector<std::byte>> q;
    // With no consumer yet, the producer fills the ring and blocks inside its message.
    mproc::Process dying([q]() mutable { q.put(pattern(kBig, 1)); });
    dying.start();
    ASSERT_TRUE(eventually([&] { return q.size() == 1; })) << "the message never started";
    std::this_thread::sleep_for(20ms);
    dying.kill();
    EXPECT_EQ(finish(dying, 10s), -9);

    mproc::Process next([q]() mutable { q.put(pattern(5000, 2)); });
    std::optional<std::vector<std::byte>> got;
    if (consumer_first) {
      // The consumer reads the partial message, waits for the rest, finds its producer
      // dead, aborts it, and then takes the next message.
      std::thread consumer([&] { got = q.get(30s); });
      std::this_thread::sleep_for(100ms);
      next.start();
      consumer.join();
    } else {
      // The next producer takes the lock from the dead one and aborts its message.
      next.start();
      got = q.get(30s);
    }
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(has_pattern(*got, 5000, 2));
    EXPECT_EQ(finish(next, 10s), 0);
    EXPECT_EQ(q.try_get(), std::nullopt);
    EXPECT_EQ(q.size(), 0u);
  }
}

// ---- JoinableQueue ----------------------------------------------------------------------

TEST(JoinableQueue, JoinWaitsForTaskDoneInAnotherProcess) {
  mproc::JoinableQueue<int> q;
  mproc::Queue<int> go;
  for (int i = 0; i < 100; ++i) q.put(i);
  EXPECT_FALSE(q.join(20ms));
  mproc::Process worker([=]() mutable {
    (void)go.get(30s);
    for (int i = 0; i < 100; ++i) {
      if (q.get(30s) != i) throw std::runtime_error("wrong item");
      q.task_done();
    }
  });
  worker.start();
  EXPECT_FALSE(q.join(20ms));
  go.put(1);
  EXPECT_TRUE(q.join(30s));
  q.join();
  EXPECT_EQ(finish(worker), 0);
}

TEST(JoinableQueue, TaskDoneTooOftenThrows) {
  mproc::JoinableQueue<int> q;
  EXPECT_THROW(q.task_done(), std::logic_error);
  q.put(1);
  q.put(2);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  EXPECT_FALSE(q.join(10ms));
  EXPECT_EQ(q.get(), 2);
  q.task_done();
  EXPECT_THROW(q.task_done(), std::logic_error);
  EXPECT_TRUE(q.join(1s));
}

TEST(JoinableQueue, AnAbandonedPutIsNotUnfinished) {
  mproc::JoinableQueue<std::vector<std::byte>> q(mproc::QueueOptions{.buffer_bytes = 4096});
  EXPECT_FALSE(q.put(pattern(100'000, 1), 20ms));  // started, then aborted
  EXPECT_TRUE(q.join(10ms));
  EXPECT_THROW(q.task_done(), std::logic_error);
}

// ---- Pipe -------------------------------------------------------------------------------

TEST(Pipe, IsDuplexAcrossAProcess) {
  auto [a, b] = mproc::Pipe<int>();
  EXPECT_FALSE(a.poll());
  EXPECT_FALSE(a.poll(10ms));
  mproc::Process child([b = b]() mutable {
    for (;;) {
      const int v = b.recv();
      if (v < 0) break;
      b.send(2 * v);
    }
  });
  child.start();
  for (int i = 0; i < 1000; ++i) {
    a.send(i);
    auto r = a.recv(10s);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(*r, 2 * i);
  }
  a.send(21);
  EXPECT_TRUE(a.poll(10s));
  EXPECT_EQ(a.recv(), 42);
  a.send(-1);
  EXPECT_EQ(finish(child), 0);
}

TEST(Pipe, CloseLetsThePeerDrainThenThrowsClosed) {
  auto [a, b] = mproc::Pipe<std::string>();
  a.send("one");
  a.send("two");
  a.close();
  EXPECT_TRUE(b.closed());
  EXPECT_THROW(b.send("back"), mproc::Closed);
  EXPECT_THROW(a.send("three"), mproc::Closed);
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv(), "one");
  EXPECT_EQ(b.recv(1s), "two");
  try {
    (void)b.recv();
    ADD_FAILURE() << "recv() on a closed, drained pipe returned";
  } catch (const mproc::Closed& e) {
    EXPECT_STREQ(e.what(), "mproc::Connection is closed");
  }
  EXPECT_THROW((void)a.recv(), mproc::Closed);
}

TEST(Pipe, CarriesABigMessageBothWays) {
  constexpr std::size_t kSize = std::size_t{32} << 20;
  auto [a, b] = mproc::Pipe<std::vector<std::byte>>(64 * 1024);
  mproc::Process echo([b = b]() mutable { b.send(b.recv()); });
  echo.start();
  a.send(pattern(kSize, 3));
  auto back = a.recv(60s);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(has_pattern(*back, kSize, 3));
  EXPECT_EQ(finish(echo), 0);
}

// ---- handles ----------------------------------------------------------------------------

TEST(QueueHandles, ALoadedHandleSharesTheQueue) {
  mproc::Queue<int> q(5);
  const auto bytes = mproc::dumps(q);
  EXPECT_LT(bytes.size(), 64u) << "a handle travels as the segment's address";
  mproc::Queue<int> copy;
  mproc::loads_into(bytes, copy);
  EXPECT_TRUE(copy == q);
  EXPECT_EQ(copy.maxsize(), 5u);
  copy.put(42);
  EXPECT_EQ(q.get(1s), 42);

  mproc::JoinableQueue<int> jq;
  auto as_queue = mproc::loads<mproc::Queue<int>>(mproc::dumps(jq));  // a JoinableQueue is a Queue
  as_queue.put(1);
  EXPECT_EQ(jq.get(1s), 1);
  EXPECT_THROW((void)mproc::loads<mproc::JoinableQueue<int>>(mproc::dumps(q)),
               mproc::SharedStateError);
  mproc::SimpleQueue<int> sq;
  EXPECT_THROW((void)mproc::loads<mproc::Queue<int>>(mproc::dumps(sq)), mproc::SharedStateError);

  auto [a, b] = mproc::Pipe<int>();
  auto b2 = mproc::loads<mproc::Connection<int>>(mproc::dumps(b));
  a.send(7);
  EXPECT_EQ(b2.recv(1s), 7);
  b2.send(8);
  EXPECT_EQ(a.recv(1s), 8);
  EXPECT_THROW((void)mproc::loads<mproc::Queue<int>>(mproc::dumps(a)), mproc::SharedStateError);
}

void put_in(mproc::Queue<int> q, int v) { q.put(v); }

TEST(QueueHandles, PoolWorkersPutIntoAQueueCreatedAfterThePoolStarted) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  (void)pool.apply([](int x) { return x; }, 1);  // the workers exist before the queue
  mproc::Queue<int> q;
  pool.apply(put_in, q, 42);
  EXPECT_EQ(q.get(10s), 42);
  pool.apply(put_in, q, 43);
  EXPECT_EQ(q.get(10s), 43);
}

TEST(QueueHandles, NoFdLeaksEvenAfterAKilledChild) {
  {
    mproc::Queue<int> warm;  // first use raises the fd limit and builds the registries
    warm.put(1);
  }
  const std::size_t before = open_fds();
  {
    mproc::Queue<int> q;
    mproc::JoinableQueue<std::string> jq;
    mproc::SimpleQueue<int> sq;
    auto [a, b] = mproc::Pipe<int>();
    q.put(1);
    jq.put("x");
    sq.put(2);
    a.send(3);
    EXPECT_EQ(b.recv(1s), 3);
    auto copy = mproc::loads<mproc::Queue<int>>(mproc::dumps(q));
    EXPECT_EQ(copy.get(1s), 1);
    mproc::Process child([=]() mutable {
      for (;;) (void)q.get();
    });
    child.start();
    q.put(5);
    std::this_thread::sleep_for(20ms);
    child.kill();
    EXPECT_EQ(finish(child, 10s), -9);
  }
  EXPECT_EQ(open_fds(), before);
}

}  // namespace
