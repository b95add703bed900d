// Decoding forged handles to shared objects. A handle's bytes name a segment (pid, fd, id,
// size) and an offset in it; loads() must check every one of them against the segment as
// it really is before it touches the object, so that bytes changed in transit, by a bug
// or on purpose, give SerializationError or SharedStateError and never a crash or a hang.
//
// For every shared type: targeted forgeries (one field at a time: sizes and offsets that
// are huge, zero, off by one, misaligned or past the end, another object's segment), the
// same against a segment that this process has not mapped yet (it lives in a child), and
// a bounded deterministic fuzz over the handle bytes. A forgery that decodes at all must
// give the very object the handle was made from, unless a whole reference of another
// live object of the same type was spliced in.
#include <gtest/gtest.h>

#include "proc_counts.hpp"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/manager.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"

namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;

// Where the fields of a SegmentWire and the offset after it lie in a handle's bytes
// (serialize.hpp's wire format: the members in order, native little-endian).
constexpr std::size_t kPidAt = 0;
constexpr std::size_t kFdAt = 4;
constexpr std::size_t kIdAt = 8;
constexpr std::size_t kSizeAt = 16;
constexpr std::size_t kOffsetAt = 24;
constexpr std::size_t kRefBytes = 32;  // one segment reference: wire + offset

std::uint64_t get_u64(const Bytes& b, std::size_t at) {
  std::uint64_t v = 0;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
Bytes with_u64(Bytes b, std::size_t at, std::uint64_t v) {
  std::memcpy(b.data() + at, &v, sizeof v);
  return b;
}

using proc_counts::count_dir;
using proc_counts::mproc_mappings;
using proc_counts::open_fds;

// ---- the shared types ---------------------------------------------------------------------
//
// Subject<T>: make() creates a real object (Manager-made ones keep their arena alive
// through their own handle); same(original, decoded) tells by behaviour whether a decoded
// handle is that very object, using it as a program would; refs is how many segment
// references the handle starts with (Condition and Connection ship two).

template <class T>
struct Subject;

template <class L>
struct LockSubject {
  static L make() { return L(); }
  static bool same(const L& original, const L& decoded) {
    std::lock_guard lk(original);
    return decoded.held_by_me();
  }
  static constexpr int refs = 1;
};
template <>
struct Subject<mproc::Lock> : LockSubject<mproc::Lock> {};
template <>
struct Subject<mproc::RLock> : LockSubject<mproc::RLock> {};

template <class S>
struct SemaphoreSubject {
  static S make() { return S(7); }
  static bool same(const S& original, const S& decoded) {
    if (decoded.get_value() != 7 || !decoded.try_acquire()) return false;
    const bool taken_from_original = original.get_value() == 6;
    original.release();
    return taken_from_original;
  }
  static constexpr int refs = 1;
};
template <>
struct Subject<mproc::Semaphore> : SemaphoreSubject<mproc::Semaphore> {};
template <>
struct Subject<mproc::BoundedSemaphore> : SemaphoreSubject<mproc::BoundedSemaphore> {};

template <>
struct Subject<mproc::Event> {
  static mproc::Event make() { return {}; }
  static bool same(const mproc::Event& original, const mproc::Event& decoded) {
    original.set();
    const bool set = decoded.is_set();
    original.clear();
    return set && !decoded.is_set();
  }
  static constexpr int refs = 1;
};

template <>
struct Subject<mproc::Condition> {
  static mproc::Condition make() { return {}; }
  // The lock is told apart by behaviour; the condition's own block (a sequence number
  // and a waiter count) only by its address. Re-encoded here, a handle names its
  // segments as this process has them mapped (one mapping per segment), so equal bytes
  // mean the same block.
  static bool same(const mproc::Condition& original, const mproc::Condition& decoded) {
    if (mproc::dumps(decoded) != mproc::dumps(original)) return false;
    std::lock_guard lk(original);
    try {
      decoded.notify_all();  // throws std::logic_error unless its lock is the one held
      return true;
    } catch (const std::logic_error&) {
      return false;
    }
  }
  static constexpr int refs = 2;
};

template <>
struct Subject<mproc::Barrier> {
  static mproc::Barrier make() { return mproc::Barrier(5); }
  static bool same(const mproc::Barrier& original, const mproc::Barrier& decoded) {
    if (decoded.parties() != 5 || decoded.broken()) return false;
    original.abort();
    const bool broken = decoded.broken();
    original.reset();
    return broken && !decoded.broken();
  }
  static constexpr int refs = 1;
};

template <>
struct Subject<mproc::Value<int>> {
  static mproc::Value<int> make() { return mproc::Value<int>(1234); }
  static bool same(const mproc::Value<int>& original, const mproc::Value<int>& decoded) {
    if (decoded.get() != 1234) return false;
    decoded.set(4321);
    const bool seen = original.get() == 4321;
    original.set(1234);
    return seen;
  }
  static constexpr int refs = 1;
};

template <>
struct Subject<mproc::Array<double>> {
  static mproc::Array<double> make() { return mproc::Array<double>(8, 2.5); }
  // Changing the slice fields to another slice inside the array is still a working
  // Array of those elements.
  static bool same(const mproc::Array<double>& original, const mproc::Array<double>& decoded) {
    if (decoded.size() > original.size() || decoded.data() < original.data() ||
        decoded.data() + decoded.size() > original.data() + original.size())
      return false;
    for (double x : decoded)
      if (x != 2.5) return false;
    std::lock_guard lk(original.get_lock());
    return decoded.get_lock().held_by_me();
  }
  static constexpr int refs = 1;
};

template <>
struct Subject<mproc::Array2D<double>> {
  static mproc::Array2D<double> make() { return mproc::Array2D<double>(4, 3, 2.5); }
  // A forged shape must match the data, and forged slice fields must stay inside the
  // table: what decodes is a working table of the original's elements.
  static bool same(const mproc::Array2D<double>& original,
                   const mproc::Array2D<double>& decoded) {
    if (decoded.rows() * decoded.cols() != decoded.size() || decoded.size() > original.size() ||
        decoded.data() < original.data() ||
        decoded.data() + decoded.size() > original.data() + original.size())
      return false;
    for (double x : decoded.span())
      if (x != 2.5) return false;
    std::lock_guard lk(original.get_lock());
    return decoded.get_lock().held_by_me();
  }
  static constexpr int refs = 1;
};

// put() and try_get() never wait here: a decoded queue that is not the original must not
// stall the test, and gets back what was put into it.
template <class Q>
struct QueueSubject {
  static Q make() { return Q(); }
  static bool same(const Q& original, const Q& decoded) {
    decoded.put(99);
    if (original.try_get() == 99) return true;
    (void)decoded.try_get();
    return false;
  }
  static constexpr int refs = 1;
};
template <>
struct Subject<mproc::Queue<int>> : QueueSubject<mproc::Queue<int>> {};
template <>
struct Subject<mproc::SimpleQueue<int>> : QueueSubject<mproc::SimpleQueue<int>> {};
template <>
struct Subject<mproc::JoinableQueue<int>> : QueueSubject<mproc::JoinableQueue<int>> {
  static bool same(const mproc::JoinableQueue<int>& original,
                   const mproc::JoinableQueue<int>& decoded) {
    const bool ok = QueueSubject::same(original, decoded);
    (ok ? original : decoded).task_done();
    return ok && original.join(0s);
  }
};

// A Connection is one end of a Pipe: the handle is that end's two directions. The other
// end stays with the subject so that the test can talk to the decoded one.
struct PipeEnd {
  mproc::Connection<int> peer;
  mproc::Connection<int> end;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(end);
  }
};
// The two ends of a pipe differ only in which direction comes first, so a forgery that
// swaps the offsets is a working handle of this pipe too: `same` accepts either end.
template <>
struct Subject<PipeEnd> {
  static PipeEnd make() {
    auto [a, b] = mproc::Pipe<int>(4096);
    return PipeEnd{a, b};
  }
  static bool same(const PipeEnd& original, const PipeEnd& decoded) {
    return behaves_as(decoded.end, original.end, original.peer) ||
           behaves_as(decoded.end, original.peer, original.end);
  }
  // Whether `decoded` receives what `other` sends and `other` receives what it sends, as
  // `self` does. No message is left in either direction afterwards.
  static bool behaves_as(const mproc::Connection<int>& decoded, const mproc::Connection<int>& self,
                         const mproc::Connection<int>& other) {
    const auto drain = [](const mproc::Connection<int>& c) {
      while (c.poll()) (void)c.recv();
    };
    other.send(7);
    const bool got = decoded.poll() && decoded.recv() == 7;
    drain(self);
    if (!got) return false;
    decoded.send(8);
    const bool back = other.poll() && other.recv() == 8;
    drain(self);
    drain(other);
    return back;
  }
  static constexpr int refs = 2;
};

mproc::Manager small_manager() {
  return mproc::Manager(mproc::ManagerOptions{.capacity = 1 << 20});
}

template <>
struct Subject<mproc::Manager> {
  static mproc::Manager make() {
    mproc::Manager m = small_manager();
    m.dict<int, int>().set(1, 2);  // bytes_used() then tells this arena from a fresh one
    return m;
  }
  static bool same(const mproc::Manager& original, const mproc::Manager& decoded) {
    return decoded.bytes_used() != 0 && decoded.bytes_used() == original.bytes_used();
  }
  static constexpr int refs = 1;
};

using Dict = mproc::SharedDict<std::string, int>;
template <>
struct Subject<Dict> {
  static Dict make() {
    Dict d = small_manager().dict<std::string, int>();
    d.set("k", 41);
    return d;
  }
  static bool same(const Dict& original, const Dict& decoded) {
    if (decoded.size() != 1 || decoded.get("k") != 41) return false;
    decoded.set("k", 42);
    const bool seen = original.get("k") == 42;
    original.set("k", 41);
    return seen;
  }
  static constexpr int refs = 1;
};

using List = mproc::SharedList<int>;
template <>
struct Subject<List> {
  static List make() {
    List l = small_manager().list<int>();
    l.append(5);
    return l;
  }
  static bool same(const List& original, const List& decoded) {
    if (decoded.size() != 1 || decoded.at(0) != 5) return false;
    decoded.set(0, 6);
    const bool seen = original.at(0) == 6;
    original.set(0, 5);
    return seen;
  }
  static constexpr int refs = 1;
};

// The handle of an object of every type, to splice into another handle's bytes: another
// object's segment. `keep` holds the objects alive while their bytes are in use.
std::vector<Bytes> other_handles(std::vector<std::shared_ptr<void>>& keep) {
  std::vector<Bytes> out;
  const auto add = [&](auto object) {
    out.push_back(mproc::dumps(object));
    keep.push_back(std::make_shared<decltype(object)>(std::move(object)));
  };
  add(mproc::Lock());
  add(mproc::RLock());
  add(mproc::Semaphore(3));
  add(mproc::BoundedSemaphore(2));
  add(mproc::Event());
  add(mproc::Condition());
  add(mproc::Barrier(2));
  add(mproc::Value<int>(1));
  add(mproc::Array<double>(3));
  add(mproc::Array2D<double>(2, 2));
  add(mproc::Queue<int>());
  add(mproc::SimpleQueue<int>());
  add(mproc::JoinableQueue<int>());
  add(Subject<PipeEnd>::make());
  mproc::Manager m = small_manager();
  add(m);
  add(m.dict<std::string, int>());
  add(m.dict<int, int>());
  add(m.list<int>());
  add(m.list<std::string>());
  return out;
}

// What decoding `bytes` as T did: refused with one of the two typed errors, gave the
// original object or another one, or threw something else (`what` says what).
enum class Outcome { refused, same_object, other_object, wrong_exception };

template <class T>
Outcome decode(const T& original, const Bytes& bytes, std::string* what) {
  try {
    const T decoded = mproc::loads<T>(bytes);
    return Subject<T>::same(original, decoded) ? Outcome::same_object : Outcome::other_object;
  } catch (const mproc::SerializationError&) {
    return Outcome::refused;
  } catch (const mproc::SharedStateError&) {
    return Outcome::refused;
  } catch (const std::exception& e) {
    *what = std::string(typeid(e).name()) + ": " + e.what();
    return Outcome::wrong_exception;
  }
}

std::string hex(const Bytes& b) {
  std::string s;
  for (std::byte x : b) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", std::to_integer<unsigned>(x));
    s += buf;
  }
  return s;
}

template <class T>
void expect_refused(const T& original, const Bytes& bytes, const std::string& forgery) {
  std::string what;
  switch (decode(original, bytes, &what)) {
    case Outcome::refused:
      return;
    case Outcome::same_object:
    case Outcome::other_object:
      ADD_FAILURE() << forgery << ": decoded instead of refused (" << hex(bytes) << ")";
      return;
    case Outcome::wrong_exception:
      ADD_FAILURE() << forgery << ": threw " << what << " (" << hex(bytes) << ")";
      return;
  }
}

// The forged values of the size and offset fields of a reference whose segment has
// `size` payload bytes and whose object is at `offset`.
std::vector<std::pair<std::string, std::uint64_t>> forged_sizes(std::uint64_t size) {
  return {{"0", 0},
          {"1", 1},
          {"real - 1", size - 1},
          {"real + 1", size + 1},
          {"real - 8", size - 8},
          {"real + 8", size + 8},
          {"real + page", size + 4096},
          {"twice real", size * 2},
          {"2^32", std::uint64_t{1} << 32},
          {"2^47", std::uint64_t{1} << 47},
          {"2^63", std::uint64_t{1} << 63},
          {"2^64 - 1", ~std::uint64_t{0}},
          {"2^64 - 32 (wraps with the header)", ~std::uint64_t{0} - 31}};
}
std::vector<std::pair<std::string, std::uint64_t>> forged_offsets(std::uint64_t size,
                                                                  std::uint64_t offset) {
  return {{"+1 (misaligned)", offset + 1},
          {"+4 (misaligned)", offset + 4},
          {"+8", offset + 8},
          {"+64", offset + 64},
          {"-8", offset - 8},
          {"the segment's end", size},
          {"8 before the end", size - 8},
          {"64 before the end", size - 64},
          {"past the end", size + 64},
          {"2^20", std::uint64_t{1} << 20},
          {"2^32", std::uint64_t{1} << 32},
          {"2^64 - 8", ~std::uint64_t{0} - 7},
          {"2^64 - 1", ~std::uint64_t{0}}};
}

// Every targeted forgery of every segment reference in T's handle bytes.
template <class T>
void check_targeted_forgeries(const T& object) {
  const Bytes real = mproc::dumps(object);
  ASSERT_GE(real.size(), Subject<T>::refs * kRefBytes);
  {
    std::string what;
    ASSERT_EQ(decode(object, real, &what), Outcome::same_object) << what;
  }
  for (int r = 0; r < Subject<T>::refs; ++r) {
    const std::size_t base = r * kRefBytes;
    const std::string ref = "reference " + std::to_string(r) + ": ";
    const std::uint64_t size = get_u64(real, base + kSizeAt);
    const std::uint64_t offset = get_u64(real, base + kOffsetAt);
    for (const auto& [name, v] : forged_sizes(size))
      expect_refused(object, with_u64(real, base + kSizeAt, v), ref + "size " + name);
    for (const auto& [name, v] : forged_offsets(size, offset))
      expect_refused(object, with_u64(real, base + kOffsetAt, v), ref + "offset " + name);
    // The review's case: a size that makes room for an offset far past the real end.
    expect_refused(object,
                   with_u64(with_u64(real, base + kSizeAt, std::uint64_t{1} << 32),
                            base + kOffsetAt, std::uint64_t{1} << 20),
                   ref + "size 2^32 with offset 2^20");
    expect_refused(object,
                   with_u64(with_u64(real, base + kSizeAt, size * 2), base + kOffsetAt, size),
                   ref + "twice the size with the offset at the real end");
    // Another object's segment, whole (its own pid, fd, id, size and offset).
    std::vector<std::shared_ptr<void>> keep;
    for (const Bytes& other : other_handles(keep)) {
      if (other.size() < kRefBytes) continue;
      Bytes forged = real;
      std::memcpy(forged.data() + base, other.data(), kRefBytes);
      std::string what;
      const Outcome o = decode(object, forged, &what);
      // Another object of the same type is a working handle, just not this one.
      EXPECT_TRUE(o == Outcome::refused || o == Outcome::other_object)
          << ref << "another object's segment " << hex(other) << ": " << what;
    }
  }
}

template <class T>
class ForgedHandle : public ::testing::Test {};

using SharedTypes =
    ::testing::Types<mproc::Lock, mproc::RLock, mproc::Semaphore, mproc::BoundedSemaphore,
                     mproc::Event, mproc::Condition, mproc::Barrier, mproc::Value<int>,
                     mproc::Array<double>, mproc::Array2D<double>, mproc::Queue<int>, mproc::SimpleQueue<int>,
                     mproc::JoinableQueue<int>, PipeEnd, mproc::Manager, Dict, List>;

class TypeNames {
 public:
  template <class T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, mproc::Lock>) return "Lock";
    if constexpr (std::is_same_v<T, mproc::RLock>) return "RLock";
    if constexpr (std::is_same_v<T, mproc::Semaphore>) return "Semaphore";
    if constexpr (std::is_same_v<T, mproc::BoundedSemaphore>) return "BoundedSemaphore";
    if constexpr (std::is_same_v<T, mproc::Event>) return "Event";
    if constexpr (std::is_same_v<T, mproc::Condition>) return "Condition";
    if constexpr (std::is_same_v<T, mproc::Barrier>) return "Barrier";
    if constexpr (std::is_same_v<T, mproc::Value<int>>) return "Value";
    if constexpr (std::is_same_v<T, mproc::Array<double>>) return "Array";
    if constexpr (std::is_same_v<T, mproc::Array2D<double>>) return "Array2D";
    if constexpr (std::is_same_v<T, mproc::Queue<int>>) return "Queue";
    if constexpr (std::is_same_v<T, mproc::SimpleQueue<int>>) return "SimpleQueue";
    if constexpr (std::is_same_v<T, mproc::JoinableQueue<int>>) return "JoinableQueue";
    if constexpr (std::is_same_v<T, PipeEnd>) return "Connection";
    if constexpr (std::is_same_v<T, mproc::Manager>) return "Manager";
    if constexpr (std::is_same_v<T, Dict>) return "SharedDict";
    if constexpr (std::is_same_v<T, List>) return "SharedList";
    return "?";
  }
};
TYPED_TEST_SUITE(ForgedHandle, SharedTypes, TypeNames);

TYPED_TEST(ForgedHandle, EachForgedSizeOffsetOrSegmentIsRefused) {
  const TypeParam object = Subject<TypeParam>::make();
  check_targeted_forgeries(object);
}

// ---- a bounded deterministic fuzz -----------------------------------------------------------

// A special value for an 8-byte field: the edges that length checks get wrong.
std::uint64_t special_u64(std::mt19937_64& rng, const Bytes& real) {
  const std::uint64_t size = get_u64(real, kSizeAt);
  switch (rng() % 12) {
    case 0: return 0;
    case 1: return 1;
    case 2: return ~std::uint64_t{0} - rng() % 64;
    case 3: return std::uint64_t{1} << (rng() % 64);
    case 4: return size + (rng() % 129) - 64;
    case 5: return (rng() % 64) * 4096;
    case 6: return size * (1 + rng() % 4);
    case 7: return rng() % 8192;
    case 8: return std::uint64_t{0x7fffffffffffffff};
    case 9: return get_u64(real, (rng() % (real.size() / 8)) * 8);  // another field's value
    default: return rng();
  }
}

// One mutant of `real`: bit flips, byte and field overwrites, small deltas, another
// object's reference spliced in (then `spliced` is set), truncation or trailing bytes.
Bytes mutate(std::mt19937_64& rng, const Bytes& real, const std::vector<Bytes>& others,
             bool* spliced) {
  *spliced = false;
  Bytes b = real;
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 8) {
      case 0:
      case 1:
        b[rng() % b.size()] ^= std::byte{static_cast<unsigned char>(1u << (rng() % 8))};
        break;
      case 2:
        b[rng() % b.size()] = std::byte{static_cast<unsigned char>(rng())};
        break;
      case 3:
      case 4: {
        // A whole aligned field: the size and offset fields most often.
        const std::size_t fields = b.size() / 8;
        std::size_t at = (rng() % fields) * 8;
        if (rng() % 2 == 0) at = (rng() % (b.size() / kRefBytes)) * kRefBytes +
                                 (rng() % 2 == 0 ? kSizeAt : kOffsetAt);
        b = with_u64(std::move(b), at, special_u64(rng, real));
        break;
      }
      case 5: {
        const std::size_t at = (rng() % (b.size() / 8)) * 8;
        const auto delta = static_cast<std::uint64_t>(static_cast<std::int64_t>(rng() % 33) - 16);
        b = with_u64(b, at, get_u64(b, at) + delta * (rng() % 2 == 0 ? 1 : 8));
        break;
      }
      case 6: {
        const Bytes& other = others[rng() % others.size()];
        const std::size_t ref = rng() % (b.size() / kRefBytes);
        std::memcpy(b.data() + ref * kRefBytes, other.data(), kRefBytes);
        *spliced = true;
        break;
      }
      default:
        if (rng() % 2 == 0 && b.size() > 1)
          b.resize(b.size() - 1 - rng() % (b.size() - 1));
        else
          b.resize(b.size() + 1 + rng() % 16, std::byte{static_cast<unsigned char>(rng())});
        return b;  // the length changed: later edits would need fields that may be gone
    }
  }
  return b;
}

constexpr int kMutantsPerType = 2500;

template <class T>
void fuzz(std::uint64_t seed) {
  const T object = Subject<T>::make();
  const Bytes real = mproc::dumps(object);
  std::vector<std::shared_ptr<void>> keep;
  const std::vector<Bytes> others = other_handles(keep);
  std::mt19937_64 rng(seed);
  int refused = 0;
  int same = 0;
  int other = 0;
  for (int i = 0; i < kMutantsPerType; ++i) {
    bool spliced = false;
    const Bytes mutant = mutate(rng, real, others, &spliced);
    std::string what;
    switch (decode(object, mutant, &what)) {
      case Outcome::refused:
        ++refused;
        break;
      case Outcome::same_object:
        ++same;
        break;
      case Outcome::other_object:
        // Only a reference taken whole from another live object of the same type may
        // name another object; anything else is a forgery taken for a live object.
        if (spliced) {
          ++other;
          break;
        }
        FAIL() << "mutant " << i << " decoded to another object: " << hex(mutant);
      case Outcome::wrong_exception:
        FAIL() << "mutant " << i << " threw " << what << ": " << hex(mutant);
    }
  }
  std::printf("%d mutants: %d refused, %d the object itself, %d another object of the type\n",
              kMutantsPerType, refused, same, other);
  // Both outcomes occur: changing the locator fields (pid, fd) of a segment this process
  // has mapped still names it; most other changes do not.
  EXPECT_GT(refused, kMutantsPerType / 4);
  EXPECT_GT(same, 0);
}

// A fixed seed per type (FNV-1a of its name), so that each type gets its own mutants and
// every run the same ones.
std::uint64_t seed_of(const std::string& name) {
  std::uint64_t h = 0xcbf29ce484222325;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3;
  return h;
}

TYPED_TEST(ForgedHandle, FuzzedHandleBytesGiveTheObjectOrATypedError) {
  const int fds = open_fds();
  const int maps = mproc_mappings();
  fuzz<TypeParam>(seed_of(TypeNames::GetName<TypeParam>(0)));
  // Refusals leave nothing behind: every fd opened and every mapping made to check a
  // forged handle is gone again.
  EXPECT_EQ(open_fds(), fds);
  EXPECT_EQ(mproc_mappings(), maps);
}

// ---- a segment this process has not mapped --------------------------------------------------
//
// A child makes the objects, so the parent reaches them only through /proc/<child>/fd:
// there the real size comes from the file, not from a mapping already registered.

// "" if decoding `bytes` as T is refused with SerializationError or SharedStateError,
// else what happened instead.
template <class T>
std::string refusal(const Bytes& bytes) {
  try {
    (void)mproc::loads<T>(bytes);
    return "decoded";
  } catch (const mproc::SerializationError&) {
    return "";
  } catch (const mproc::SharedStateError&) {
    return "";
  } catch (const std::exception& e) {
    return std::string("threw ") + typeid(e).name() + ": " + e.what();
  }
}

// Every size and offset forgery of a handle's first reference is refused.
template <class T>
void expect_forgeries_refused(const Bytes& real, const std::string& type) {
  const std::uint64_t size = get_u64(real, kSizeAt);
  const std::uint64_t offset = get_u64(real, kOffsetAt);
  for (const auto& [name, v] : forged_sizes(size))
    EXPECT_EQ(refusal<T>(with_u64(real, kSizeAt, v)), "") << type << " size " << name;
  for (const auto& [name, v] : forged_offsets(size, offset))
    EXPECT_EQ(refusal<T>(with_u64(real, kOffsetAt, v)), "") << type << " offset " << name;
}

TEST(ForgedHandleUnmapped, ForgedFieldsOfAChildsObjectsAreRefusedAndTheRealOnesWork) {
  mproc::Queue<Bytes> handles;
  mproc::Event done;
  mproc::Process child(
      [](mproc::Queue<Bytes> out, mproc::Event finished) {
        mproc::Lock lock;
        mproc::Barrier barrier(5);
        mproc::Queue<int> queue;
        mproc::Manager m = small_manager();
        auto dict = m.dict<std::string, int>();
        dict.set("k", 41);
        out.put(mproc::dumps(lock));
        out.put(mproc::dumps(barrier));
        out.put(mproc::dumps(queue));
        out.put(mproc::dumps(dict));
        (void)finished.wait(60s);
      },
      handles, done);
  child.start();
  Bytes lock_bytes = *handles.get(30s);
  Bytes barrier_bytes = *handles.get(30s);
  Bytes queue_bytes = *handles.get(30s);
  Bytes dict_bytes = *handles.get(30s);

  // Forgeries first: none of them may leave the segment mapped for the real handle.
  const int maps = mproc_mappings();
  expect_forgeries_refused<mproc::Lock>(lock_bytes, "Lock");
  expect_forgeries_refused<mproc::Barrier>(barrier_bytes, "Barrier");
  expect_forgeries_refused<mproc::Queue<int>>(queue_bytes, "Queue");
  expect_forgeries_refused<Dict>(dict_bytes, "SharedDict");
  EXPECT_EQ(mproc_mappings(), maps);

  const auto lock = mproc::loads<mproc::Lock>(lock_bytes);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_EQ(mproc::loads<mproc::Barrier>(barrier_bytes).parties(), 5u);
  const auto queue = mproc::loads<mproc::Queue<int>>(queue_bytes);
  queue.put(3);
  EXPECT_EQ(queue.get(1s), 3);
  EXPECT_EQ(mproc::loads<Dict>(dict_bytes).get("k"), 41);

  done.set();
  ASSERT_TRUE(child.join(30s));
  EXPECT_EQ(child.exitcode(), 0);
}

}  // namespace
