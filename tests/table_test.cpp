// mproc::Array2D and Pool::map_rows: a table of rows in shared memory, mapped row by row
// on the thread and process backends, results and in-place writes, a crash on one row,
// empty tables and rows.
#include <mproc/pool.hpp>
#include <mproc/serialize.hpp>
#include <mproc/shared.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sanitizers.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace {

/// Row i holds i, 2i + 1, ..., a different row for every i.
mproc::Array2D<double> make_table(std::size_t rows, std::size_t cols) {
  mproc::Array2D<double> t(rows, cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j)
      t(i, j) = static_cast<double>((i * 37 + j * 11) % 101) - 50.0 + static_cast<double>(j);
  return t;
}

double hypot_row(std::span<const double> row) {
  double s = 0;
  for (double x : row) s += x * x;
  return std::sqrt(s);
}

void normalize_row(std::span<double> row) {
  const auto [lo, hi] = std::minmax_element(row.begin(), row.end());
  const double min = *lo, span = *hi - *lo;
  for (double& x : row) x = span == 0 ? 0.0 : (x - min) / span;
}

std::size_t row_size(std::span<const double> row) { return row.size() + 1; }

TEST(Array2D, ShapeRowsAndElements) {
  mproc::Array2D<int> t(3, 4, 7);
  EXPECT_EQ(t.rows(), 3u);
  EXPECT_EQ(t.cols(), 4u);
  EXPECT_EQ(t.size(), 12u);
  t(1, 2) = 5;
  EXPECT_EQ(t.row(1)[2], 5);
  EXPECT_EQ(t.row(1).size(), 4u);
  EXPECT_EQ(t.row(2).data(), t.data() + 8);
  EXPECT_EQ(std::accumulate(t.span().begin(), t.span().end(), 0), 11 * 7 + 5);
  EXPECT_THROW((void)t.at_row(3), std::out_of_range);
  // Copies are handles to the same memory.
  mproc::Array2D<int> u = t;
  u(0, 0) = -1;
  EXPECT_EQ(t(0, 0), -1);
}

TEST(Array2D, EmptyShapes) {
  mproc::Array2D<double> none;
  EXPECT_EQ(none.rows(), 0u);
  EXPECT_TRUE(none.empty());
  mproc::Array2D<double> no_cols(5, 0);
  EXPECT_EQ(no_cols.rows(), 5u);
  EXPECT_EQ(no_cols.row(4).size(), 0u);
  mproc::Array2D<double> no_rows(0, 5);
  EXPECT_EQ(no_rows.size(), 0u);
}

TEST(Array2D, OverflowingShapeIsALengthError) {
  EXPECT_THROW(mproc::Array2D<double>(std::numeric_limits<std::size_t>::max() / 2, 3),
               std::length_error);
}

TEST(Array2D, TravelsAsAHandleAndChecksItsShape) {
  mproc::Array2D<float> t(100, 30, 1.5f);
  const auto bytes = mproc::dumps(t);
  EXPECT_LT(bytes.size(), 100u);  // a handle, not 3000 floats
  auto back = mproc::loads<mproc::Array2D<float>>(bytes);
  EXPECT_EQ(back.rows(), 100u);
  EXPECT_EQ(back.cols(), 30u);
  back(99, 29) = 4.0f;
  EXPECT_EQ(t(99, 29), 4.0f);
  // A forged shape that does not match the data is refused, never read past the end.
  auto forged = bytes;
  std::uint64_t rows = 0;
  std::memcpy(&rows, forged.data() + forged.size() - 16, 8);
  ASSERT_EQ(rows, 100u);
  rows = 101;
  std::memcpy(forged.data() + forged.size() - 16, &rows, 8);
  EXPECT_THROW((void)mproc::loads<mproc::Array2D<float>>(forged), mproc::SerializationError);
}

using Case = std::tuple<mproc::Backend, unsigned>;
class MapRows : public ::testing::TestWithParam<Case> {
 protected:
  mproc::Backend backend() const { return std::get<0>(GetParam()); }
  mproc::Pool make_pool() const {
    return mproc::Pool({.workers = std::get<1>(GetParam()), .backend = backend()});
  }
};

TEST_P(MapRows, ResultsEqualTheSerialLoop) {
  mproc::Pool pool = make_pool();
  // Made after the pool: the workers reach it through the handle, not the fork.
  const auto table = make_table(2000, 5);
  std::vector<double> want;
  for (std::size_t i = 0; i < table.rows(); ++i) want.push_back(hypot_row(table.row(i)));
  for (std::size_t chunksize : {0, 1, 7, 500}) {
    SCOPED_TRACE("chunksize " + std::to_string(chunksize));
    EXPECT_EQ(pool.map_rows(hypot_row, table, {.chunksize = chunksize}), want);
  }
  // A lambda (numbers captured) taking a mutable span works as well.
  const double scale = 2.0;
  auto scaled = [scale](std::span<double> row) { return scale * hypot_row(row); };
  const auto twice = pool.map_rows(scaled, table);
  ASSERT_EQ(twice.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(twice[i], 2.0 * want[i]);
}

TEST_P(MapRows, InPlaceWritesAreSeenByTheParent) {
  mproc::Pool pool = make_pool();
  auto table = make_table(3000, 5);
  auto expected = make_table(3000, 5);
  std::vector<std::vector<double>> want;
  for (std::size_t i = 0; i < expected.rows(); ++i) {
    std::vector<double> row(expected.row(i).begin(), expected.row(i).end());
    normalize_row(row);
    want.push_back(row);
  }
  pool.map_rows(normalize_row, table, {.chunksize = 64});
  for (std::size_t i = 0; i < table.rows(); ++i)
    ASSERT_EQ(std::vector<double>(table.row(i).begin(), table.row(i).end()), want[i])
        << "row " << i;
}

TEST_P(MapRows, EmptyTableAndRowsOfNoColumns) {
  mproc::Pool pool = make_pool();
  EXPECT_TRUE(pool.map_rows(hypot_row, mproc::Array2D<double>(0, 5)).empty());
  EXPECT_TRUE(pool.map_rows(hypot_row, mproc::Array2D<double>()).empty());
  pool.map_rows(normalize_row, mproc::Array2D<double>(0, 3));  // void over nothing returns
  EXPECT_EQ(pool.map_rows(row_size, mproc::Array2D<double>(9, 0)),
            std::vector<std::size_t>(9, 1));
}

TEST_P(MapRows, ARowThatThrowsFailsTheCall) {
  mproc::Pool pool = make_pool();
  auto table = make_table(50, 3);
  auto picky = [](std::span<const double> row) {
    if (row[0] == row[1]) throw std::domain_error("equal leading columns");
    return row[0] - row[1];
  };
  table(17, 0) = 1.0;
  table(17, 1) = 1.0;
  try {
    (void)pool.map_rows(picky, table, {.chunksize = 4});
    FAIL() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("equal leading columns"));
  }
}

TEST_P(MapRows, AnUnshippableCallableWorksOnThreadsOnly) {
  mproc::Pool pool = make_pool();
  const auto table = make_table(10, 4);
  const std::vector<double> weights{1, 2, 3, 4};
  auto weighted = [weights](std::span<const double> row) {
    return std::inner_product(row.begin(), row.end(), weights.begin(), 0.0);
  };
  if (backend() == mproc::Backend::thread) {
    const auto got = pool.map_rows(weighted, table);
    ASSERT_EQ(got.size(), 10u);
    EXPECT_DOUBLE_EQ(got[3], std::inner_product(table.row(3).begin(), table.row(3).end(),
                                                weights.begin(), 0.0));
  } else {
    EXPECT_THROW((void)pool.map_rows(weighted, table), std::invalid_argument);
  }
}

INSTANTIATE_TEST_SUITE_P(
    BackendsAndWorkers, MapRows,
    ::testing::Combine(::testing::Values(mproc::Backend::thread, mproc::Backend::process),
                       ::testing::Values(1u, 2u, 4u)),
    [](const auto& p) {
      return std::string(std::get<0>(p.param) == mproc::Backend::thread ? "thread"
                                                                            : "process") +
             "_" + std::to_string(std::get<1>(p.param));
    });

/// Writes row i in place, but segfaults on the row whose first element is -1000.
void write_or_crash(std::span<double> row) {
  if (row[0] == -1000.0) std::raise(SIGSEGV);
  for (double& x : row) x = 1.0;
}

TEST(MapRowsProcess, AWorkerCrashFailsThatRowOnly) {
  mproc::Pool pool({.workers = 2, .backend = mproc::Backend::process});
  mproc::Array2D<double> table(200, 4, 0.0);
  table(123, 0) = -1000.0;
  try {
    pool.map_rows(write_or_crash, table, {.chunksize = 10});
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.task_index(), std::optional<std::size_t>(123));
    EXPECT_EQ(e.signal(), kSegvSignal);
  }
  // Every other row ran and wrote in place; the crashed row kept its bytes.
  for (std::size_t i = 0; i < table.rows(); ++i) {
    if (i == 123) {
      EXPECT_EQ(table(i, 0), -1000.0);
      EXPECT_EQ(table(i, 1), 0.0);
    } else {
      for (double x : table.row(i)) ASSERT_EQ(x, 1.0) << "row " << i;
    }
  }
  // The pool goes on with a replacement worker.
  EXPECT_EQ(pool.map_rows(row_size, mproc::Array2D<double>(3, 2)),
            std::vector<std::size_t>(3, 3));
}

}  // namespace
