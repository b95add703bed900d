// Future<T>: the shared result handle every backend returns.
#include <mproc/future.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

TEST(Future, ReadyAndSuccessfulAsPythonsAsyncResult) {
  auto ok_state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> ok(ok_state);
  EXPECT_FALSE(ok.ready());
  // Python's successful() raises ValueError before the result is ready.
  EXPECT_THROW((void)ok.successful(), std::logic_error);
  ok_state->set_value(7);
  EXPECT_TRUE(ok.ready());
  EXPECT_TRUE(ok.successful());

  auto bad_state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> bad(bad_state);
  bad_state->set_exception(std::make_exception_ptr(std::out_of_range("no")));
  EXPECT_TRUE(bad.ready());
  EXPECT_FALSE(bad.successful());

  auto void_state = std::make_shared<mproc::detail::FutureState<void>>();
  mproc::Future<void> v(void_state);
  EXPECT_THROW((void)v.successful(), std::logic_error);
  void_state->set_value();
  EXPECT_TRUE(v.successful());

  mproc::Future<int> cancelled(std::make_shared<mproc::detail::FutureState<int>>());
  ASSERT_TRUE(cancelled.cancel());
  EXPECT_TRUE(cancelled.ready());
  EXPECT_FALSE(cancelled.successful());

  mproc::Future<int> none;
  EXPECT_THROW((void)none.ready(), std::future_error);
  EXPECT_THROW((void)none.successful(), std::future_error);
}

TEST(Future, DefaultConstructedHasNoState) {
  mproc::Future<int> f;
  EXPECT_FALSE(f.valid());
  EXPECT_THROW(f.get(), std::future_error);
}

TEST(Future, CancelSucceedsOnlyWhilePending) {
  auto pending = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> f(pending);
  EXPECT_FALSE(f.cancelled());
  EXPECT_TRUE(f.cancel());
  EXPECT_TRUE(f.cancel());  // cancelling again still reports a cancelled future
  EXPECT_TRUE(f.cancelled());
  EXPECT_TRUE(f.done());
  EXPECT_THROW(f.get(), mproc::Cancelled);
  EXPECT_THROW(f.exception(), mproc::Cancelled);  // as Python's Future.exception()
  EXPECT_FALSE(pending->set_running());            // the producer learns it must skip
  EXPECT_FALSE(pending->set_value(1));

  auto running = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> g(running);
  ASSERT_TRUE(running->set_running());
  EXPECT_TRUE(g.running());
  EXPECT_FALSE(g.cancel());
  // No way to stop a running task without a backend hook: kill_running says so.
  EXPECT_FALSE(g.cancel(mproc::CancelMode::kill_running));
  running->set_value(5);
  EXPECT_FALSE(g.running());
  EXPECT_FALSE(g.cancel());
  EXPECT_FALSE(g.cancelled());
  EXPECT_EQ(g.get(), 5);
}

TEST(Future, CancelRacingTheProducerHasExactlyOneWinner) {
  for (int round = 0; round < 1000; ++round) {
    auto state = std::make_shared<mproc::detail::FutureState<int>>();
    mproc::Future<int> f(state);
    std::atomic<int> callbacks{0};
    f.add_done_callback([&](const mproc::Future<int>&) { ++callbacks; });
    bool ran = false;
    std::thread producer([&] {
      if (state->set_running()) {
        ran = true;
        state->set_value(round);
      }
    });
    const bool cancelled = f.cancel();
    producer.join();
    EXPECT_EQ(cancelled, f.cancelled()) << "round " << round;
    EXPECT_NE(cancelled, ran) << "round " << round;  // never both, never neither
    if (cancelled)
      EXPECT_THROW(f.get(), mproc::Cancelled);
    else
      EXPECT_EQ(f.get(), round);
    EXPECT_EQ(callbacks.load(), 1) << "round " << round;
  }
}

TEST(Future, CallbacksRunInOrderOnce) {
  auto state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> f(state);
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) f.add_done_callback([&order, i](const mproc::Future<int>&) {
    order.push_back(i);
  });
  EXPECT_TRUE(order.empty());
  state->set_value(1);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  state->set_value(2);  // ignored: callbacks do not run again
  EXPECT_EQ(order.size(), 5u);
}

TEST(Future, ExceptionFromACallbackIsReportedNotSwallowed) {
  std::vector<std::string> reported;
  auto previous = mproc::set_callback_error_handler([&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      reported.push_back(x.what());
    }
  });
  auto state = std::make_shared<mproc::detail::FutureState<int>>();
  mproc::Future<int> f(state);
  int later = 0;
  f.add_done_callback([](const mproc::Future<int>&) { throw std::runtime_error("cb failed"); });
  f.add_done_callback([&](const mproc::Future<int>& g) { later = g.get(); });
  state->set_value(3);  // the producer is not disturbed by the throwing callback
  EXPECT_EQ(later, 3);  // and the callbacks after it still run
  f.add_done_callback([](const mproc::Future<int>&) { throw std::logic_error("late cb"); });
  EXPECT_EQ(reported, (std::vector<std::string>{"cb failed", "late cb"}));
  mproc::set_callback_error_handler(std::move(previous));
}

TEST(Future, WaitFirstCompletedAllCompletedAndFirstException) {
  std::vector<std::shared_ptr<mproc::detail::FutureState<int>>> states;
  std::vector<mproc::Future<int>> fs;
  for (int i = 0; i < 3; ++i) {
    states.push_back(std::make_shared<mproc::detail::FutureState<int>>());
    fs.emplace_back(states.back());
  }
  auto none = mproc::wait(fs, mproc::ReturnWhen::first_completed, 20ms);
  EXPECT_TRUE(none.done.empty());
  EXPECT_EQ(none.not_done.size(), 3u);

  std::thread t([&] {
    std::this_thread::sleep_for(10ms);
    states[1]->set_value(11);
  });
  auto first = mproc::wait(fs, mproc::ReturnWhen::first_completed);
  t.join();
  ASSERT_EQ(first.done.size(), 1u);
  EXPECT_EQ(first.done[0].get(), 11);
  EXPECT_EQ(first.not_done.size(), 2u);

  // first_exception: a success does not end the wait, an error does.
  std::thread t2([&] {
    std::this_thread::sleep_for(10ms);
    states[2]->set_exception(std::make_exception_ptr(std::runtime_error("boom")));
  });
  auto failed = mproc::wait(fs, mproc::ReturnWhen::first_exception);
  t2.join();
  EXPECT_EQ(failed.done.size(), 2u);
  ASSERT_EQ(failed.not_done.size(), 1u);
  EXPECT_FALSE(failed.not_done[0].done());

  std::thread t3([&] { states[0]->set_value(10); });
  auto all = mproc::wait(fs);
  t3.join();
  EXPECT_EQ(all.done.size(), 3u);
  EXPECT_TRUE(all.not_done.empty());
}

TEST(Future, AsCompletedYieldsInCompletionOrderAndTimesOut) {
  std::vector<std::shared_ptr<mproc::detail::FutureState<int>>> states;
  std::vector<mproc::Future<int>> fs;
  for (int i = 0; i < 4; ++i) {
    states.push_back(std::make_shared<mproc::detail::FutureState<int>>());
    fs.emplace_back(states.back());
  }
  states[2]->set_value(2);  // already done: comes first
  std::thread t([&] {
    for (int i : {3, 0, 1}) {
      std::this_thread::sleep_for(5ms);
      states[static_cast<std::size_t>(i)]->set_value(i);
    }
  });
  std::vector<int> order;
  for (const auto& f : mproc::as_completed(fs)) order.push_back(f.get());
  t.join();
  EXPECT_EQ(order, (std::vector<int>{2, 3, 0, 1}));

  auto stuck = std::make_shared<mproc::detail::FutureState<int>>();
  std::vector<mproc::Future<int>> with_stuck{fs[0], mproc::Future<int>(stuck)};
  std::vector<int> seen;
  EXPECT_THROW(
      {
        for (const auto& f : mproc::as_completed(with_stuck, 30ms)) seen.push_back(f.get());
      },
      mproc::TimeoutError);
  EXPECT_EQ(seen, (std::vector<int>{0}));
  stuck->set_value(1);  // the abandoned range's node is gone: finishing must not crash
}

TEST(Future, WaitersAndCallbacksRaceCompletionWithoutLossOrDuplication) {
  for (int round = 0; round < 1000; ++round) {
    auto state = std::make_shared<mproc::detail::FutureState<int>>();
    mproc::Future<int> f(state);
    std::atomic<int> calls{0};
    std::thread producer([state] { state->set_value(1); });
    std::thread adder([&] { f.add_done_callback([&](const mproc::Future<int>&) { ++calls; }); });
    auto r = mproc::wait(std::vector<mproc::Future<int>>{f}, mproc::ReturnWhen::all_completed);
    producer.join();
    adder.join();
    EXPECT_EQ(r.done.size(), 1u);
    EXPECT_EQ(calls.load(), 1) << "round " << round;
  }
}

}  // namespace
