// Tests for mproc/serialize.hpp: round trips of every supported type, the exact wire
// layout where it is promised (one memcpy for contiguous trivially copyable data), and
// rejection of truncated, hostile and malformed input without crashing or allocating.
#include <mproc/serialize.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <forward_list>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

// ---- allocation watch: proves that hostile lengths are refused before allocating ----
//
// Replacing the global operator new is allowed in a program ([replacement.functions]);
// this one only records the largest request made while a test is watching.
namespace {
std::atomic<bool> g_watch{false};
std::atomic<std::size_t> g_largest{0};
std::atomic<std::size_t> g_total{0};

void note_allocation(std::size_t n) {
  if (!g_watch.load(std::memory_order_relaxed)) return;
  g_total.fetch_add(n, std::memory_order_relaxed);
  std::size_t seen = g_largest.load(std::memory_order_relaxed);
  while (n > seen && !g_largest.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
}

/// Runs `f` and returns the largest single allocation it requested.
template <class F>
std::size_t largest_allocation(F&& f) {
  g_largest = 0;
  g_watch = true;
  try {
    f();
  } catch (...) {
    g_watch = false;
    throw;
  }
  g_watch = false;
  return g_largest.load();
}

/// Runs `f` and returns the bytes it requested in all, freed or not: more than the peak
/// it held, never less.
template <class F>
std::size_t total_allocation(F&& f) {
  g_total = 0;
  (void)largest_allocation(std::forward<F>(f));
  return g_total.load();
}
}  // namespace

// noinline: inlined into callers, GCC would pair the new-expression with free() and warn
// (-Wmismatched-new-delete), though the pair is this file's own operator new and delete.
[[gnu::noinline]] void* operator new(std::size_t n) {
  note_allocation(n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using mproc::dumps;
using mproc::loads;
using mproc::SerializationError;
using Bytes = std::vector<std::byte>;

template <class T>
T round_trip(const T& value) {
  return loads<T>(dumps(value));
}

Bytes bytes_of(std::initializer_list<unsigned> values) {
  Bytes out;
  for (unsigned v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

void append_u64(Bytes& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}

// Checks that decoding throws SerializationError whose message contains `text`.
template <class T>
void expect_error(const Bytes& bytes, const std::string& text) {
  try {
    (void)loads<T>(bytes);
    ADD_FAILURE() << "no exception; expected one mentioning \"" << text << "\"";
  } catch (const SerializationError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(text));
  }
}

// ---- user types ----

struct Member {
  int id = 0;
  std::string name;
  std::vector<double> values;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, name, values);
  }
  bool operator==(const Member&) const = default;
};

namespace geo {
struct Point {
  double x = 0, y = 0;
  std::optional<std::string> label;
  bool operator==(const Point&) const = default;
};
template <class Archive>
void serialize(Archive& ar, Point& p) {
  ar(p.x, p.y, p.label);
}
}  // namespace geo

// Trivially copyable, no serialize(): copied as its bytes.
struct Pod {
  std::int32_t a;
  float b;
  char tag[4];
  bool operator==(const Pod&) const = default;
};
static_assert(std::is_trivially_copyable_v<Pod> && sizeof(Pod) == 12);

// Trivially copyable but with serialize(): the user's encoding wins over memcpy.
struct Packed {
  std::uint8_t a = 0;
  std::uint32_t b = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b);
  }
  bool operator==(const Packed&) const = default;
};
static_assert(std::is_trivially_copyable_v<Packed> && sizeof(Packed) == 8);

// A field derived on load: is_loading lets one serialize() treat the directions apart.
struct WithCache {
  std::vector<int> data;
  long sum = 0;  // not sent
  template <class Archive>
  void serialize(Archive& ar) {
    ar(data);
    if constexpr (Archive::is_loading) sum = std::accumulate(data.begin(), data.end(), 0L);
  }
};

struct Node {
  int value = 0;
  std::vector<Node> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
  bool operator==(const Node&) const = default;
};

struct Empty {
  template <class Archive>
  void serialize(Archive&) {}
};

enum class Color : std::uint8_t { red = 1, green = 2, blue = 200 };
enum Fixed16 : std::int16_t { f_low = -300, f_high = 300 };
enum class Flag : bool { off, on };
enum Unfixed { u_a, u_b };

// An enum without a fixed underlying type, made serializable by checking its range.
enum Legacy { legacy_a, legacy_b, legacy_c };
template <class Archive>
void serialize(Archive& ar, Legacy& e) {
  int v = e;
  ar(v);
  if constexpr (Archive::is_loading) {
    if (v < legacy_a || v > legacy_c) throw SerializationError("bad Legacy");
    e = static_cast<Legacy>(v);
  }
}

struct NotSerializable {
  std::unique_ptr<int> p;
};

// ---- the concept ----

static_assert(mproc::serializable<int>);
static_assert(mproc::serializable<const int&>);
static_assert(mproc::serializable<std::string>);
static_assert(mproc::serializable<std::vector<bool>>);
static_assert(mproc::serializable<std::map<std::string, std::vector<std::optional<std::variant<int, std::string>>>>>);
static_assert(mproc::serializable<Member>);
static_assert(mproc::serializable<geo::Point>);
static_assert(mproc::serializable<Pod>);
static_assert(mproc::serializable<Node>);
static_assert(mproc::serializable<Color>);
static_assert(mproc::serializable<std::byte>);
static_assert(mproc::serializable<Legacy>);
static_assert(mproc::serializable<int[3]>);
static_assert(mproc::serializable<std::deque<std::string>>);
static_assert(mproc::serializable<std::list<std::optional<Member>>>);
static_assert(mproc::serializable<std::forward_list<std::multimap<int, std::deque<bool>>>>);
static_assert(!mproc::serializable<std::list<NotSerializable>>);
static_assert(!mproc::serializable<std::deque<std::string_view>>);
static_assert(!mproc::serializable<Unfixed>);
static_assert(!mproc::serializable<NotSerializable>);
static_assert(!mproc::serializable<std::vector<NotSerializable>>);
static_assert(!mproc::serializable<std::map<int, NotSerializable>>);
static_assert(!mproc::serializable<std::pair<int, std::unique_ptr<int>>>);
static_assert(!mproc::serializable<std::variant<int, NotSerializable>>);
static_assert(!mproc::serializable<std::optional<std::vector<Unfixed>>>);
static_assert(!mproc::serializable<std::string_view>);
static_assert(!mproc::serializable<std::span<const int>>);
static_assert(!mproc::serializable<std::unique_ptr<int>>);

// Which runs are one memcpy, and which must be checked element by element.
static_assert(mproc::detail::is_bulk_v<double>);
static_assert(mproc::detail::is_bulk_v<Pod>);
static_assert(mproc::detail::is_bulk_v<Color>);
static_assert(mproc::detail::is_bulk_v<std::array<std::array<float, 3>, 2>>);
static_assert(!mproc::detail::is_bulk_v<bool>);
static_assert(!mproc::detail::is_bulk_v<Flag>);
static_assert(!mproc::detail::is_bulk_v<Packed>);
static_assert(!mproc::detail::is_bulk_v<std::optional<int>>);
static_assert(!mproc::detail::is_bulk_v<std::variant<int, float>>);
static_assert(!mproc::detail::is_bulk_v<std::array<bool, 4>>);

// ---- round trips ----

template <class T>
void expect_limits_round_trip() {
  using L = std::numeric_limits<T>;
  for (T v : {L::min(), L::max(), L::lowest(), T{}, T(1)}) EXPECT_EQ(round_trip(v), v);
  EXPECT_EQ(dumps(T{}).size(), sizeof(T));
}

TEST(SerializeRoundTrip, Arithmetic) {
  expect_limits_round_trip<char>();
  expect_limits_round_trip<signed char>();
  expect_limits_round_trip<unsigned char>();
  expect_limits_round_trip<char8_t>();
  expect_limits_round_trip<char16_t>();
  expect_limits_round_trip<char32_t>();
  expect_limits_round_trip<wchar_t>();
  expect_limits_round_trip<short>();
  expect_limits_round_trip<unsigned short>();
  expect_limits_round_trip<int>();
  expect_limits_round_trip<unsigned>();
  expect_limits_round_trip<long>();
  expect_limits_round_trip<unsigned long>();
  expect_limits_round_trip<long long>();
  expect_limits_round_trip<unsigned long long>();
  expect_limits_round_trip<float>();
  expect_limits_round_trip<double>();
  expect_limits_round_trip<long double>();
  EXPECT_TRUE(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(round_trip(-0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(round_trip(-0.0)));
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(false), false);
}

TEST(SerializeRoundTrip, Enums) {
  EXPECT_EQ(round_trip(Color::blue), Color::blue);
  EXPECT_EQ(round_trip(static_cast<Color>(77)), static_cast<Color>(77));
  EXPECT_EQ(round_trip(f_low), f_low);
  EXPECT_EQ(dumps(f_low).size(), 2u);
  EXPECT_EQ(round_trip(Flag::on), Flag::on);
  EXPECT_EQ(round_trip(std::byte{0xab}), std::byte{0xab});
  EXPECT_EQ(round_trip(legacy_c), legacy_c);
  EXPECT_EQ(dumps(Color::green), bytes_of({2}));
}

TEST(SerializeRoundTrip, Strings) {
  EXPECT_EQ(round_trip(std::string()), "");
  const std::string with_nul("a\0b\xff", 4);
  EXPECT_EQ(round_trip(with_nul), with_nul);
  EXPECT_EQ(round_trip(std::u16string(u"h\u00e9llo")), u"h\u00e9llo");
  EXPECT_EQ(round_trip(std::u32string(U"\U0001F600")), U"\U0001F600");
  EXPECT_EQ(round_trip(std::wstring(L"wide")), L"wide");
  Bytes expected;
  append_u64(expected, 3);
  for (char c : {'a', 'b', 'c'}) expected.push_back(static_cast<std::byte>(c));
  EXPECT_EQ(dumps(std::string("abc")), expected);
}

TEST(SerializeRoundTrip, Vectors) {
  EXPECT_EQ(round_trip(std::vector<int>{}), std::vector<int>{});
  EXPECT_EQ(round_trip(std::vector<int>{1, -2, 3}), (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(round_trip(std::vector<std::string>{"", "x", "yz"}),
            (std::vector<std::string>{"", "x", "yz"}));
  EXPECT_EQ(round_trip(std::vector<std::vector<int>>{{}, {1}, {2, 3}}),
            (std::vector<std::vector<int>>{{}, {1}, {2, 3}}));
  EXPECT_EQ(round_trip(std::vector<std::byte>{std::byte{1}, std::byte{255}}),
            (std::vector<std::byte>{std::byte{1}, std::byte{255}}));
  EXPECT_EQ(round_trip(std::vector<Color>{Color::red, Color::blue}),
            (std::vector<Color>{Color::red, Color::blue}));
  EXPECT_EQ(round_trip(std::vector<Flag>{Flag::on, Flag::off}),
            (std::vector<Flag>{Flag::on, Flag::off}));
}

TEST(SerializeRoundTrip, VectorBool) {
  std::mt19937 rng(7);
  for (std::size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 65u, 1000u}) {
    std::vector<bool> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = (rng() & 1) != 0;
    EXPECT_EQ(round_trip(v), v) << n;
    EXPECT_EQ(dumps(v).size(), 8 + (n + 7) / 8) << n;
  }
  // Bits are packed LSB first.
  Bytes expected;
  append_u64(expected, 3);
  expected.push_back(std::byte{0b101});
  EXPECT_EQ(dumps(std::vector<bool>{true, false, true}), expected);
}

TEST(SerializeRoundTrip, Arrays) {
  EXPECT_EQ(round_trip(std::array<int, 4>{1, 2, 3, 4}), (std::array<int, 4>{1, 2, 3, 4}));
  EXPECT_EQ(round_trip(std::array<int, 0>{}), (std::array<int, 0>{}));
  EXPECT_EQ(round_trip(std::array<bool, 3>{true, false, true}),
            (std::array<bool, 3>{true, false, true}));
  EXPECT_EQ(round_trip(std::array<std::string, 2>{"a", "bc"}),
            (std::array<std::string, 2>{"a", "bc"}));
  using Grid = std::array<std::array<double, 2>, 3>;
  const Grid g{{{1, 2}, {3, 4}, {5, 6}}};
  EXPECT_EQ(round_trip(g), g);
  EXPECT_EQ(dumps(g).size(), sizeof(Grid));
  EXPECT_EQ(dumps(std::array<std::uint16_t, 5>{}).size(), 10u);

  int c_array[3] = {7, 8, 9};
  int c_out[3] = {};
  mproc::loads_into(dumps(c_array), c_out);
  EXPECT_THAT(c_out, ::testing::ElementsAre(7, 8, 9));
  bool bools[2] = {true, false};
  bool bools_out[2] = {false, true};
  mproc::loads_into(dumps(bools), bools_out);
  EXPECT_THAT(bools_out, ::testing::ElementsAre(true, false));
}

TEST(SerializeRoundTrip, PairTupleOptionalVariant) {
  EXPECT_EQ(round_trip(std::pair<int, std::string>{4, "four"}),
            (std::pair<int, std::string>{4, "four"}));
  EXPECT_EQ(round_trip(std::tuple<>{}), std::tuple<>{});
  EXPECT_EQ(dumps(std::tuple<>{}).size(), 0u);
  const std::tuple<int, double, std::string, bool> t{1, 2.5, "x", true};
  EXPECT_EQ(round_trip(t), t);
  EXPECT_EQ(round_trip(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(round_trip(std::optional<int>{5}), 5);
  EXPECT_EQ(dumps(std::optional<int>{}), bytes_of({0}));
  EXPECT_EQ(dumps(std::optional<std::uint8_t>{9}), bytes_of({1, 9}));
  EXPECT_EQ(round_trip(std::optional<std::optional<std::string>>{std::optional<std::string>{}}),
            std::optional<std::optional<std::string>>{std::optional<std::string>{}});

  using V = std::variant<std::monostate, int, std::string, std::vector<double>>;
  for (const V& v : {V{}, V{42}, V{std::string("s")}, V{std::vector<double>{1.5}}})
    EXPECT_EQ(round_trip(v), v);
  EXPECT_EQ(dumps(V{std::in_place_index<1>, 3}), bytes_of({1, 3, 0, 0, 0}));
  // The same type twice: the index, not the type, decides.
  using Twice = std::variant<int, int>;
  EXPECT_EQ(round_trip(Twice{std::in_place_index<1>, 6}).index(), 1u);
}

TEST(SerializeRoundTrip, Associative) {
  const std::map<std::string, int> m{{"a", 1}, {"b", 2}, {"", 0}};
  EXPECT_EQ(round_trip(m), m);
  const std::unordered_map<int, std::vector<std::string>> um{{1, {"x"}}, {2, {}}, {-5, {"y", "z"}}};
  EXPECT_EQ(round_trip(um), um);
  const std::set<double> s{1.5, -2.0, 1e300};
  EXPECT_EQ(round_trip(s), s);
  const std::unordered_set<std::string> us{"p", "q", ""};
  EXPECT_EQ(round_trip(us), us);
  EXPECT_EQ(round_trip(std::map<int, int>{}), (std::map<int, int>{}));
  EXPECT_EQ(round_trip(std::set<int, std::greater<>>{1, 2, 3}), (std::set<int, std::greater<>>{1, 2, 3}));
}

TEST(SerializeRoundTrip, SequenceContainers) {
  const std::deque<int> d{3, 1, 4, 1, 5, 9, 2, 6};
  EXPECT_EQ(round_trip(d), d);
  std::deque<std::string> ds;
  for (int i = 0; i < 5000; ++i) ds.push_back(std::to_string(i));  // many deque blocks
  EXPECT_EQ(round_trip(ds), ds);
  const std::list<std::string> l{"linked", "", std::string(1000, 'x'), "list"};
  EXPECT_EQ(round_trip(l), l);
  const std::forward_list<double> f{1.5, -0.0, 1e300};
  EXPECT_EQ(round_trip(f), f);
  const std::list<std::vector<int>> lv{{1, 2}, {}, {3}};
  EXPECT_EQ(round_trip(lv), lv);
  const std::deque<bool> db{true, false, true};
  EXPECT_EQ(round_trip(db), db);
  const std::forward_list<std::optional<Member>> fo{std::nullopt, Member{7, "m", {0.5}}};
  EXPECT_EQ(round_trip(fo), fo);
  EXPECT_TRUE(round_trip(std::list<int>{}).empty());
  EXPECT_TRUE(round_trip(std::forward_list<std::string>{}).empty());

  // The bytes of a vector: one container's encoding decodes as another.
  EXPECT_EQ(dumps(d), dumps(std::vector<int>(d.begin(), d.end())));
  EXPECT_EQ(dumps(l), dumps(std::vector<std::string>(l.begin(), l.end())));
  EXPECT_EQ(dumps(f), dumps(std::vector<double>{1.5, -0.0, 1e300}));
  EXPECT_EQ(loads<std::list<int>>(dumps(std::vector<int>{7, 8})), (std::list<int>{7, 8}));

  // Decoding into a longer or a shorter container replaces it.
  std::list<std::string> longer{"a", "b", "c", "d", "e"};
  mproc::loads_into(dumps(std::list<std::string>{"x", "y"}), longer);
  EXPECT_EQ(longer, (std::list<std::string>{"x", "y"}));
  std::forward_list<int> shorter{1};
  mproc::loads_into(dumps(std::forward_list<int>{4, 5, 6}), shorter);
  EXPECT_EQ(shorter, (std::forward_list<int>{4, 5, 6}));
}

TEST(SerializeRoundTrip, MultiContainers) {
  // Equal keys keep the order their values were inserted in.
  const std::multimap<int, std::string> mm{{2, "b"}, {1, "a"}, {2, "a"}, {2, "c"}, {0, ""}};
  const auto mm2 = round_trip(mm);
  EXPECT_EQ(mm2, mm);
  const auto [lo, hi] = mm2.equal_range(2);
  std::vector<std::string> under_2;
  for (auto it = lo; it != hi; ++it) under_2.push_back(it->second);
  EXPECT_EQ(under_2, (std::vector<std::string>{"b", "a", "c"}));
  const std::multiset<std::string> ms{"x", "y", "x", "", "x"};
  EXPECT_EQ(round_trip(ms), ms);
  EXPECT_EQ(round_trip(ms).count("x"), 3u);
  const std::unordered_multimap<int, int> umm{{1, 1}, {1, 2}, {3, 3}, {1, 1}};
  EXPECT_EQ(round_trip(umm), umm);
  const std::unordered_multiset<std::string> ums{"p", "p", "q"};
  EXPECT_EQ(round_trip(ums), ums);
  // A set's bytes are a multiset's (the reverse holds when no key repeats).
  const std::set<int> s{1, 5, 9};
  EXPECT_EQ(dumps(s), dumps(std::multiset<int>{9, 5, 1}));
  EXPECT_EQ(loads<std::multiset<int>>(dumps(s)), (std::multiset<int>{1, 5, 9}));
}

TEST(SerializeRoundTrip, NestedStdTypes) {
  using Cell = std::optional<std::variant<int, std::string>>;
  using T = std::map<std::string, std::vector<Cell>>;
  T value{{"alpha", {Cell{}, Cell{1}, Cell{std::string("one")}}},
          {"beta", {}},
          {"", {Cell{std::string()}, Cell{-7}}}};
  EXPECT_EQ(round_trip(value), value);
}

TEST(SerializeRoundTrip, UserTypes) {
  const Member m{3, "three", {1.0, 2.0}};
  EXPECT_EQ(round_trip(m), m);
  const geo::Point p{1.5, -2.5, "here"};
  EXPECT_EQ(round_trip(p), p);
  const std::tuple<Member, geo::Point, std::vector<Member>> t{m, p, {m, Member{}}};
  EXPECT_EQ(round_trip(t), t);
  const Pod pod{-1, 0.25f, {'a', 'b', 'c', '\0'}};
  EXPECT_EQ(round_trip(pod), pod);
  EXPECT_EQ(dumps(pod).size(), sizeof(Pod));

  const Packed packed{7, 0x01020304};
  EXPECT_EQ(round_trip(packed), packed);
  EXPECT_EQ(dumps(packed), bytes_of({7, 4, 3, 2, 1}));  // serialize() beats memcpy

  WithCache w;
  w.data = {1, 2, 3, 4};
  w.sum = -1;
  EXPECT_EQ(round_trip(w).sum, 10);

  const Node tree{1, {Node{2, {}}, Node{3, {Node{4, {}}}}}};
  EXPECT_EQ(round_trip(tree), tree);
}

TEST(SerializeRoundTrip, SeveralValuesConcatenate) {
  const Bytes both = dumps(1, std::string("two"), 3.0);
  Bytes expected = dumps(1);
  mproc::dump_into(expected, std::string("two"));
  mproc::dump_into(expected, 3.0);
  EXPECT_EQ(both, expected);
  int a = 0;
  std::string b;
  double c = 0;
  mproc::loads_into(both, a, b, c);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, "two");
  EXPECT_EQ(c, 3.0);
}

TEST(SerializeRoundTrip, LoadReplacesExistingContents) {
  std::vector<std::string> v{"old", "values", "here"};
  mproc::loads_into(dumps(std::vector<std::string>{"new"}), v);
  EXPECT_EQ(v, std::vector<std::string>{"new"});
  std::map<int, int> m{{1, 1}, {2, 2}};
  mproc::loads_into(dumps(std::map<int, int>{{3, 3}}), m);
  EXPECT_EQ(m, (std::map<int, int>{{3, 3}}));
  std::optional<std::string> o = "full";
  mproc::loads_into(dumps(std::optional<std::string>{}), o);
  EXPECT_FALSE(o.has_value());
  std::variant<int, std::string> var = std::string("s");
  mproc::loads_into(dumps(std::variant<int, std::string>{5}), var);
  EXPECT_EQ(var, (std::variant<int, std::string>{5}));
}

TEST(SerializeRoundTrip, ConstObjectThroughMemberSerialize) {
  const Member m{9, "const", {}};
  const Bytes b = dumps(m);
  EXPECT_EQ(loads<Member>(b), m);
}

TEST(SerializeRoundTrip, EmptyPayload) {
  EXPECT_TRUE(dumps().empty());
  EXPECT_NO_THROW(mproc::loads_into(Bytes{}));
  EXPECT_THROW((void)loads<int>(Bytes{}), SerializationError);
  EXPECT_THROW((void)loads<std::string>(Bytes{}), SerializationError);
  EXPECT_EQ(round_trip(std::tuple<>{}), std::tuple<>{});
}

TEST(SerializeRoundTrip, DumpIntoAppends) {
  Bytes buffer = bytes_of({0xaa});
  mproc::dump_into(buffer, std::uint16_t{0x0102});
  EXPECT_EQ(buffer, bytes_of({0xaa, 0x02, 0x01}));
}

// ---- layout: contiguous trivially copyable data is one memcpy ----

TEST(SerializeLayout, ContiguousTriviallyCopyableIsLengthPlusBytes) {
  for (std::size_t n : {0u, 1u, 1000u}) {
    std::vector<double> d(n, 1.25);
    EXPECT_EQ(dumps(d).size(), 8 + n * sizeof(double));
    std::vector<Pod> p(n, Pod{1, 2.0f, {'x', 'y', 'z', 'w'}});
    EXPECT_EQ(dumps(p).size(), 8 + n * sizeof(Pod));
    EXPECT_EQ(dumps(std::string(n, 'q')).size(), 8 + n);
    EXPECT_EQ(dumps(std::vector<Color>(n)).size(), 8 + n);
    EXPECT_EQ(dumps(std::vector<std::array<std::int16_t, 3>>(n)).size(), 8 + n * 6);
    // With serialize(), each element is its own encoding, not its memory.
    EXPECT_EQ(dumps(std::vector<Packed>(n)).size(), 8 + n * 5);
  }
  // The bytes are the memory, after the u64 little-endian count.
  const std::vector<std::int32_t> v{1, -1};
  Bytes expected;
  append_u64(expected, 2);
  for (auto b : {1u, 0u, 0u, 0u, 0xffu, 0xffu, 0xffu, 0xffu}) expected.push_back(std::byte(b));
  EXPECT_EQ(dumps(v), expected);
}

TEST(SerializeLayout, LargeVectorOfDoubles) {
  const std::size_t n = 100'000'000 / sizeof(double);
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i) * 0.5;
  const Bytes b = dumps(v);
  ASSERT_EQ(b.size(), 8 + n * sizeof(double));
  const auto out = loads<std::vector<double>>(b);
  ASSERT_EQ(out.size(), n);
  double sum = 0;
  for (double x : out) sum += x;
  EXPECT_EQ(sum, 0.5 * (static_cast<double>(n) * static_cast<double>(n - 1) / 2));
  EXPECT_EQ(out[n - 1], static_cast<double>(n - 1) * 0.5);
}

TEST(SerializeLayout, LargeString) {
  const std::size_t n = 100'000'000;
  std::string s(n, '\0');
  std::uint32_t x = 12345;
  for (char& c : s) c = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
  const Bytes b = dumps(s);
  ASSERT_EQ(b.size(), 8 + n);
  const auto out = loads<std::string>(b);
  ASSERT_EQ(out.size(), n);
  std::uint64_t h1 = 14695981039346656037ull, h2 = h1;
  for (std::size_t i = 0; i < n; ++i) {
    h1 = (h1 ^ static_cast<unsigned char>(s[i])) * 1099511628211ull;
    h2 = (h2 ^ static_cast<unsigned char>(out[i])) * 1099511628211ull;
  }
  EXPECT_EQ(h1, h2);
  EXPECT_TRUE(out == s);
}

// ---- malformed input ----

using Complex = std::tuple<std::map<std::string, std::vector<std::optional<std::variant<int, std::string>>>>,
                           Member, geo::Point, std::vector<bool>, std::array<bool, 3>,
                           std::unordered_map<int, std::set<std::string>>, Node, Color, Pod,
                           std::list<std::string>, std::deque<std::optional<int>>,
                           std::forward_list<std::multiset<int>>>;

Complex make_complex() {
  using Cell = std::optional<std::variant<int, std::string>>;
  return Complex{{{"k1", {Cell{}, Cell{7}, Cell{std::string("seven")}}}, {"k2", {}}},
                 Member{1, "m", {0.5, 1.5}},
                 geo::Point{1, 2, std::string("p")},
                 {true, false, true, true, false, false, true, false, true},
                 {false, true, false},
                 {{3, {"a", "bb"}}, {4, {}}},
                 Node{1, {Node{2, {}}, Node{3, {Node{4, {}}}}}},
                 Color::green,
                 Pod{5, 6.0f, {'a', 'b', 'c', 'd'}},
                 {"l1", "", "l3"},
                 {std::nullopt, 8, std::nullopt},
                 {{1, 1, 2}, {}}};
}

TEST(SerializeMalformed, TruncationAtEveryPositionThrows) {
  const Complex value = make_complex();
  const Bytes full = dumps(value);
  ASSERT_EQ(loads<Complex>(full), value);
  for (std::size_t n = 0; n < full.size(); ++n) {
    const std::span<const std::byte> prefix(full.data(), n);
    EXPECT_THROW((void)loads<Complex>(prefix), SerializationError) << "prefix of " << n << " bytes";
  }
}

TEST(SerializeMalformed, TruncationMessageNamesWhatWasBeingRead) {
  Bytes b = bytes_of({1, 2, 3});
  expect_error<std::vector<int>>(b, "truncated input: need 8 bytes for length of std::vector<int>, 3 remain");
  expect_error<int>(bytes_of({1}), "need 4 bytes for int, 1 remain");
}

TEST(SerializeMalformed, AllocationWatchSeesAllocations) {
  // Without this, a broken watch would make the "without allocating" tests pass vacuously.
  const std::size_t largest = largest_allocation([] {
    std::vector<char> v(1 << 20);
    EXPECT_EQ(v.size(), 1u << 20);
  });
  EXPECT_GE(largest, 1u << 20);
}

TEST(SerializeMalformed, HostileLengthsThrowWithoutAllocating) {
  for (std::uint64_t n : {std::numeric_limits<std::uint64_t>::max(), std::uint64_t{1} << 40,
                          std::uint64_t{1} << 62, std::uint64_t{1000}}) {
    Bytes b;
    append_u64(b, n);
    for (int i = 0; i < 64; ++i) b.push_back(std::byte{0});
    const std::size_t largest = largest_allocation([&] {
      EXPECT_THROW((void)loads<std::vector<double>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::string>(b), SerializationError);
      EXPECT_THROW((void)loads<std::vector<std::string>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::vector<bool>>(b), SerializationError);
      EXPECT_THROW((void)(loads<std::map<int, std::vector<int>>>(b)), SerializationError);
      EXPECT_THROW((void)loads<std::unordered_set<std::uint64_t>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::vector<Member>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::vector<std::vector<char>>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::list<std::string>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::forward_list<double>>(b), SerializationError);
      EXPECT_THROW((void)loads<std::deque<std::optional<char>>>(b), SerializationError);
    });
    EXPECT_LT(largest, 64u * 1024) << "length " << n;
  }
  Bytes b;
  append_u64(b, std::uint64_t{1} << 40);
  expect_error<std::vector<double>>(b, "length 1099511627776 of std::vector<double> exceeds the input");
}

TEST(SerializeMalformed, CountIsBoundedByFewestBytesPerElement) {
  // 3 strings need at least 3 * 8 bytes after the count; 16 is not enough.
  Bytes b;
  append_u64(b, 3);
  for (int i = 0; i < 16; ++i) b.push_back(std::byte{0});
  expect_error<std::vector<std::string>>(b, "needs at least 8 byte(s) per element and 16 bytes remain");
}

TEST(SerializeMalformed, InvalidBoolByte) {
  expect_error<bool>(bytes_of({2}), "invalid bool byte 0x02");
  expect_error<bool>(bytes_of({0xff}), "invalid bool byte 0xff");
  expect_error<Flag>(bytes_of({7}), "invalid bool byte 0x07");
  expect_error<std::array<bool, 2>>(bytes_of({1, 0x80}), "invalid bool byte 0x80");
  expect_error<std::tuple<int, bool>>(bytes_of({0, 0, 0, 0, 5}), "invalid bool byte 0x05 at offset 4");
}

TEST(SerializeMalformed, InvalidVariantIndex) {
  using V = std::variant<int, std::string, double>;
  expect_error<V>(bytes_of({7, 0, 0, 0, 0}), "invalid variant index 7 of 3");
  expect_error<V>(bytes_of({3, 0, 0, 0, 0}), "invalid variant index 3 of 3");
}

TEST(SerializeMalformed, InvalidOptionalFlag) {
  expect_error<std::optional<int>>(bytes_of({2, 0, 0, 0, 0}), "invalid optional flag 0x02");
}

TEST(SerializeMalformed, VectorBoolPaddingBitsMustBeZero) {
  Bytes b;
  append_u64(b, 3);
  b.push_back(std::byte{0b1000'0101});
  expect_error<std::vector<bool>>(b, "nonzero padding bits");
}

TEST(SerializeMalformed, DuplicateKeys) {
  Bytes b;
  append_u64(b, 2);
  for (int key : {5, 5}) {
    const Bytes k = dumps(key, std::string("v"));
    b.insert(b.end(), k.begin(), k.end());
  }
  expect_error<std::map<int, std::string>>(b, "duplicate key");
  expect_error<std::unordered_map<int, std::string>>(b, "duplicate key");
  Bytes s;
  append_u64(s, 2);
  for (int key : {5, 5}) {
    const Bytes k = dumps(key);
    s.insert(s.end(), k.begin(), k.end());
  }
  expect_error<std::set<int>>(s, "duplicate key");
}

// Each encoding of `keys` (ints), with the count in front: the bytes of a set<int>.
Bytes set_bytes(std::initializer_list<int> keys) {
  Bytes b;
  append_u64(b, keys.size());
  for (int key : keys) {
    const Bytes k = dumps(key);
    b.insert(b.end(), k.begin(), k.end());
  }
  return b;
}

TEST(SerializeMalformed, OrderedKeysMustBeIncreasing) {
  // A std::map or std::set iterates in key order, so its encoding lists the keys in that
  // order; bytes listing them otherwise are a second encoding of the same value.
  Bytes m;
  append_u64(m, 2);
  for (int key : {7, 5}) {
    const Bytes k = dumps(key, std::string("v"));
    m.insert(m.end(), k.begin(), k.end());
  }
  expect_error<std::map<int, std::string>>(m, "keys out of order in std::map<int, ");
  expect_error<std::set<int>>(set_bytes({7, 5}), "keys out of order in std::set<int");
  expect_error<std::set<int>>(set_bytes({1, 2, 3, 9, 4}), "at element 4");
  // Of the orders of {1, 2, 3}, exactly the sorted one decodes.
  std::array<int, 3> keys{1, 2, 3};
  int accepted = 0;
  do {
    try {
      EXPECT_EQ(loads<std::set<int>>(set_bytes({keys[0], keys[1], keys[2]})), (std::set<int>{1, 2, 3}));
      ++accepted;
      EXPECT_EQ(keys, (std::array<int, 3>{1, 2, 3}));
    } catch (const SerializationError& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("keys out of order"));
    }
  } while (std::next_permutation(keys.begin(), keys.end()));
  EXPECT_EQ(accepted, 1);
  // The order is the container's own: a set with std::greater lists its keys descending.
  EXPECT_EQ((loads<std::set<int, std::greater<>>>(set_bytes({7, 5}))), (std::set<int, std::greater<>>{5, 7}));
  expect_error<std::set<int, std::greater<>>>(set_bytes({5, 7}), "keys out of order");
  // Unordered containers have no order to keep.
  EXPECT_EQ(loads<std::unordered_set<int>>(set_bytes({7, 5})), (std::unordered_set<int>{5, 7}));
}

TEST(SerializeMalformed, MultiKeysMayRepeatButNotDescend) {
  EXPECT_EQ(loads<std::multiset<int>>(set_bytes({5, 5, 7})), (std::multiset<int>{5, 5, 7}));
  expect_error<std::multiset<int>>(set_bytes({5, 7, 5}), "keys out of order in std::multiset<int");
  expect_error<std::set<int>>(set_bytes({5, 5, 7}), "duplicate key in std::set<int");
  Bytes m;
  append_u64(m, 3);
  for (int key : {1, 1, 0}) {
    const Bytes k = dumps(key, key);
    m.insert(m.end(), k.begin(), k.end());
  }
  expect_error<std::multimap<int, int>>(m, "keys out of order in std::multimap<int, int");
  EXPECT_EQ((loads<std::unordered_multimap<int, int>>(m)), (std::unordered_multimap<int, int>{{1, 1}, {1, 1}, {0, 0}}));
  expect_error<std::unordered_map<int, int>>(m, "duplicate key");
}

TEST(SerializeMalformed, DecodeAllocationIsBoundedByTheInput) {
  // 16 KiB of zeros read as a vector of empty optionals of 64 KiB arrays: one byte per
  // element on the wire, 64 KiB per element in memory. It used to allocate 1 GiB.
  using Big = std::vector<std::optional<std::array<char, 65536>>>;
  Bytes b;
  append_u64(b, 16384 - 8);
  b.resize(16384, std::byte{0});
  const std::size_t total = total_allocation([&] {
    try {
      (void)loads<Big>(b);
      ADD_FAILURE() << "16 KiB decoded into a vector of 16376 64 KiB optionals";
    } catch (const SerializationError& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("of 16376 elements would allocate"));
    }
  });
  EXPECT_LT(total, std::size_t{1} << 20);
}

TEST(SerializeMalformed, ListNodesCountAgainstTheBudget) {
  // An empty optional<char> is 1 byte on the wire and, in a list, a node of 2 pointers and
  // the optional: 24 bytes, within 64 per byte. With 4 KiB arrays it is not.
  Bytes b;
  append_u64(b, 100000);
  b.resize(8 + 100000, std::byte{0});
  EXPECT_EQ(loads<std::list<std::optional<char>>>(b).size(), 100000u);
  std::size_t total = total_allocation([&] {
    expect_error<std::list<std::optional<std::array<char, 4096>>>>(b, "of 100000 elements would allocate");
  });
  EXPECT_LT(total, std::size_t{1} << 20);
  // A deque allocates blocks even when empty: a vector of empty deques is charged for them.
  Bytes d;
  append_u64(d, 1'000'000);
  for (int i = 0; i < 1'000'000; ++i) append_u64(d, 0);
  EXPECT_EQ(loads<std::vector<std::vector<int>>>(d).size(), 1'000'000u);
  total = total_allocation([&] {
    expect_error<std::vector<std::deque<char>>>(d, "would allocate");
  });
  EXPECT_LT(total, std::size_t{1} << 20);
}

TEST(SerializeMalformed, DecodeAllocationIsBoundedInTotal) {
  // Each inner vector alone stays under the fixed allowance (900 x 64 KiB, 59 MB); the 16
  // of them together (944 MB from 14.5 KiB) do not: the bound is on the whole value, not
  // on each allocation.
  using Inner = std::vector<std::optional<std::array<char, 65536>>>;
  Bytes b;
  append_u64(b, 16);
  for (int i = 0; i < 16; ++i) {
    append_u64(b, 900);
    b.insert(b.end(), 900, std::byte{0});
  }
  const std::size_t total = total_allocation(
      [&] { EXPECT_THROW((void)loads<std::vector<Inner>>(b), SerializationError); });
  EXPECT_LT(total, std::size_t{128} << 20);
}

TEST(SerializeMalformed, TrailingBytesThrow) {
  Bytes b = dumps(42);
  b.push_back(std::byte{0});
  expect_error<int>(b, "1 trailing bytes");
  int x = 0;
  EXPECT_THROW(mproc::loads_into(b, x), SerializationError);
  EXPECT_THROW(mproc::loads_into(bytes_of({1})), SerializationError);
}

TEST(SerializeMalformed, DeepNestingIsRefused) {
  // A hostile chain of nodes, each with one child, deeper than max_depth: the decoder must
  // refuse it rather than recurse until the stack overflows.
  Bytes b;
  const std::size_t depth = 100'000;
  for (std::size_t i = 0; i < depth; ++i) {
    for (int j = 0; j < 4; ++j) b.push_back(std::byte{0});
    append_u64(b, i + 1 < depth ? 1 : 0);
  }
  expect_error<Node>(b, "nested deeper than 1024");

  // The encoder refuses the same, so whatever dumps writes, loads reads.
  Node chain;
  Node* tip = &chain;
  for (std::size_t i = 0; i < mproc::OutputArchive::max_depth; ++i) {
    tip->children.resize(1);
    tip = &tip->children[0];
  }
  EXPECT_THROW((void)dumps(chain), SerializationError);
  Node shallower = std::move(chain.children[0]);
  EXPECT_EQ(round_trip(shallower), shallower);
}

TEST(SerializeEncode, ContainerOfEmptyEncodingsIsRefusedAtEncode) {
  Bytes buffer = bytes_of({1, 2});
  EXPECT_THROW(mproc::dump_into(buffer, std::vector<Empty>(3)), SerializationError);
  EXPECT_EQ(buffer, bytes_of({1, 2})) << "dump_into must leave the buffer as it was";
  EXPECT_EQ(dumps(std::vector<Empty>{}).size(), 8u);
  EXPECT_EQ(dumps(Empty{}).size(), 0u);
}

struct ThrowsOnCopy {
  ThrowsOnCopy() = default;
  ThrowsOnCopy(const ThrowsOnCopy&) { throw 1; }
  ThrowsOnCopy& operator=(const ThrowsOnCopy&) = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(dummy);
  }
  int dummy = 0;
};

TEST(SerializeEncode, WhatTheDecoderWouldRefuseForItsAllocationIsRefusedAtEncode) {
  // n empty optionals of 64 KiB arrays: 8 + n bytes, n * 65537 bytes to decode into. The
  // largest n the budget allows round-trips; one more is refused on both sides.
  using Opt = std::optional<std::array<char, 65536>>;
  using Big = std::vector<Opt>;
  constexpr std::size_t allowance = mproc::InputArchive::alloc_allowance;
  constexpr std::size_t per_byte = mproc::InputArchive::alloc_per_byte;
  static_assert(mproc::OutputArchive::alloc_allowance == allowance);
  const std::size_t most = (allowance + 8 * per_byte) / (sizeof(Opt) - per_byte);
  ASSERT_LE(most * sizeof(Opt), allowance + per_byte * (8 + most));
  ASSERT_GT((most + 1) * sizeof(Opt), allowance + per_byte * (9 + most));
  EXPECT_EQ(round_trip(Big(most)).size(), most);

  Bytes buffer = bytes_of({1, 2});
  try {
    mproc::dump_into(buffer, Big(most + 1));
    ADD_FAILURE() << "encoded what the decoder refuses";
  } catch (const SerializationError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("would allocate " + std::to_string((most + 1) * sizeof(Opt))));
  }
  EXPECT_EQ(buffer, bytes_of({1, 2})) << "dump_into must leave the buffer as it was";
  Bytes b;
  append_u64(b, most + 1);
  b.resize(8 + most + 1, std::byte{0});
  EXPECT_THROW((void)loads<Big>(b), SerializationError);

  // The budget is per value: two values each within theirs encode and decode together,
  // in one call or in two.
  const Bytes two = dumps(Big(most), Big(most));
  Big x, y;
  mproc::loads_into(two, x, y);
  EXPECT_EQ(x.size() + y.size(), 2 * most);
  mproc::InputArchive in(two);
  in(x);
  in(y);
  EXPECT_TRUE(in.at_end());
  EXPECT_EQ(x.size() + y.size(), 2 * most);
}

TEST(SerializeEncode, LargeDenseValuesAreWithinTheBudget) {
  // Containers whose elements are at least a few bytes on the wire are nowhere near the
  // allowance, whatever their size: a million-node map, a vector of 3 million strings.
  std::map<std::int32_t, std::int32_t> m;
  for (std::int32_t i = 0; i < 1'000'000; ++i) m.emplace_hint(m.end(), i, -i);
  EXPECT_EQ(round_trip(m), m);
  const std::vector<std::string> strings(3'000'000, "x");
  EXPECT_EQ(round_trip(strings), strings);
}

TEST(SerializeEncode, ValuelessVariantIsRefused) {
  using Throws = ThrowsOnCopy;
  std::variant<int, Throws> v;
  try {
    v.emplace<1>(Throws{});
  } catch (int) {
  }
  ASSERT_TRUE(v.valueless_by_exception());
  EXPECT_THROW((void)dumps(v), SerializationError);
}

TEST(SerializeArchive, AppendsAcrossCalls) {
  Bytes buffer;
  mproc::OutputArchive ar(buffer);
  ar(std::uint32_t{1});
  EXPECT_EQ(buffer.size(), 4u);
  buffer.push_back(std::byte{0xee});  // the caller appends between calls
  ar(std::uint8_t{2}, std::string(5000, 'x'));
  EXPECT_EQ(buffer.size(), 4u + 1 + 1 + 8 + 5000);
  ar.write_bytes("ab", 2);
  EXPECT_EQ(buffer.size(), 4u + 1 + 1 + 8 + 5000 + 2);
  EXPECT_EQ(buffer[4], std::byte{0xee});
  EXPECT_EQ(buffer[5], std::byte{2});
  EXPECT_EQ(buffer.back(), std::byte{'b'});
  // Many small writes through one call equal one dumps.
  Bytes many;
  mproc::OutputArchive many_ar(many);
  std::vector<std::pair<int, std::string>> pairs;
  for (int i = 0; i < 10000; ++i) pairs.emplace_back(i, std::string(static_cast<std::size_t>(i % 7), 'z'));
  many_ar(pairs);
  EXPECT_EQ(many, dumps(pairs));
  EXPECT_EQ(loads<decltype(pairs)>(many), pairs);
}

// reserve(n) after what is already there: the next n bytes, however written, move nothing.
TEST(SerializeArchive, ReserveMakesRoomForTheBytesToCome) {
  Bytes buffer(3, std::byte{7});
  mproc::OutputArchive ar(buffer);
  ar.reserve(8 + 4000 * 4);
  const std::byte* before = buffer.data();
  ar(std::uint64_t{4000});
  for (std::uint32_t i = 0; i < 4000; ++i) ar.write_bytes(&i, 4);
  EXPECT_EQ(buffer.data(), before);
  EXPECT_EQ(buffer.size(), 3u + 8 + 4000 * 4);
  std::vector<std::uint32_t> values(4000);
  for (std::uint32_t i = 0; i < 4000; ++i) values[i] = i;
  EXPECT_EQ(loads<std::vector<std::uint32_t>>(std::span(buffer).subspan(3)), values);
}

TEST(SerializeArchive, LowLevelReads) {
  const Bytes b = dumps(std::uint32_t{0xdeadbeef}, std::uint8_t{9});
  mproc::InputArchive in(b);
  std::uint32_t x = 0;
  in.read_bytes(&x, sizeof x);
  EXPECT_EQ(x, 0xdeadbeefu);
  EXPECT_EQ(in.position(), 4u);
  EXPECT_EQ(in.remaining(), 1u);
  EXPECT_THROW((void)in.read_span(2), SerializationError);
  EXPECT_EQ(in.read_span(1)[0], std::byte{9});
  EXPECT_TRUE(in.at_end());
  static_assert(mproc::InputArchive::is_loading && !mproc::InputArchive::is_saving);
  static_assert(mproc::OutputArchive::is_saving && !mproc::OutputArchive::is_loading);
}

// ---- framing ----

std::vector<Bytes> sample_payloads() {
  return {dumps(std::string("first frame")), Bytes{}, dumps(std::vector<int>{1, 2, 3}),
          bytes_of({'M', 'P', 'R', 'F'})};
}

Bytes concatenated_frames(const std::vector<Bytes>& payloads) {
  Bytes stream;
  for (const Bytes& p : payloads) {
    const Bytes f = mproc::encode_frame(p);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  return stream;
}

std::vector<Bytes> drain(mproc::FrameDecoder& d) {
  std::vector<Bytes> out;
  while (auto f = d.next()) out.push_back(std::move(*f));
  return out;
}

TEST(Frame, HeaderLayout) {
  const Bytes f = mproc::encode_frame(bytes_of({0xaa, 0xbb}));
  Bytes expected = bytes_of({'M', 'P', 'R', 'F', 0, 0, 0, 0});
  append_u64(expected, 2);
  expected.push_back(std::byte{0xaa});
  expected.push_back(std::byte{0xbb});
  EXPECT_EQ(f, expected);
}

TEST(Frame, ManyFramesInOneFeed) {
  const auto payloads = sample_payloads();
  mproc::FrameDecoder d;
  d.feed(concatenated_frames(payloads));
  EXPECT_EQ(drain(d), payloads);
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.next(), std::nullopt);
}

TEST(Frame, SplitAtEveryPairOfPositions) {
  const auto payloads = sample_payloads();
  const Bytes stream = concatenated_frames(payloads);
  const std::span<const std::byte> s(stream);
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    for (std::size_t j = i; j <= stream.size(); ++j) {
      mproc::FrameDecoder d;
      std::vector<Bytes> got;
      d.feed(s.subspan(0, i));
      for (auto f = d.next(); f; f = d.next()) got.push_back(std::move(*f));
      d.feed(s.subspan(i, j - i));
      for (auto f = d.next(); f; f = d.next()) got.push_back(std::move(*f));
      d.feed(s.subspan(j));
      for (auto f = d.next(); f; f = d.next()) got.push_back(std::move(*f));
      ASSERT_EQ(got, payloads) << "split at " << i << " and " << j;
    }
  }
}

TEST(Frame, ByteByByte) {
  const auto payloads = sample_payloads();
  const Bytes stream = concatenated_frames(payloads);
  mproc::FrameDecoder d;
  std::vector<Bytes> got;
  for (std::byte b : stream) {
    d.feed(std::span<const std::byte>(&b, 1));
    for (auto f = d.next(); f; f = d.next()) got.push_back(std::move(*f));
  }
  EXPECT_EQ(got, payloads);
}

TEST(Frame, BadMagicIsReportedAfterTheGoodFrames) {
  Bytes stream = concatenated_frames({bytes_of({1}), bytes_of({2})});
  const Bytes bad = bytes_of({'X', 'P', 'R', 'F', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  stream.insert(stream.end(), bad.begin(), bad.end());
  mproc::FrameDecoder d;
  d.feed(stream);
  EXPECT_EQ(d.next(), bytes_of({1}));
  EXPECT_EQ(d.next(), bytes_of({2}));
  try {
    (void)d.next();
    ADD_FAILURE() << "bad magic accepted";
  } catch (const SerializationError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("bad frame magic 0x58"));
  }
  EXPECT_THROW((void)d.next(), SerializationError) << "the decoder stays failed";
  EXPECT_THROW(d.feed(mproc::encode_frame(bytes_of({3}))), SerializationError);
}

TEST(Frame, OversizeFrameIsRefusedBeforeItsPayloadArrives) {
  mproc::FrameDecoder d(1024);
  const auto header = mproc::encode_frame_header(1025);
  const std::size_t largest = largest_allocation([&] { d.feed(header); });
  EXPECT_LT(largest, 1024u);
  EXPECT_THROW((void)d.next(), SerializationError);

  mproc::FrameDecoder exact(4);
  exact.feed(mproc::encode_frame(bytes_of({1, 2, 3, 4})));
  EXPECT_EQ(exact.next(), bytes_of({1, 2, 3, 4}));

  // A huge declared length within the limit allocates with the data, not the declaration.
  mproc::FrameDecoder big;
  const auto huge = mproc::encode_frame_header(std::uint64_t{1} << 33);
  const std::size_t grown = largest_allocation([&] {
    big.feed(huge);
    big.feed(bytes_of({1, 2, 3}));
  });
  EXPECT_LT(grown, 1024u);
  EXPECT_EQ(big.next(), std::nullopt);
  EXPECT_EQ(big.pending_bytes(), mproc::frame_header_size + 3);
}

TEST(Frame, NonzeroReservedBytesAreRefused) {
  Bytes f = mproc::encode_frame(bytes_of({1}));
  f[5] = std::byte{1};
  mproc::FrameDecoder d;
  d.feed(f);
  EXPECT_THROW((void)d.next(), SerializationError);
}

}  // namespace
