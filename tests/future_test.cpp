// Future<T>: the shared result handle every backend returns.
#include <mproc/future.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

TEST(Future, GetBlocksUntilSetAndCopiesShareTheResult) {
  auto state = std::make_shared<mproc::detail::FutureState<std::string>>();
  mproc::Future<std::string> f(state);
  mproc::Future<std::string> copy = f;
  EXPECT_FALSE(f.done());
  EXPECT_FALSE(f.wait_for(10ms));
  std::thread producer([state] {
    std::this_thread::sleep_for(20ms);
    state->set_value("hello");
  });
  EXPECT_EQ(f.get(), "hello");
  EXPECT_TRUE(copy.done());
  EXPECT_EQ(copy.get(), "hello");  // get() may be called again, from any copy
  EXPECT_EQ(f.exception(), nullptr);
  producer.join();
  EXPECT_FALSE(state->set_value("late"));  // set once; later results are ignored
  EXPECT_EQ(f.get(), "hello");
}

TEST(Future, GetRethrowsTheErrorEveryTime) {
  auto state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> f(state);
  state->set_exception(std::make_exception_ptr(std::invalid_argument("bad")));
  EXPECT_THROW(f.get(), std::invalid_argument);
  EXPECT_THROW(f.get(), std::invalid_argument);
  EXPECT_NE(f.exception(), nullptr);
}

TEST(Future, GetWithTimeoutThrowsTimeoutError) {
  auto state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> f(state);
  EXPECT_THROW(f.get(20ms), mproc::TimeoutError);
  state->set_value(7);
  EXPECT_EQ(f.get(20ms), 7);
}

TEST(Future, VoidFuture) {
  auto state = std::make_shared<mproc::detail::FutureState<void>>();
  mproc::Future<void> f(state);
  EXPECT_FALSE(f.done());
  state->set_value();
  f.get();
  EXPECT_TRUE(f.done());
}

TEST(Future, DoneCallbackRunsExactlyOnceBeforeOrAfterCompletion) {
  for (int round = 0; round < 1000; ++round) {
    auto state = std::make_shared<mproc::detail::FutureState<int>>();
    mproc::Future<int> f(state);
    std::atomic<int> calls{0};
    std::thread producer([state] { state->set_value(1); });
    f.add_done_callback([&](const mproc::Future<int>& g) {
      EXPECT_TRUE(g.done());
      EXPECT_EQ(g.get(), 1);
      ++calls;
    });
    producer.join();
    f.add_done_callback([&](const mproc::Future<int>&) { ++calls; });  // after completion
    EXPECT_EQ(calls.load(), 2) << "round " << round;
  }
}

TEST(Future, DefaultConstructedHasNoState) {
  mproc::Future<int> f;
  EXPECT_FALSE(f.valid());
  EXPECT_THROW(f.get(), std::future_error);
}

}  // namespace
