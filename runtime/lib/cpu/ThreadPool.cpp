//===- ThreadPool.cpp - A fixed pool of CPU worker threads ----------------===//

#include "attn/Runtime/ThreadPool.h"

#include <algorithm>
#include <cstdlib>

namespace attn {

namespace {
/// Set while a thread runs pool work, to run nested parallelFor inline.
thread_local bool insidePool = false;
} // namespace

unsigned ThreadPool::defaultThreads() {
  if (const char *env = std::getenv("ATTNC_NUM_THREADS")) {
    long n = std::strtol(env, nullptr, 10);
    if (n >= 1 && n <= 1024)
      return static_cast<unsigned>(n - 1);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 1 ? hw - 1 : 0;
}

ThreadPool::ThreadPool(unsigned numThreads) {
  workers.reserve(numThreads);
  for (unsigned i = 0; i < numThreads; ++i)
    workers.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (std::thread &t : workers)
    t.join();
}

void ThreadPool::runChunks() {
  while (true) {
    int64_t begin = next.fetch_add(chunk);
    if (begin >= jobSize)
      return;
    int64_t end = std::min(jobSize, begin + chunk);
    for (int64_t i = begin; i < end; ++i)
      (*job)(i);
  }
}

void ThreadPool::workerLoop() {
  insidePool = true;
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait(lock, [&] { return stopping || generation != seen; });
      if (stopping)
        return;
      seen = generation;
    }
    runChunks();
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (--active == 0)
        done.notify_all();
    }
  }
}

void ThreadPool::parallelFor(int64_t n,
                             const std::function<void(int64_t)> &fn) {
  if (n <= 0)
    return;
  std::unique_lock<std::mutex> jobLock(jobMutex, std::defer_lock);
  if (insidePool || workers.empty() || n == 1 || !jobLock.try_lock()) {
    for (int64_t i = 0; i < n; ++i)
      fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    job = &fn;
    jobSize = n;
    // About 4 chunks per thread balances load without contention.
    int64_t threads = static_cast<int64_t>(workers.size()) + 1;
    chunk = std::max<int64_t>(1, n / (threads * 4));
    next.store(0);
    active = static_cast<unsigned>(workers.size());
    ++generation;
  }
  wake.notify_all();
  insidePool = true;
  runChunks();
  insidePool = false;
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [&] { return active == 0; });
  job = nullptr;
}

} // namespace attn
