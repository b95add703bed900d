// mproc::range, mproc::zip and mproc::chunks: Python's range and zip, numpy's
// array_split, as C++ ranges.
#include <mproc/range.hpp>

#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <list>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace {

template <class R>
auto to_vector(R&& r) {
  std::vector<std::ranges::range_value_t<R>> out;
  for (auto&& x : r) out.push_back(x);
  return out;
}

using StepInt = decltype(mproc::range(0, 1, 1));
static_assert(std::ranges::random_access_range<StepInt>);
static_assert(std::ranges::sized_range<StepInt>);
static_assert(std::ranges::view<StepInt>);
static_assert(std::is_same_v<std::ranges::range_value_t<decltype(mproc::range(0, 5L, 1))>, long>);

TEST(Range, StepFollowsPython) {
  EXPECT_EQ(to_vector(mproc::range(0, 10, 3)), (std::vector<int>{0, 3, 6, 9}));
  EXPECT_EQ(to_vector(mproc::range(1, 10, 3)), (std::vector<int>{1, 4, 7}));
  EXPECT_EQ(to_vector(mproc::range(10, 0, -2)), (std::vector<int>{10, 8, 6, 4, 2}));
  EXPECT_EQ(to_vector(mproc::range(10, -1, -5)), (std::vector<int>{10, 5, 0}));
  EXPECT_EQ(to_vector(mproc::range(-3, 3, 1)), (std::vector<int>{-3, -2, -1, 0, 1, 2}));
  EXPECT_EQ(to_vector(mproc::range(5, 6, 100)), (std::vector<int>{5}));
  // Python's len(range(...)) for the same arguments.
  EXPECT_EQ(mproc::range(0, 10, 3).size(), 4u);
  EXPECT_EQ(mproc::range(0, 9, 3).size(), 3u);
  EXPECT_EQ(mproc::range(10, 0, -3).size(), 4u);
  EXPECT_EQ(mproc::range(-10, 10, 7).size(), 3u);
}

TEST(Range, EmptyWhenTheStepPointsAway) {
  EXPECT_TRUE(mproc::range(0, 10, -1).empty());
  EXPECT_TRUE(mproc::range(10, 0, 1).empty());
  EXPECT_TRUE(mproc::range(5, 5, 1).empty());
  EXPECT_TRUE(mproc::range(5, 5, -1).empty());
  EXPECT_EQ(mproc::range(10, 0, 1).size(), 0u);
  EXPECT_EQ(mproc::range(10, 0, 1).begin(), mproc::range(10, 0, 1).end());
}

TEST(Range, StepZeroIsInvalidArgument) {
  EXPECT_THROW(mproc::range(0, 10, 0), std::invalid_argument);
  EXPECT_THROW(mproc::range(0L, 10L, 0L), std::invalid_argument);
}

TEST(Range, RandomAccessIndexesAndJumps) {
  auto r = mproc::range(100, -100, -7);
  const auto n = static_cast<std::ptrdiff_t>(r.size());
  ASSERT_EQ(n, 29);  // 100, 93, ..., -96
  EXPECT_EQ(r[0], 100);
  EXPECT_EQ(r[28], -96);
  EXPECT_EQ(r.back(), -96);
  EXPECT_EQ(*(r.begin() + 10), 30);
  EXPECT_EQ(r.end() - r.begin(), n);
  auto it = r.end();
  --it;
  EXPECT_EQ(*it, -96);
  it -= 2;
  EXPECT_EQ(*it, -82);
  EXPECT_TRUE(r.begin() < it);
  // std::views compose with it.
  auto taken = to_vector(r | std::views::reverse | std::views::take(3));
  EXPECT_EQ(taken, (std::vector<int>{-96, -89, -82}));
}

TEST(Range, ExtremesDoNotOverflow) {
  auto down = mproc::range(INT_MAX, INT_MIN, -1);
  EXPECT_EQ(down.size(), (1ull << 32) - 1);  // INT_MAX down to INT_MIN + 1
  EXPECT_EQ(down[0], INT_MAX);
  EXPECT_EQ(down[static_cast<std::ptrdiff_t>(down.size()) - 1], INT_MIN + 1);
  auto wide = mproc::range(INT64_MIN, INT64_MAX, INT64_MAX);
  EXPECT_EQ(to_vector(wide), (std::vector<std::int64_t>{INT64_MIN, -1, INT64_MAX - 1}));
  auto unsigned_steps = mproc::range(0u, 10u, 4u);
  EXPECT_EQ(to_vector(unsigned_steps), (std::vector<unsigned>{0, 4, 8}));
}

TEST(Range, TypesNarrowerThanIntCountLikePython) {
  // len(range(127, -128, -1)) == 255, len(range(-128, 127, 2)) == 128: the arithmetic
  // on int8 promotes to int and must come back to the type's own width.
  auto down = mproc::range(std::int8_t{127}, std::int8_t{-128}, std::int8_t{-1});
  EXPECT_EQ(down.size(), 255u);
  EXPECT_EQ(down[254], -127);
  auto up = mproc::range(std::int8_t{-128}, std::int8_t{127}, std::int8_t{2});
  EXPECT_EQ(up.size(), 128u);
  EXPECT_EQ(up[127], 126);
  auto shorts = mproc::range(std::int16_t{32767}, std::int16_t{-32768}, std::int16_t{-1});
  EXPECT_EQ(shorts.size(), 65535u);
}

TEST(Zip, TuplesUpToTheShortestInput) {
  std::vector<int> a{1, 2, 3, 4};
  std::vector<std::string> b{"one", "two", "three"};
  auto z = mproc::zip(a, b);
  static_assert(std::ranges::random_access_range<decltype(z)>);
  static_assert(std::ranges::sized_range<decltype(z)>);
  static_assert(std::is_same_v<std::ranges::range_value_t<decltype(z)>,
                               std::tuple<int, std::string>>);
  ASSERT_EQ(z.size(), 3u);
  auto v = to_vector(z);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], std::make_tuple(1, std::string("one")));
  EXPECT_EQ(v[2], std::make_tuple(3, std::string("three")));
  EXPECT_EQ(z[1], std::make_tuple(2, std::string("two")));
  EXPECT_EQ(z.end() - z.begin(), 3);
  EXPECT_EQ(std::ranges::distance(z), 3);
}

TEST(Zip, ThreeInputsOfDifferentKindsAndOwnedRvalues) {
  std::list<double> linked{0.5, 1.5, 2.5, 3.5, 4.5};
  auto z = mproc::zip(mproc::range(0, 10, 2), linked, std::vector<char>{'a', 'b', 'c', 'd'});
  static_assert(std::ranges::bidirectional_range<decltype(z)>);
  static_assert(!std::ranges::random_access_range<decltype(z)>);
  static_assert(std::ranges::sized_range<decltype(z)>);
  EXPECT_EQ(z.size(), 4u);
  auto v = to_vector(z);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[3], std::make_tuple(6, 3.5, 'd'));
  EXPECT_EQ(v[0], std::make_tuple(0, 0.5, 'a'));

  // An unsized input: not sized, still ends with the shortest.
  auto evens = std::views::iota(0) | std::views::filter([](int x) { return x % 2 == 0; });
  auto zf = mproc::zip(evens, std::vector<int>{7, 8, 9});
  static_assert(!std::ranges::sized_range<decltype(zf)>);
  EXPECT_EQ(to_vector(zf), (std::vector<std::tuple<int, int>>{{0, 7}, {2, 8}, {4, 9}}));

  EXPECT_TRUE(mproc::zip(std::vector<int>{}, linked).empty());
}

TEST(Chunks, ArraySplitSizesAndContents) {
  std::vector<int> v(10);
  for (int i = 0; i < 10; ++i) v[i] = i;
  auto parts = mproc::chunks(v, 3);  // numpy: [0 1 2 3] [4 5 6] [7 8 9]
  static_assert(std::is_same_v<decltype(parts), std::vector<std::span<int>>>);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(to_vector(parts[0]), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(to_vector(parts[1]), (std::vector<int>{4, 5, 6}));
  EXPECT_EQ(to_vector(parts[2]), (std::vector<int>{7, 8, 9}));
  parts[1][0] = 40;  // the parts refer to the input
  EXPECT_EQ(v[4], 40);

  // More parts than elements: the last ones are empty, as numpy's.
  auto many = mproc::chunks(v, 12);
  ASSERT_EQ(many.size(), 12u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(many[i].size(), 1u);
  EXPECT_TRUE(many[10].empty());
  EXPECT_TRUE(many[11].empty());

  const std::vector<int> empty;
  auto none = mproc::chunks(empty, 4);
  ASSERT_EQ(none.size(), 4u);
  for (auto& p : none) EXPECT_TRUE(p.empty());
  EXPECT_THROW(mproc::chunks(v, 0), std::invalid_argument);
}

TEST(Chunks, EveryElementOnceInOrderForAnySplit) {
  for (std::size_t size : {0u, 1u, 7u, 64u, 1001u}) {
    std::list<std::size_t> linked;
    for (std::size_t i = 0; i < size; ++i) linked.push_back(i);
    for (std::size_t n : {1u, 2u, 3u, 8u, 13u}) {
      auto parts = mproc::chunks(linked, n);
      ASSERT_EQ(parts.size(), n);
      std::vector<std::size_t> joined;
      std::size_t smallest = SIZE_MAX, largest = 0;
      for (auto& p : parts) {
        const auto len = static_cast<std::size_t>(std::ranges::distance(p));
        smallest = std::min(smallest, len);
        largest = std::max(largest, len);
        for (auto x : p) joined.push_back(x);
      }
      EXPECT_LE(largest - smallest, 1u) << size << "/" << n;
      ASSERT_EQ(joined.size(), size);
      for (std::size_t i = 0; i < size; ++i) ASSERT_EQ(joined[i], i);
      // The longer parts come first.
      if (size % n != 0) {
        EXPECT_EQ(std::ranges::distance(parts.front()), static_cast<std::ptrdiff_t>(largest));
        EXPECT_EQ(std::ranges::distance(parts.back()), static_cast<std::ptrdiff_t>(smallest));
      }
    }
  }
}

}  // namespace
