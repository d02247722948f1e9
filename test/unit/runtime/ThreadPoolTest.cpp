//===- ThreadPoolTest.cpp - The CPU thread pool ---------------------------===//

#include "attn/Runtime/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using namespace attn;

namespace {

TEST(ThreadPoolTest, RunsEveryIterationOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.getNumThreads(), 3u);
  for (int64_t n : {0, 1, 2, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallelFor(n, [&](int64_t i) { hits[i].fetch_add(1); });
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, UsesSeveralThreads) {
  ThreadPool pool(3);
  std::mutex m;
  std::set<std::thread::id> ids;
  pool.parallelFor(64, [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_GT(ids.size(), 1u);
}

TEST(ThreadPoolTest, NestedAndConcurrentCallsDoNotDeadlock) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  pool.parallelFor(8, [&](int64_t i) {
    pool.parallelFor(10, [&](int64_t j) { sum += i * 10 + j; });
  });
  EXPECT_EQ(sum.load(), 79 * 80 / 2);
  std::atomic<int64_t> a{0}, b{0};
  std::thread t1([&] {
    for (int r = 0; r < 50; ++r)
      pool.parallelFor(100, [&](int64_t) { ++a; });
  });
  std::thread t2([&] {
    for (int r = 0; r < 50; ++r)
      pool.parallelFor(100, [&](int64_t) { ++b; });
  });
  t1.join();
  t2.join();
  EXPECT_EQ(a.load(), 5000);
  EXPECT_EQ(b.load(), 5000);
}

TEST(ThreadPoolTest, ZeroWorkers) {
  ThreadPool pool(0);
  int64_t sum = 0;
  pool.parallelFor(100, [&](int64_t i) { sum += i; });
  EXPECT_EQ(sum, 4950);
}

} // namespace
