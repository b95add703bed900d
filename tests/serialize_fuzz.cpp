// serialize_fuzz: a deterministic random-mutation fuzzer for mproc/serialize.hpp, built with
// AddressSanitizer and UndefinedBehaviorSanitizer.
//
// It encodes random values of several nested types, mutates the bytes (bit flips, special
// bytes, truncation, insertion, deletion, huge length fields, splices of other inputs), and
// decodes each result as every type, fresh and into reused objects. It fails (exit 1) on
// any exception other than mproc::SerializationError, on a decoded value that does not
// survive its own round trip or (no unordered container in it) does not re-encode to the
// very bytes it came from, and (abort) on any single allocation over 1 GiB; the
// sanitizers abort on out-of-bounds access and undefined behaviour. FrameDecoder gets the
// same treatment with streams cut at random places.
//
//   serialize_fuzz [--seed N] [--seconds N] [--iterations N]
//
// Runs until --iterations (default: unlimited) or --seconds (default 10) is reached,
// whichever comes first, and prints a one-line summary.
#include <mproc/serialize.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <forward_list>
#include <limits>
#include <list>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

// ---- allocation cap ----
//
// With correct length checks no input of a few kilobytes can ask for a gigabyte; if one
// does, abort with a message instead of letting ASan report an out-of-memory later.
// noinline keeps GCC from pairing inlined new-expressions with free() (-Wmismatched-new-delete).
namespace {
constexpr std::size_t allocation_cap = std::size_t{1} << 30;

void check_allocation(std::size_t n) {
  if (n > allocation_cap) {
    std::fprintf(stderr, "serialize_fuzz: FAIL: allocation of %zu bytes (cap %zu)\n", n,
                 allocation_cap);
    std::abort();
  }
}

void* allocate(std::size_t n) {
  check_allocation(n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}

void* allocate_aligned(std::size_t n, std::align_val_t al) {
  check_allocation(n);
  const auto a = static_cast<std::size_t>(al);
  // aligned_alloc wants a nonzero size that is a multiple of the alignment.
  const std::size_t size = n == 0 ? a : (n + a - 1) / a * a;
  if (void* p = std::aligned_alloc(a, size)) return p;
  throw std::bad_alloc();
}
}  // namespace

[[gnu::noinline]] void* operator new(std::size_t n) { return allocate(n); }
[[gnu::noinline]] void* operator new[](std::size_t n) { return allocate(n); }
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t al) {
  return allocate_aligned(n, al);
}
[[gnu::noinline]] void* operator new[](std::size_t n, std::align_val_t al) {
  return allocate_aligned(n, al);
}
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  check_allocation(n);
  return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  check_allocation(n);
  return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using Bytes = std::vector<std::byte>;
using Rng = std::mt19937_64;

// ---- the types under test ----

struct Record {
  int id = 0;
  std::string name;
  std::vector<double> values;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, name, values);
  }
};

namespace shapes {
struct Point {
  float x = 0, y = 0;
  std::optional<std::uint16_t> tag;
};
template <class Archive>
void serialize(Archive& ar, Point& p) {
  ar(p.x, p.y, p.tag);
}
}  // namespace shapes

struct Pod {  // copied as bytes: no member with invalid bit patterns
  std::int32_t a;
  std::uint16_t b;
  char c[2];
};

enum class Level : std::uint8_t { low, mid, high };

struct Tree {
  int value = 0;
  std::vector<Tree> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
};

using Cell = std::optional<std::variant<int, std::string>>;
using TA = std::map<std::string, std::vector<Cell>>;
using TB = std::tuple<Record, shapes::Point, Pod, Level, std::vector<bool>, std::array<bool, 3>,
                      std::unordered_map<int, std::set<std::string>>>;
using TC = std::vector<std::pair<double, std::optional<std::array<std::uint16_t, 4>>>>;
using TD = std::variant<std::monostate, std::vector<double>, std::string,
                        std::unordered_set<std::int64_t>, bool, Tree>;
using TE = Tree;
using TF = std::vector<std::string>;
using TG = std::tuple<std::vector<Pod>, std::u16string, std::optional<std::vector<std::vector<int>>>,
                      std::set<std::vector<bool>>, Level>;
using TH = std::tuple<std::multimap<std::int16_t, std::string>, std::multiset<std::uint8_t>,
                      std::set<std::pair<std::uint8_t, std::uint8_t>>, std::deque<std::int16_t>,
                      std::list<std::optional<std::string>>, std::forward_list<std::vector<bool>>>;

// ---- random values ----

struct Gen {
  Rng& rng;

  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); }
  bool coin() { return (rng() & 1) != 0; }
  std::size_t small() { return below(4) == 0 ? below(40) : below(5); }

  std::string text() {
    std::string s(small(), '\0');
    for (char& c : s) c = static_cast<char>(below(4) == 0 ? rng() : 'a' + below(26));
    return s;
  }
  double real() {
    double d;
    if (below(8) == 0) {
      const std::uint64_t bits = rng();
      std::memcpy(&d, &bits, sizeof d);
      return d;
    }
    return static_cast<double>(static_cast<std::int64_t>(rng() % 2001) - 1000) / 8.0;
  }
  float realf() {
    if (below(8) == 0) {
      float f;
      const auto bits = static_cast<std::uint32_t>(rng());
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    return static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 8.0f;
  }
  std::vector<bool> bits() {
    std::vector<bool> v(small() * 3);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = coin();
    return v;
  }
  Pod pod() {
    return Pod{static_cast<std::int32_t>(rng()), static_cast<std::uint16_t>(rng()),
               {static_cast<char>(rng()), static_cast<char>(rng())}};
  }
  Level level() { return static_cast<Level>(below(3)); }

  Tree tree(int depth) {
    Tree t;
    t.value = static_cast<int>(rng());
    if (depth > 0) {
      t.children.resize(below(4));
      for (Tree& c : t.children) c = tree(depth - 1);
    }
    return t;
  }

  TA a() {
    TA m;
    for (std::size_t i = small(); i > 0; --i) {
      std::vector<Cell> cells(small());
      for (Cell& c : cells) {
        switch (below(3)) {
          case 0: break;
          case 1: c = static_cast<int>(rng()); break;
          default: c = text(); break;
        }
      }
      m.emplace(text(), std::move(cells));
    }
    return m;
  }
  TB b() {
    Record r{static_cast<int>(rng()), text(), {}};
    for (std::size_t i = small(); i > 0; --i) r.values.push_back(real());
    shapes::Point p{realf(), realf(), {}};
    if (coin()) p.tag = static_cast<std::uint16_t>(rng());
    std::unordered_map<int, std::set<std::string>> um;
    for (std::size_t i = small(); i > 0; --i) {
      std::set<std::string> s;
      for (std::size_t j = small(); j > 0; --j) s.insert(text());
      um.emplace(static_cast<int>(below(1000)), std::move(s));
    }
    return TB{std::move(r), p, pod(), level(), bits(), {coin(), coin(), coin()}, std::move(um)};
  }
  TC c() {
    TC v(small());
    for (auto& [d, o] : v) {
      d = real();
      if (coin())
        o = std::array<std::uint16_t, 4>{static_cast<std::uint16_t>(rng()), 1, 2,
                                         static_cast<std::uint16_t>(rng())};
    }
    return v;
  }
  TD d() {
    switch (below(6)) {
      case 0: return std::monostate{};
      case 1: {
        std::vector<double> v(small());
        for (double& x : v) x = real();
        return v;
      }
      case 2: return text();
      case 3: {
        std::unordered_set<std::int64_t> s;
        for (std::size_t i = small(); i > 0; --i) s.insert(static_cast<std::int64_t>(rng() % 100));
        return s;
      }
      case 4: return coin();
      default: return tree(3);
    }
  }
  TF f() {
    TF v(small());
    for (auto& s : v) s = text();
    return v;
  }
  TG g() {
    std::vector<Pod> pods(small());
    for (Pod& p : pods) p = pod();
    std::u16string u(small(), u'\0');
    for (auto& ch : u) ch = static_cast<char16_t>(rng());
    std::optional<std::vector<std::vector<int>>> o;
    if (coin()) {
      o.emplace(small());
      for (auto& inner : *o) inner.assign(small(), static_cast<int>(rng()));
    }
    std::set<std::vector<bool>> s;
    for (std::size_t i = small(); i > 0; --i) s.insert(bits());
    return TG{std::move(pods), std::move(u), std::move(o), std::move(s), level()};
  }
  TH h() {
    TH t;
    auto& [mm, ms, pairs, dq, li, fl] = t;
    // Few distinct keys, so that equal ones repeat.
    for (std::size_t i = small(); i > 0; --i) mm.emplace(static_cast<std::int16_t>(below(4)), text());
    for (std::size_t i = small(); i > 0; --i) ms.insert(static_cast<std::uint8_t>(below(6)));
    for (std::size_t i = small(); i > 0; --i)
      pairs.emplace(static_cast<std::uint8_t>(below(3)), static_cast<std::uint8_t>(rng()));
    for (std::size_t i = small(); i > 0; --i) dq.push_back(static_cast<std::int16_t>(rng()));
    for (std::size_t i = small(); i > 0; --i)
      li.push_back(coin() ? std::optional<std::string>(text()) : std::nullopt);
    for (std::size_t i = small(); i > 0; --i) fl.push_front(bits());
    return t;
  }
};

// ---- failure reporting ----

std::string hex(std::span<const std::byte> b) {
  std::string s;
  const std::size_t n = std::min<std::size_t>(b.size(), 256);
  for (std::size_t i = 0; i < n; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", std::to_integer<unsigned>(b[i]));
    s += buf;
  }
  if (n < b.size()) s += "...";
  return s;
}

[[noreturn]] void fail(const char* what, const char* type, std::uint64_t iteration,
                       std::span<const std::byte> input, const char* detail) {
  std::fprintf(stderr,
               "serialize_fuzz: FAIL at iteration %llu: %s decoding as %s: %s\n  input (%zu "
               "bytes): %s\n",
               static_cast<unsigned long long>(iteration), what, type, detail, input.size(),
               hex(input).c_str());
  std::exit(1);
}

// ---- decoding as every type ----

struct Counts {
  std::uint64_t ok = 0;
  std::uint64_t rejected = 0;
};

// Types whose decoded value re-encodes to the same bytes each time (no unordered
// containers, whose iteration order depends on insertion history).
template <class T>
inline constexpr bool deterministic_v = !std::is_same_v<T, TB> && !std::is_same_v<T, TD>;

// Whatever decodes must survive its own round trip: the encoder must never write what the
// decoder refuses.
template <class T>
void check_round_trip(const T& value, const char* name, std::uint64_t iteration,
                      std::span<const std::byte> input) {
  Bytes again;
  try {
    again = mproc::dumps(value);
  } catch (const mproc::SerializationError& e) {
    // The one legitimate refusal: none of these types can trigger it, so it is a failure.
    fail("re-encoding a decoded value threw", name, iteration, input, e.what());
  }
  T second{};
  try {
    mproc::loads_into(again, second);
  } catch (const std::exception& e) {
    fail("decoding a re-encoded value threw", name, iteration, again, e.what());
  }
  if constexpr (deterministic_v<T>) {
    if (mproc::dumps(second) != again)
      fail("re-encoding is not stable", name, iteration, input, "bytes differ");
  }
}

// One value, one encoding: what decodes re-encodes to the bytes it came from (for the
// types whose encoding does not depend on insertion history).
template <class T>
void check_canonical(const T& value, const char* name, std::uint64_t iteration,
                     std::span<const std::byte> input) {
  if constexpr (deterministic_v<T>) {
    const Bytes again = mproc::dumps(value);
    if (!std::equal(again.begin(), again.end(), input.begin(), input.end()))
      fail("a second encoding of a value was accepted", name, iteration, input,
           ("it re-encodes as " + hex(again)).c_str());
  }
}

template <class T>
void decode_as(std::span<const std::byte> input, const char* name, T& reused, bool reuse,
               std::uint64_t iteration, Counts& counts, std::vector<Bytes>& keep) {
  try {
    if (reuse) {
      mproc::loads_into(input, reused);
      check_round_trip(reused, name, iteration, input);
      check_canonical(reused, name, iteration, input);
    } else {
      const T value = mproc::loads<T>(input);
      check_round_trip(value, name, iteration, input);
      check_canonical(value, name, iteration, input);
    }
    ++counts.ok;
    if (keep.size() < 8) keep.emplace_back(input.begin(), input.end());
  } catch (const mproc::SerializationError&) {
    ++counts.rejected;
  } catch (const std::exception& e) {
    fail("unexpected exception", name, iteration, input, e.what());
  } catch (...) {
    fail("unexpected non-std exception", name, iteration, input, "?");
  }
}

struct Reused {
  TA a;
  TB b;
  TC c;
  TD d;
  TE e;
  TF f;
  TG g;
  TH h;
};

void decode_all(std::span<const std::byte> input, Reused& r, bool reuse, std::uint64_t iteration,
                Counts& counts, std::vector<Bytes>& keep) {
  decode_as(input, "A (map<string, vector<optional<variant<int, string>>>>)", r.a, reuse,
            iteration, counts, keep);
  decode_as(input, "B (tuple of user types, vector<bool>, unordered_map<int, set<string>>)", r.b,
            reuse, iteration, counts, keep);
  decode_as(input, "C (vector<pair<double, optional<array<u16, 4>>>>)", r.c, reuse, iteration,
            counts, keep);
  decode_as(input, "D (variant<monostate, vector<double>, string, unordered_set, bool, Tree>)",
            r.d, reuse, iteration, counts, keep);
  decode_as(input, "E (recursive Tree)", r.e, reuse, iteration, counts, keep);
  decode_as(input, "F (vector<string>)", r.f, reuse, iteration, counts, keep);
  decode_as(input, "G (tuple<vector<Pod>, u16string, optional<...>, set<vector<bool>>, enum>)",
            r.g, reuse, iteration, counts, keep);
  decode_as(input,
            "H (tuple<multimap<i16, string>, multiset<u8>, set<pair<u8, u8>>, deque<i16>, "
            "list<optional<string>>, forward_list<vector<bool>>>)",
            r.h, reuse, iteration, counts, keep);
}

// ---- mutations ----

void put_u64(Bytes& b, std::size_t at, std::uint64_t v) {
  for (std::size_t i = 0; i < 8 && at + i < b.size(); ++i)
    b[at + i] = static_cast<std::byte>(v >> (8 * i));
}

void mutate(Bytes& b, Gen& gen, const std::vector<Bytes>& corpus) {
  static constexpr std::uint64_t lengths[] = {
      std::numeric_limits<std::uint64_t>::max(), std::uint64_t{1} << 63, std::uint64_t{1} << 40,
      std::uint64_t{1} << 32, std::uint64_t{1} << 31, 0xffffffff, 1u << 20, 4096, 255, 256,
      1, 2, 3, 7, 8, 9, 0};
  const std::size_t steps = 1 + gen.below(4);
  for (std::size_t s = 0; s < steps; ++s) {
    switch (gen.below(9)) {
      case 0:  // bit flip
        if (!b.empty()) b[gen.below(b.size())] ^= static_cast<std::byte>(1u << gen.below(8));
        break;
      case 1: {  // special byte
        static constexpr unsigned special[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0x02};
        if (!b.empty())
          b[gen.below(b.size())] =
              static_cast<std::byte>(gen.coin() ? special[gen.below(6)] : gen.rng());
        break;
      }
      case 2:  // truncate
        b.resize(gen.below(b.size() + 1));
        break;
      case 3: {  // insert random bytes
        const std::size_t at = gen.below(b.size() + 1);
        const std::size_t n = 1 + gen.below(8);
        for (std::size_t i = 0; i < n; ++i)
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::byte>(gen.rng()));
        break;
      }
      case 4:  // overwrite a would-be length field
        if (!b.empty()) put_u64(b, gen.below(b.size()), lengths[gen.below(std::size(lengths))]);
        break;
      case 5: {  // delete a range
        if (b.empty()) break;
        const std::size_t at = gen.below(b.size());
        const std::size_t n = 1 + gen.below(std::min<std::size_t>(16, b.size() - at));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at),
                b.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      case 6: {  // duplicate a range
        if (b.empty() || b.size() > 1 << 16) break;
        const std::size_t at = gen.below(b.size());
        const std::size_t n = 1 + gen.below(std::min<std::size_t>(32, b.size() - at));
        const Bytes piece(b.begin() + static_cast<std::ptrdiff_t>(at),
                          b.begin() + static_cast<std::ptrdiff_t>(at + n));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(gen.below(b.size() + 1)), piece.begin(),
                 piece.end());
        break;
      }
      case 7: {  // splice: this input's head, another's tail
        const Bytes& other = corpus[gen.below(corpus.size())];
        b.resize(gen.below(b.size() + 1));
        const std::size_t from = gen.below(other.size() + 1);
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
      default: {  // a small length where a length sits, so that decoding goes deeper
        if (b.size() >= 8) put_u64(b, gen.below(b.size() - 7), gen.below(6));
        break;
      }
    }
  }
}

// ---- FrameDecoder ----

struct FrameCounts {
  std::uint64_t streams = 0;
  std::uint64_t frames = 0;
  std::uint64_t rejected = 0;
};

void fuzz_frames(Gen& gen, const std::vector<Bytes>& corpus, std::uint64_t iteration,
                 FrameCounts& counts) {
  std::vector<Bytes> payloads(1 + gen.below(4));
  Bytes stream;
  for (Bytes& p : payloads) {
    p = corpus[gen.below(corpus.size())];
    const Bytes f = mproc::encode_frame(p);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  const bool mutated = gen.coin();
  if (mutated) mutate(stream, gen, corpus);
  static constexpr std::size_t limits[] = {std::size_t{1} << 34, 1024, 64};
  const std::size_t max_frame = limits[gen.below(3)];

  mproc::FrameDecoder decoder(max_frame);
  std::vector<Bytes> got;
  ++counts.streams;
  try {
    std::span<const std::byte> rest(stream);
    while (!rest.empty()) {
      const std::size_t n = 1 + gen.below(gen.coin() ? 8 : rest.size());
      decoder.feed(rest.first(std::min(n, rest.size())));
      rest = rest.subspan(std::min(n, rest.size()));
      while (auto f = decoder.next()) got.push_back(std::move(*f));
    }
  } catch (const mproc::SerializationError& e) {
    if (!mutated) {
      bool oversize = false;
      for (const Bytes& p : payloads) oversize = oversize || p.size() > max_frame;
      if (!oversize) fail("FrameDecoder rejected a valid stream", "frames", iteration, stream, e.what());
    }
    ++counts.rejected;
    return;
  } catch (const std::exception& e) {
    fail("FrameDecoder threw an unexpected exception", "frames", iteration, stream, e.what());
  }
  counts.frames += got.size();
  if (!mutated && got != payloads) {
    bool oversize = false;
    for (const Bytes& p : payloads) oversize = oversize || p.size() > max_frame;
    if (!oversize) fail("FrameDecoder lost or changed frames", "frames", iteration, stream, "mismatch");
  }
}

// ---- driver ----

struct Options {
  std::uint64_t seed = 1;
  double seconds = 10;
  std::uint64_t iterations = std::numeric_limits<std::uint64_t>::max();
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "usage: %s [--seed N] [--seconds N] [--iterations N]\n", argv[0]);
      std::exit(2);
    }
    const char* value = argv[++i];
    if (arg == "--seed") {
      o.seed = std::strtoull(value, nullptr, 10);
    } else if (arg == "--seconds") {
      o.seconds = std::strtod(value, nullptr);
    } else if (arg == "--iterations") {
      o.iterations = std::strtoull(value, nullptr, 10);
    } else {
      std::fprintf(stderr, "serialize_fuzz: unknown option %s\n", argv[i - 1]);
      std::exit(2);
    }
  }
  return o;
}

template <class T>
void add_seed(std::vector<Bytes>& corpus, const T& value, const char* name) {
  Bytes b = mproc::dumps(value);
  // A seed must decode as its own type, or the fuzzer would only test rejection.
  try {
    (void)mproc::loads<T>(b);
  } catch (const std::exception& e) {
    fail("a seed does not decode", name, 0, b, e.what());
  }
  corpus.push_back(std::move(b));
}

// The encoding of a Tree with one child per level, `depth` levels deep.
Bytes deep_chain(std::size_t depth) {
  Bytes b;
  b.reserve(depth * 12);
  for (std::size_t i = 0; i < depth; ++i) {
    b.insert(b.end(), 4, std::byte{0});  // value
    b.push_back(static_cast<std::byte>(i + 1 < depth ? 1 : 0));  // children: u64 count
    b.insert(b.end(), 7, std::byte{0});
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  Rng rng(opt.seed);
  Gen gen{rng};

  std::vector<Bytes> corpus;
  for (int i = 0; i < 16; ++i) {
    add_seed(corpus, gen.a(), "A");
    add_seed(corpus, gen.b(), "B");
    add_seed(corpus, gen.c(), "C");
    add_seed(corpus, gen.d(), "D");
    add_seed(corpus, gen.tree(4), "E");
    add_seed(corpus, gen.f(), "F");
    add_seed(corpus, gen.g(), "G");
    add_seed(corpus, gen.h(), "H");
  }
  // A chain of Trees far deeper than the decoder allows (the encoder refuses to write one):
  // without the depth limit, decoding it would overflow the stack. Checked once in full,
  // and a shorter one joins the corpus.
  {
    const Bytes deep = deep_chain(1'000'000);
    try {
      (void)mproc::loads<Tree>(deep);
      fail("a chain of a million nested Trees was accepted", "E", 0, deep, "no exception");
    } catch (const mproc::SerializationError&) {
    }
    corpus.push_back(deep_chain(2 * mproc::InputArchive::max_depth));
  }
  const std::size_t seeds = corpus.size();
  constexpr std::size_t max_corpus = 1024;

  Counts counts;
  FrameCounts frames;
  Reused reused;
  std::vector<Bytes> keep;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(opt.seconds);
  std::uint64_t iteration = 0;
  for (; iteration < opt.iterations; ++iteration) {
    if (iteration % 256 == 0 && std::chrono::steady_clock::now() >= deadline) break;
    if (iteration % 16 == 15) {
      fuzz_frames(gen, corpus, iteration, frames);
      continue;
    }
    Bytes input = corpus[gen.below(corpus.size())];
    mutate(input, gen, corpus);
    keep.clear();
    decode_all(input, reused, gen.coin(), iteration, counts, keep);
    // Inputs that decode are valid for some type: mutating them further reaches deeper.
    for (Bytes& k : keep) {
      if (corpus.size() < max_corpus)
        corpus.push_back(std::move(k));
      else
        corpus[seeds + gen.below(max_corpus - seeds)] = std::move(k);
    }
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "serialize_fuzz: seed %llu, %llu iterations in %.1f s: %llu decodes ok, %llu rejected; "
      "%llu frame streams (%llu frames, %llu rejected); corpus %zu\n",
      static_cast<unsigned long long>(opt.seed), static_cast<unsigned long long>(iteration),
      elapsed, static_cast<unsigned long long>(counts.ok),
      static_cast<unsigned long long>(counts.rejected),
      static_cast<unsigned long long>(frames.streams),
      static_cast<unsigned long long>(frames.frames),
      static_cast<unsigned long long>(frames.rejected), corpus.size());
  return 0;
}
