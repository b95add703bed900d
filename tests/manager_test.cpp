// Tests of mproc::Manager, SharedDict and SharedList: the operations, counting words from
// several processes (with a Lock, with merge(), and the lost updates of neither), handles
// shipped to Pool workers, processes SIGKILLed inside operations, and fd and memory leaks.
#include "mproc/manager.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <unistd.h>

#include "mproc/bind.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/serialize.hpp"
#include "mproc/sync.hpp"

namespace {

using namespace std::chrono_literals;
using ::testing::UnorderedElementsAre;

// Every child is joined with a deadline: a hang fails the test instead of stalling it.
constexpr auto kJoinTimeout = 60s;

/// Starts a child running f and returns it.
template <class F>
mproc::Process spawn(F f) {
  mproc::Process p(std::move(f));
  p.start();
  return p;
}

/// Joins within the deadline (killing the child if it hangs) and returns its exit code.
int join_within(mproc::Process& p, std::chrono::seconds timeout = kJoinTimeout) {
  if (!p.join(timeout)) {
    p.kill();
    p.join();
    ADD_FAILURE() << "child " << p.pid() << " did not finish within " << timeout.count() << " s";
    return -1000;
  }
  return p.exitcode().value_or(-1000);
}

/// Runs f in a child and expects it to return within the deadline with exit code 0 (an
/// exception makes the code 1). For the first operations after a crash, which must not hang.
template <class F>
void expect_in_child(F f) {
  mproc::Process p = spawn(std::move(f));
  EXPECT_EQ(join_within(p), 0);
}

/// A child that throws on a failed check, so that its exit code tells.
void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// ---- dict -------------------------------------------------------------------------------

TEST(SharedDict, GetSetAtContainsEraseSizeClear) {
  mproc::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.get("a"), std::nullopt);
  EXPECT_EQ(d.get("a", 7), 7);
  EXPECT_THROW(d.at("a"), std::out_of_range);

  d.set("a", 1);
  d.set("b", 2);
  d.set("", -3);
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.get("a"), 1);
  EXPECT_EQ(d.at("b"), 2);
  EXPECT_EQ(d.at(""), -3);
  EXPECT_TRUE(d.contains("a"));
  EXPECT_FALSE(d.contains("c"));

  d.set("a", 10);
  EXPECT_EQ(d.at("a"), 10);
  EXPECT_EQ(d.size(), 3u);

  EXPECT_TRUE(d.erase("a"));
  EXPECT_FALSE(d.erase("a"));
  EXPECT_FALSE(d.contains("a"));
  EXPECT_EQ(d.size(), 2u);
  EXPECT_THAT(d.items(), UnorderedElementsAre(std::pair<std::string, int>("b", 2),
                                              std::pair<std::string, int>("", -3)));
  EXPECT_THAT(d.keys(), UnorderedElementsAre("b", ""));

  d.clear();
  EXPECT_TRUE(d.empty());
  EXPECT_TRUE(d.items().empty());
  d.set("after", 1);
  EXPECT_EQ(d.at("after"), 1);
}

TEST(SharedDict, ValuesChangingBetweenInlineAndOutOfLineSizes) {
  mproc::Manager m;
  auto vecs = m.dict<std::string, std::vector<double>>();
  // An empty vector encodes to 8 bytes (kept in the entry); longer ones live in blocks.
  for (std::size_t n : {0u, 1u, 100u, 3u, 0u, 1000u, 2u}) {
    std::vector<double> v(n);
    std::iota(v.begin(), v.end(), 0.5);
    vecs.set("v", v);
    EXPECT_EQ(vecs.at("v"), v);
  }
  auto strs = m.dict<std::string, std::string>();
  for (const std::string& s :
       std::vector<std::string>{"", "x", std::string(5000, 'y'), "short", std::string(17, 'z')}) {
    strs.set(s, s + "!");
    EXPECT_EQ(strs.at(s), s + "!");
  }
  EXPECT_EQ(strs.size(), 5u);
  EXPECT_EQ(strs.at(std::string(5000, 'y')), std::string(5000, 'y') + "!");

  // Blocks of 1 MiB and more give their pages back when freed, and are reused intact.
  const std::string big(3 << 20, 'B');
  const std::string other(3 << 20, 'O');
  strs.set("big", big);
  const std::size_t used = m.bytes_used();
  strs.set("big", other);
  strs.set("big", big);
  EXPECT_EQ(strs.at("big"), big);
  EXPECT_EQ(m.bytes_used(), used);
}

TEST(SharedDict, ManyKeysGrowTheTable) {
  mproc::Manager m;
  auto d = m.dict<std::string, int>();
  constexpr int n = 100'000;
  for (int i = 0; i < n; ++i) d.set("key" + std::to_string(i), i);
  ASSERT_EQ(d.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ASSERT_EQ(d.at("key" + std::to_string(i)), i) << i;
  for (int i = 0; i < n; i += 2) ASSERT_TRUE(d.erase("key" + std::to_string(i)));
  EXPECT_EQ(d.size(), static_cast<std::size_t>(n / 2));
  for (int i = 0; i < n; ++i) ASSERT_EQ(d.contains("key" + std::to_string(i)), i % 2 == 1) << i;
  const auto items = d.items();
  ASSERT_EQ(items.size(), static_cast<std::size_t>(n / 2));
  for (const auto& [k, v] : items) EXPECT_EQ(k, "key" + std::to_string(v));
}

TEST(SharedDict, UpdateIsReadModifyWrite) {
  mproc::Manager m;
  auto d = m.dict<std::string, long>();
  const auto add_one = [](std::optional<long> old) { return old.value_or(0) + 1; };
  EXPECT_EQ(d.update("n", add_one), 1);
  EXPECT_EQ(d.update("n", add_one), 2);
  EXPECT_EQ(d.at("n"), 2);

  // A throwing callback changes nothing.
  EXPECT_THROW(d.update("n", [](std::optional<long>) -> long { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_THROW(d.update("m", [](std::optional<long>) -> long { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_EQ(d.at("n"), 2);
  EXPECT_FALSE(d.contains("m"));

  // The callback runs with the arena locked: using the same manager there is an error,
  // not a deadlock, and the arena stays usable.
  auto other = m.dict<std::string, long>();
  EXPECT_THROW(d.update("n", [&](std::optional<long> old) { return other.get("x", 0) + *old; }),
               std::logic_error);
  EXPECT_EQ(d.update("n", add_one), 3);
}

TEST(SharedDict, MergeAddsPresentKeysAndInsertsAbsentOnes) {
  mproc::Manager m;
  auto d = m.dict<std::string, long>();
  d.set("a", 10);
  d.merge(std::map<std::string, long>{{"a", 1}, {"b", 2}});
  EXPECT_EQ(d.at("a"), 11);
  EXPECT_EQ(d.at("b"), 2);

  // Other ranges of pairs, converted keys and values, repeated keys, a custom op.
  d.merge(std::unordered_map<std::string, int>{{"b", 5}, {"c", 1}});
  d.merge(std::vector<std::pair<const char*, long>>{{"c", 1}, {"c", 1}});
  EXPECT_EQ(d.at("b"), 7);
  EXPECT_EQ(d.at("c"), 3);
  d.merge(std::map<std::string, long>{{"a", 5}, {"b", 100}},
          [](long old, long incoming) { return std::max(old, incoming); });
  EXPECT_EQ(d.at("a"), 11);
  EXPECT_EQ(d.at("b"), 100);
  d.merge(std::map<std::string, long>{});
  EXPECT_EQ(d.size(), 3u);

  auto words = m.dict<std::string, std::string>();
  words.merge(std::map<std::string, std::string>{{"x", "ab"}});
  words.merge(std::map<std::string, std::string>{{"x", "cd"}});
  EXPECT_EQ(words.at("x"), "abcd");
}

TEST(SharedDict, ThreadsUpdatingOneKeyLoseNothing) {
  mproc::Manager m;
  auto d = m.dict<std::string, long>();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([d]() mutable {
      for (int i = 0; i < 20'000; ++i)
        d.update("n", [](std::optional<long> o) { return o.value_or(0) + 1; });
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(d.at("n"), 80'000);
}

// ---- list -------------------------------------------------------------------------------

TEST(SharedList, AppendExtendGetSetSizeToVector) {
  mproc::Manager m;
  auto l = m.list<int>();
  EXPECT_TRUE(l.empty());
  EXPECT_THROW(l.at(0), std::out_of_range);
  l.append(1);
  l.extend(std::vector<int>{2, 3, 4});
  EXPECT_EQ(l.size(), 4u);
  EXPECT_EQ(l.get(0), 1);
  EXPECT_EQ(l.at(3), 4);
  EXPECT_THROW(l.get(4), std::out_of_range);
  l.set(1, 20);
  EXPECT_THROW(l.set(4, 0), std::out_of_range);
  EXPECT_EQ(l.to_vector(), (std::vector<int>{1, 20, 3, 4}));
  for (int i = 0; i < 10'000; ++i) l.append(i);
  EXPECT_EQ(l.size(), 10'004u);
  EXPECT_EQ(l.at(10'003), 9'999);
  l.clear();
  EXPECT_TRUE(l.empty());
  l.append(5);
  EXPECT_EQ(l.to_vector(), std::vector<int>{5});

  auto strs = m.list<std::string>();
  strs.extend(std::vector<std::string>{"", "1234567", std::string(300, 'q')});
  strs.set(0, std::string(50, 'w'));
  strs.set(2, "z");
  EXPECT_EQ(strs.to_vector(), (std::vector<std::string>{std::string(50, 'w'), "1234567", "z"}));

  auto vecs = m.list<std::vector<double>>();
  vecs.append({1.5, 2.5});
  vecs.append({});
  EXPECT_EQ(vecs.at(0), (std::vector<double>{1.5, 2.5}));
  EXPECT_TRUE(vecs.at(1).empty());
}

// ---- handles ------------------------------------------------------------------------------

TEST(Manager, ForkedChildrenShareTheDictsAndLists) {
  mproc::Manager m;
  auto d = m.dict<std::string, int>();
  auto l = m.list<std::string>();
  d.set("parent", 1);
  mproc::Process child = spawn([&] {
    require(d.at("parent") == 1, "child sees the parent's set");
    d.set("child", 2);
    l.append("from child");
  });
  ASSERT_EQ(join_within(child), 0);
  EXPECT_EQ(d.at("child"), 2);
  EXPECT_EQ(l.to_vector(), std::vector<std::string>{"from child"});
}

TEST(Manager, HandlesRoundTripThroughSerialization) {
  mproc::Manager m;
  auto d = m.dict<std::string, int>();
  d.set("a", 1);
  auto d2 = mproc::loads<mproc::SharedDict<std::string, int>>(mproc::dumps(d));
  d2.set("b", 2);
  EXPECT_EQ(d.at("b"), 2);
  auto m2 = mproc::loads<mproc::Manager>(mproc::dumps(m));
  auto l = m2.list<int>();
  l.append(1);
  EXPECT_EQ(m2.bytes_used(), m.bytes_used());

  // A handle decoded as the wrong types, or as the wrong kind of object, is refused.
  EXPECT_THROW((mproc::loads<mproc::SharedDict<std::string, long>>(mproc::dumps(d))),
               mproc::SharedStateError);
  EXPECT_THROW((mproc::loads<mproc::SharedList<int>>(mproc::dumps(d))), mproc::SharedStateError);
  EXPECT_THROW((mproc::loads<mproc::SharedDict<std::string, int>>(mproc::dumps(l))),
               mproc::SharedStateError);
  EXPECT_THROW((mproc::loads<mproc::Manager>(mproc::dumps(d))), mproc::SharedStateError);
}

TEST(Manager, EmptyHandlesThrowLogicError) {
  mproc::SharedDict<std::string, int> d;
  mproc::SharedList<int> l;
  EXPECT_THROW(d.set("a", 1), std::logic_error);
  EXPECT_THROW((void)d.size(), std::logic_error);
  EXPECT_THROW(l.append(1), std::logic_error);
}

int put_square(mproc::SharedDict<std::string, int> d, int i) {
  d.set("k" + std::to_string(i), i * i);
  return i;
}

int append_to(mproc::SharedList<int> l, int i) {
  l.append(i);
  return i;
}

mproc::SharedDict<std::string, int> make_dict(mproc::Manager m, int i) {
  auto d = m.dict<std::string, int>();
  d.set("made by", i);
  return d;
}

TEST(Manager, PoolWorkersWriteToADictCreatedAfterThePool) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  // Created after the workers were forked: they reach it through the handles.
  mproc::Manager m;
  auto d = m.dict<std::string, int>();
  auto l = m.list<int>();
  std::vector<int> items(200);
  std::iota(items.begin(), items.end(), 0);

  EXPECT_EQ(pool.map(mproc::bind(&put_square, d), items), items);
  ASSERT_EQ(d.size(), items.size());
  for (int i : items) EXPECT_EQ(d.at("k" + std::to_string(i)), i * i);

  std::vector<std::tuple<mproc::SharedList<int>, int>> args;
  for (int i : items) args.emplace_back(l, i);
  pool.starmap(&append_to, args);
  std::vector<int> got = l.to_vector();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, items);

  // A worker makes a dict in the shipped Manager and returns its handle.
  auto made = pool.map(mproc::bind(&make_dict, m), std::vector<int>{7, 8});
  ASSERT_EQ(made.size(), 2u);
  EXPECT_EQ(made[0].at("made by"), 7);
  EXPECT_EQ(made[1].at("made by"), 8);
}

// ---- namespace ----------------------------------------------------------------------------

struct Reading {
  std::string sensor;
  std::vector<double> values;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(sensor, values);
  }
  bool operator==(const Reading&) const = default;
};

TEST(SharedNamespace, AttributesOfEveryKindRoundTrip) {
  mproc::Manager m;
  auto ns = m.namespace_();
  ns.set("x", 1);
  ns.set("pi", 3.25);
  ns.set("label", "run");  // a literal is kept as a std::string
  ns.set("words", std::vector<std::string>{"a", "", "ccc"});
  ns.set("counts", std::map<std::string, long>{{"cat", 3}, {"dog", -4}});
  ns.set("reading", Reading{"t1", {0.5, -1.5, 1e300}});
  ns.set("maybe", std::optional<int>{});
  ns.set("big", std::string(100'000, 'b'));
  EXPECT_EQ(ns.get<int>("x"), 1);
  EXPECT_EQ(ns.get<double>("pi"), 3.25);
  EXPECT_EQ(ns.get<std::string>("label"), "run");
  EXPECT_EQ(ns.get<std::vector<std::string>>("words"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ((ns.get<std::map<std::string, long>>("counts")),
            (std::map<std::string, long>{{"cat", 3}, {"dog", -4}}));
  EXPECT_EQ(ns.get<Reading>("reading"), (Reading{"t1", {0.5, -1.5, 1e300}}));
  EXPECT_EQ(ns.get<std::optional<int>>("maybe"), std::nullopt);
  EXPECT_EQ(ns.get<std::string>("big"), std::string(100'000, 'b'));
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"big", "counts", "label", "maybe", "pi",
                                                   "reading", "words", "x"}));

  // An attribute takes the type it is set as last.
  ns.set("x", std::string("now text"));
  EXPECT_EQ(ns.get<std::string>("x"), "now text");
  EXPECT_EQ(ns.get("x", std::string("unused")), "now text");
  EXPECT_EQ(ns.get("absent", 17L), 17L);
  EXPECT_TRUE(ns.contains("pi"));
  EXPECT_TRUE(ns.erase("pi"));
  EXPECT_FALSE(ns.erase("pi"));
  EXPECT_FALSE(ns.contains("pi"));
}

TEST(SharedNamespace, AMissingAttributeIsAnAttributeErrorNamingIt) {
  mproc::Manager m;
  auto ns = m.namespace_();
  ns.set("present", 1);
  try {
    (void)ns.get<int>("colour");
    ADD_FAILURE() << "get of an attribute never set returned";
  } catch (const mproc::AttributeError& e) {
    EXPECT_EQ(e.name(), "colour");
    EXPECT_STREQ(e.what(), "mproc::SharedNamespace has no attribute 'colour'");
  }
  ns.set("gone", 2);
  ASSERT_TRUE(ns.erase("gone"));
  EXPECT_THROW((void)ns.get<int>("gone"), mproc::AttributeError);
  EXPECT_THROW((void)ns.get<int>("Present"), mproc::Error);  // names are case-sensitive

  // Read as another type: an error that names both, and the value stays as it was.
  try {
    (void)ns.get<long>("present");
    ADD_FAILURE() << "an int read as a long";
  } catch (const std::invalid_argument& e) {
    // The compiler spells the type: "long" or "long int".
    EXPECT_THAT(e.what(), ::testing::HasSubstr("'present' was set as int; get<long"));
  }
  EXPECT_THROW(ns.update<double>("present", [](std::optional<double> v) { return v.value_or(0); }),
               std::invalid_argument);
  EXPECT_EQ(ns.get<int>("present"), 1);

  mproc::SharedNamespace empty;
  EXPECT_THROW(empty.set("a", 1), std::logic_error);
}

TEST(SharedNamespace, SetInOneProcessIsSeenInAnother) {
  mproc::Manager m;
  auto ns = m.namespace_();
  ns.set("from parent", 10);
  mproc::Process writer = spawn([ns] {
    require(ns.get<int>("from parent") == 10, "the child sees the parent's attribute");
    ns.set("from child", std::string("written by ") + std::to_string(mproc::current_process().pid));
    ns.set("from parent", 11);
  });
  ASSERT_EQ(join_within(writer), 0);
  EXPECT_EQ(ns.get<std::string>("from child"), "written by " + std::to_string(writer.pid()));
  EXPECT_EQ(ns.get<int>("from parent"), 11);

  // A second child, started later, reads what the first one set.
  mproc::Process reader = spawn([ns] {
    require(ns.get<int>("from parent") == 11, "the second child sees the first one's set");
    require(!ns.contains("never"), "no attribute that nobody set");
    try {
      (void)ns.get<int>("never");
    } catch (const mproc::AttributeError& e) {
      if (e.name() == "never") std::_Exit(42);  // the error reached the child, named
    }
  });
  EXPECT_EQ(join_within(reader), 42);
}

long read_attribute(mproc::SharedNamespace ns, int i) {
  ns.set("seen by " + std::to_string(i), static_cast<long>(mproc::current_process().pid));
  return ns.get<long>("base") + i;
}

TEST(SharedNamespace, PoolWorkersReadAndSetAttributes) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  mproc::Manager m;  // made after the workers were forked: they reach it through the handle
  auto ns = m.namespace_();
  ns.set("base", 1000L);
  std::vector<int> items(50);
  std::iota(items.begin(), items.end(), 0);
  const std::vector<long> got = pool.map(mproc::bind(&read_attribute, ns), items);
  for (int i : items) {
    EXPECT_EQ(got[i], 1000 + i);
    const long pid = ns.get<long>("seen by " + std::to_string(i));
    EXPECT_NE(pid, static_cast<long>(getpid())) << "item " << i << " ran in the parent";
  }
  EXPECT_EQ(ns.names().size(), items.size() + 1);

  // A worker's AttributeError comes back as the task's error, naming the attribute.
  try {
    (void)pool.apply([](mproc::SharedNamespace n) { return n.get<long>("missing"); }, ns);
    ADD_FAILURE() << "the task returned";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("has no attribute 'missing'"));
  }
  auto again = mproc::loads<mproc::SharedNamespace>(mproc::dumps(ns));
  EXPECT_EQ(again.get<long>("base"), 1000L);
  // A dict's handle is not a namespace's, nor the other way round.
  const auto dict_bytes = mproc::dumps(m.dict<std::string, int>());
  EXPECT_THROW((void)mproc::loads<mproc::SharedNamespace>(dict_bytes), mproc::SharedStateError);
  using LongDict = mproc::SharedDict<std::string, long>;
  EXPECT_THROW((void)mproc::loads<LongDict>(mproc::dumps(ns)), mproc::SharedStateError);
}

TEST(SharedNamespace, ConcurrentIncrementsUnderALockCountExactly) {
  // Python: with lock: ns.count += 1, from several processes.
  constexpr int procs = 4;
  constexpr int per_proc = 20'000;
  mproc::Manager m;
  auto ns = m.namespace_();
  ns.set("count", 0L);
  ns.set("atomic", 0L);
  mproc::Lock lock;
  std::vector<mproc::Process> children;
  for (int p = 0; p < procs; ++p)
    children.push_back(spawn([&] {
      for (int i = 0; i < per_proc; ++i) {
        {
          std::lock_guard guard(lock);
          ns.set("count", ns.get<long>("count") + 1);
        }
        ns.update<long>("atomic", [](std::optional<long> n) { return n.value_or(0) + 1; });
      }
    }));
  for (auto& c : children) ASSERT_EQ(join_within(c), 0);
  EXPECT_EQ(ns.get<long>("count"), procs * per_proc);
  EXPECT_EQ(ns.get<long>("atomic"), procs * per_proc);
}

// ---- bag of words -------------------------------------------------------------------------

/// A deterministic text: words drawn from a fixed list by an LCG, skewed so that a few
/// words are hot.
std::vector<std::string> make_text(std::size_t n) {
  static const char* const kWords[] = {
      "the",    "of",      "and",       "to",      "in",   "process", "pool",   "lock",
      "queue",  "value",   "array",     "manager", "dict", "list",    "fork",   "pipe",
      "event",  "barrier", "semaphore", "worker",  "task", "result",  "future", "map",
      "reduce", "shared",  "memory",    "signal",  "kill", "join",    "start",  "daemon"};
  constexpr std::uint64_t n_words = sizeof kWords / sizeof kWords[0];
  std::vector<std::string> text;
  text.reserve(n);
  std::uint64_t x = 42;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const std::uint64_t a = (x >> 33) % n_words;
    const std::uint64_t b = (x >> 17) % n_words;
    text.emplace_back(kWords[a * b / n_words]);
  }
  return text;
}

std::map<std::string, long> count_serially(const std::vector<std::string>& text) {
  std::map<std::string, long> counts;
  for (const auto& w : text) ++counts[w];
  return counts;
}

template <class K, class V>
std::map<K, V> as_map(const mproc::SharedDict<K, V>& d) {
  const auto items = d.items();
  return std::map<K, V>(items.begin(), items.end());
}

class BagOfWords : public ::testing::TestWithParam<int> {};

TEST_P(BagOfWords, GetAndSetUnderALockCountExactly) {
  const int procs = GetParam();
  const auto text = make_text(40'000);
  mproc::Manager m;
  auto counts = m.dict<std::string, long>();
  mproc::Lock lock;
  std::vector<mproc::Process> children;
  for (int p = 0; p < procs; ++p)
    children.push_back(spawn([&, p] {
      for (std::size_t i = text.size() * p / procs; i < text.size() * (p + 1) / procs; ++i) {
        std::lock_guard guard(lock);  // Python: with lock: d[w] = d.get(w, 0) + 1
        counts.set(text[i], counts.get(text[i], 0) + 1);
      }
    }));
  for (auto& c : children) ASSERT_EQ(join_within(c), 0);
  EXPECT_EQ(as_map(counts), count_serially(text));
}

TEST_P(BagOfWords, MergeOfLocalCountsCountsExactly) {
  const int procs = GetParam();
  const auto text = make_text(200'000);
  mproc::Manager m;
  auto counts = m.dict<std::string, long>();
  std::vector<mproc::Process> children;
  for (int p = 0; p < procs; ++p)
    children.push_back(spawn([&, p] {
      // Count in chunks so that merges from different processes interleave.
      std::unordered_map<std::string, long> local;
      const std::size_t end = text.size() * (p + 1) / procs;
      for (std::size_t i = text.size() * p / procs; i < end; ++i) {
        ++local[text[i]];
        if (i % 5000 == 0 || i + 1 == end) {
          counts.merge(local);
          local.clear();
        }
      }
    }));
  for (auto& c : children) ASSERT_EQ(join_within(c), 0);
  EXPECT_EQ(as_map(counts), count_serially(text));
}

INSTANTIATE_TEST_SUITE_P(Processes, BagOfWords, ::testing::Values(1, 2, 4, 8));

TEST(BagOfWordsWithoutALock, GetThenSetLosesUpdates) {
  // Each get() and each set() is atomic, but the pair is not: two processes that read the
  // same count both write count + 1, and one increment is lost. Interleaving depends on
  // scheduling, so several rounds run and at least one must come out short.
  constexpr int procs = 4;
  constexpr long per_proc = 20'000;
  const std::vector<std::string> hot = {"the", "of", "and"};
  bool lost = false;
  for (int round = 0; round < 10 && !lost; ++round) {
    mproc::Manager m;
    auto counts = m.dict<std::string, long>();
    mproc::Event go;
    std::vector<mproc::Process> children;
    for (int p = 0; p < procs; ++p)
      children.push_back(spawn([&] {
        require(go.wait(30s), "start signal");
        for (long i = 0; i < per_proc; ++i) {
          const std::string& w = hot[static_cast<std::size_t>(i) % hot.size()];
          counts.set(w, counts.get(w, 0) + 1);
        }
      }));
    go.set();
    for (auto& c : children) ASSERT_EQ(join_within(c), 0);
    long total = 0;
    for (const auto& [w, n] : counts.items()) total += n;
    EXPECT_LE(total, procs * per_proc);
    lost = total < procs * per_proc;
  }
  EXPECT_TRUE(lost) << "10 rounds of unlocked get+set from 4 processes lost no update";
}

// ---- crashes ------------------------------------------------------------------------------

std::string key_of(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "k%03d", i);
  return buf;
}

// snprintf rather than chained operator+, which trips GCC 12's bogus -Wrestrict (PR 105329).
std::string fresh_key(long round, int j) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "n%ld_%d", round, j);
  return buf;
}

std::map<std::string, long> ones(int n) {
  std::map<std::string, long> m;
  for (int i = 0; i < n; ++i) m[key_of(i)] = 1;
  return m;
}

TEST(ManagerCrash, SigkillInsideAMergeLeavesItAppliedInPart) {
  mproc::Manager m;
  auto d = m.dict<std::string, long>();
  const auto local = ones(100);
  d.merge(local);
  mproc::Event inside;
  mproc::Process child = spawn([&] {
    int calls = 0;
    // The op runs with the arena's lock held: stall in the 50th, holding it, and be killed.
    d.merge(local, [&](long old, long add) {
      if (++calls == 50) {
        inside.set();
        for (;;) std::this_thread::sleep_for(1s);
      }
      return old + add;
    });
  });
  ASSERT_TRUE(inside.wait(30s));
  child.kill();
  ASSERT_EQ(join_within(child), -9);

  // The next operation takes the dead holder's lock (in a child, so that a hang is caught).
  expect_in_child([&] {
    require(d.size() == 100, "size");
    for (int i = 0; i < 100; ++i)
      require(d.at(key_of(i)) == (i < 49 ? 2 : 1), "pairs merged before the death, and only those");
  });
  d.merge(local);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(d.at(key_of(i)), i < 49 ? 3 : 2) << i;
}

// Checks what a process killed at any point must leave: every key readable, sizes that
// agree with the contents, no torn value, all-or-nothing extends.
void check_after_crash(mproc::SharedDict<std::string, long>& d,
                       mproc::SharedDict<std::string, std::vector<double>>& vecs,
                       mproc::SharedList<std::string>& l) {
  const auto items = d.items();
  require(d.size() == items.size(), "dict size equals its item count");
  require(d.keys().size() == items.size(), "keys");
  long lo = 1L << 40;
  long hi = 0;
  for (const auto& [k, v] : items) {
    require(d.at(k) == v, "every key readable");
    if (k[0] == 'k') {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  require(hi - lo <= 1, "a merge is applied in key order: counts differ by at most 1");
  const auto vec_items = vecs.items();
  require(vecs.size() == vec_items.size(), "vector dict size");
  for (const auto& [k, v] : vec_items)
    for (double x : v)
      require(x == static_cast<double>(v.size()), "a value is old or new, never torn");
  const auto elems = l.to_vector();
  require(elems.size() == l.size() && elems.size() % 3 == 0, "extend is all or nothing");
  for (const auto& e : elems) require(e == std::string(e.size(), 'e'), "list element intact");
}

TEST(ManagerCrash, SigkillAtRandomPointsOfAMergeLoopLeavesAConsistentArena) {
  // The child's inputs are made beforehand, so that it spends most of its time inside
  // operations (holding the arena lock) and the kills land at varied points of them.
  const auto local = ones(200);
  std::vector<std::map<std::string, long>> fresh(8);
  std::vector<std::vector<std::string>> fresh_keys(8);
  for (int r = 0; r < 8; ++r)
    for (int j = 0; j < 40; ++j) {
      fresh[r][fresh_key(r, j)] = j;
      fresh_keys[r].push_back(fresh_key(r, j));
    }
  std::vector<std::vector<double>> values;
  std::vector<std::string> value_keys;
  std::vector<std::vector<std::string>> triples;
  for (std::size_t n = 0; n < 23; ++n) {
    values.emplace_back(n, static_cast<double>(n));
    value_keys.push_back(fresh_key(static_cast<long>(n % 7), 0));
  }
  for (std::size_t n = 0; n < 13; ++n) triples.emplace_back(3, std::string(n, 'e'));

  for (int round = 0; round < 12; ++round) {
    mproc::Manager m;
    auto d = m.dict<std::string, long>();
    auto vecs = m.dict<std::string, std::vector<double>>();
    auto l = m.list<std::string>();
    mproc::Event running;
    mproc::Process child = spawn([&] {
      for (std::size_t it = 0;; ++it) {
        d.merge(local);
        // Keys come and go, so the kill can land in inserts, erases and table rebuilds.
        d.merge(fresh[it % 8]);
        for (const auto& k : fresh_keys[(it + 6) % 8]) d.erase(k);
        // Values switching between inline and out-of-line storage.
        vecs.set(value_keys[it % 23], values[it % 23]);
        vecs.update("u", [](std::optional<std::vector<double>> old) {
          const std::size_t k = old ? (old->size() + 5) % 40 : 0;
          return std::vector<double>(k, static_cast<double>(k));
        });
        l.extend(triples[it % 13]);
        if (it % 50 == 49) l.clear();
        if (it == 20) running.set();
      }
    });
    ASSERT_TRUE(running.wait(30s));
    std::this_thread::sleep_for(std::chrono::milliseconds(2 + 3 * round));
    child.kill();
    ASSERT_EQ(join_within(child), -9);

    expect_in_child([&] { check_after_crash(d, vecs, l); });
    check_after_crash(d, vecs, l);
    // Further merges work and add exactly once.
    const auto before = as_map(d);
    d.merge(local);
    for (const auto& [k, v] : as_map(d)) EXPECT_EQ(v, before.at(k) + (k[0] == 'k' ? 1 : 0)) << k;
    l.append("eee");
    EXPECT_EQ(l.at(l.size() - 1), "eee");
  }
}

// ---- crash points -------------------------------------------------------------------------
// The core can make a process kill itself between any two stores of a mutation (a test
// hook), so every window a SIGKILL could hit is tested, not only the ones a timed kill
// happens to land in.

using mproc::detail::ManagerCrashPoint;

struct CrashCase {
  ManagerCrashPoint point;
  int nth;
  // What the counters must say after the repair, once everything is cleared: exactly the
  // objects' own blocks (the death leaked nothing, or bytes_used would be off without the
  // repair), or more (it leaked a block, which stays counted).
  enum Leak { none, some, maybe } leak;
};

std::string long_string(char c, std::size_t n) { return std::string(n, c); }

class ManagerCrashPoints : public ::testing::TestWithParam<CrashCase> {};

TEST_P(ManagerCrashPoints, ADeathBetweenTwoStoresCorruptsNothing) {
  const CrashCase c = GetParam();
  mproc::Manager m;
  auto d = m.dict<std::string, long>();
  auto blobs = m.dict<std::string, std::string>();
  auto tmp = m.dict<int, long>();
  auto l = m.list<std::string>();
  const std::size_t objects_only = m.bytes_used();
  d.merge(ones(100));
  for (int i = 0; i < 10; ++i) blobs.set(key_of(i), long_string('a', 100));
  for (int i = 0; i < 20; ++i) tmp.set(i, i);
  l.extend(std::vector<std::string>(5, long_string('l', 30)));

  mproc::Process child = spawn([&] {
    mproc::detail::ManagerCore::crash_at_for_testing(c.point, c.nth);
    d.merge(ones(100));                                                        // inline values
    for (int j = 0; j < 200; ++j) d.set(fresh_key(0, j), j);                   // inserts, growth
    for (int i = 0; i < 10; ++i) blobs.set(key_of(i), long_string('b', 200));  // blocks replaced
    for (int j = 0; j < 100; ++j) d.erase(fresh_key(0, j));
    l.extend(std::vector<std::string>(3, long_string('m', 40)));
    tmp.clear();
  });
  ASSERT_EQ(join_within(child), -9) << "the crash point was not reached";

  const auto check = [&] {
    const auto items = d.items();
    require(d.size() == items.size(), "dict size equals its item count");
    bool merged = true;  // the merge of ones(100) reached k000 .. k(i-1)
    for (int i = 0; i < 100; ++i) {
      const long v = d.at(key_of(i));
      require(v == 1 || v == 2, "k value old or new");
      require(v == 1 || merged, "a merge is applied in key order");
      merged = v == 2;
    }
    for (const auto& [k, v] : items)
      if (k[0] == 'n') require(k == fresh_key(0, static_cast<int>(v)), "inserted value");
    require(blobs.size() == 10 && blobs.items().size() == 10, "blob dict size");
    for (int i = 0; i < 10; ++i) {
      const std::string v = blobs.at(key_of(i));
      require(v == long_string('a', 100) || v == long_string('b', 200), "value old or new");
    }
    const auto elems = l.to_vector();
    require(elems.size() == l.size() && (elems.size() == 5 || elems.size() == 8),
            "extend all or nothing");
    require(tmp.size() == tmp.items().size() && (tmp.size() == 20 || tmp.size() == 0), "clear");
  };
  expect_in_child(check);  // takes the dead holder's lock: must neither hang nor fail
  EXPECT_NO_THROW(check());

  // Everything still works, and once everything is cleared only leaks remain counted.
  d.merge(ones(100));
  EXPECT_GE(d.at(key_of(0)), 2);
  l.append("x");
  EXPECT_EQ(l.at(l.size() - 1), "x");
  d.clear();
  blobs.clear();
  tmp.clear();
  l.clear();
  const std::size_t after = m.bytes_used();
  switch (c.leak) {
    case CrashCase::none:
      EXPECT_EQ(after, objects_only);
      break;
    case CrashCase::some:
      EXPECT_GT(after, objects_only);
      break;
    case CrashCase::maybe:
      EXPECT_GE(after, objects_only);
      break;
  }
  EXPECT_LT(after, objects_only + (1u << 20));
}

const char* point_name(ManagerCrashPoint p) {
  static const char* const names[] = {"none",           "block_taken",    "block_freed",
                                      "insert_written", "insert_linked",  "table_installed",
                                      "value_written",  "value_switched", "erased",
                                      "dict_detached",  "list_filled"};
  return names[static_cast<int>(p)];
}

void PrintTo(const CrashCase& c, std::ostream* os) { *os << point_name(c.point) << " #" << c.nth; }

std::string crash_case_name(const ::testing::TestParamInfo<CrashCase>& info) {
  return std::string(point_name(info.param.point)) + "_" + std::to_string(info.param.nth);
}

INSTANTIATE_TEST_SUITE_P(
    Points, ManagerCrashPoints,
    ::testing::Values(CrashCase{ManagerCrashPoint::block_taken, 1, CrashCase::some},
                      CrashCase{ManagerCrashPoint::block_taken, 150, CrashCase::some},
                      CrashCase{ManagerCrashPoint::block_taken, 205, CrashCase::some},
                      CrashCase{ManagerCrashPoint::block_taken, 213, CrashCase::some},
                      CrashCase{ManagerCrashPoint::block_freed, 1, CrashCase::none},
                      CrashCase{ManagerCrashPoint::block_freed, 12, CrashCase::none},
                      CrashCase{ManagerCrashPoint::block_freed, 60, CrashCase::none},
                      CrashCase{ManagerCrashPoint::insert_written, 1, CrashCase::some},
                      CrashCase{ManagerCrashPoint::insert_written, 150, CrashCase::some},
                      CrashCase{ManagerCrashPoint::insert_linked, 1, CrashCase::none},
                      CrashCase{ManagerCrashPoint::insert_linked, 199, CrashCase::none},
                      CrashCase{ManagerCrashPoint::table_installed, 1, CrashCase::some},
                      CrashCase{ManagerCrashPoint::value_written, 50, CrashCase::none},
                      CrashCase{ManagerCrashPoint::value_written, 105, CrashCase::some},
                      CrashCase{ManagerCrashPoint::value_switched, 50, CrashCase::none},
                      CrashCase{ManagerCrashPoint::value_switched, 105, CrashCase::some},
                      CrashCase{ManagerCrashPoint::erased, 1, CrashCase::some},
                      CrashCase{ManagerCrashPoint::erased, 77, CrashCase::some},
                      CrashCase{ManagerCrashPoint::list_filled, 1, CrashCase::some},
                      CrashCase{ManagerCrashPoint::dict_detached, 1, CrashCase::some}),
    crash_case_name);

// ---- leaks --------------------------------------------------------------------------------

TEST(ManagerLeaks, NoFdOutlivesTheManagerAndItsHandles) {
  const std::size_t before = open_fds();
  {
    mproc::Manager m;
    auto d = m.dict<std::string, int>();
    auto l = m.list<int>();
    d.set("a", 1);
    l.append(1);
    mproc::Event running;
    mproc::Process child = spawn([&] {
      for (int i = 0;; ++i) {
        d.set("a", i);
        if (i == 100) running.set();
      }
    });
    ASSERT_TRUE(running.wait(30s));
    child.kill();
    ASSERT_EQ(join_within(child), -9);
    EXPECT_TRUE(d.contains("a"));
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(ManagerLeaks, SetAndEraseInALoopReusesFreedMemory) {
  mproc::Manager m;
  auto d = m.dict<std::string, std::vector<double>>();
  const auto round = [&](int r) {
    for (int i = 0; i < 200; ++i)
      d.set("key" + std::to_string(i),
            std::vector<double>(static_cast<std::size_t>((i + r) % 50), 1.0));
    for (int i = 0; i < 200; i += 3) d.erase("key" + std::to_string(i));
    for (int i = 0; i < 200; ++i) d.erase("key" + std::to_string(i));
  };
  for (int r = 0; r < 50; ++r) round(r);
  const std::size_t steady = m.bytes_used();
  EXPECT_GT(steady, 0u);
  for (int r = 50; r < 1000; ++r) round(r);
  EXPECT_LE(m.bytes_used(), steady);
  EXPECT_TRUE(d.empty());

  const std::size_t empty_dict = m.bytes_used();
  d.set("x", std::vector<double>(100000, 1.0));
  d.clear();
  EXPECT_LE(m.bytes_used(), empty_dict);
}

TEST(ManagerLeaks, AFullArenaThrowsAndStaysUsable) {
  mproc::Manager m({.capacity = 256 << 10});
  auto d = m.dict<int, std::string>();
  int n = 0;
  try {
    for (;; ++n) d.set(n, std::string(1000, 'x'));
  } catch (const std::length_error&) {
  }
  ASSERT_GT(n, 50);
  ASSERT_EQ(d.size(), static_cast<std::size_t>(n));
  EXPECT_FALSE(d.contains(n));
  for (int i = 0; i < n; ++i) ASSERT_EQ(d.at(i).size(), 1000u);
  for (int i = 0; i < 10; ++i) d.erase(i);
  for (int i = 0; i < 10; ++i) d.set(-1 - i, std::string(1000, 'y'));
  EXPECT_EQ(d.size(), static_cast<std::size_t>(n));
}

}  // namespace
