//===- ThreadPool.h - A fixed pool of CPU worker threads --------*- C++ -*-===//
//
// The CPU kernels parallelize over (batch, head, query tile); a persistent
// pool avoids spawning threads per call. parallelFor blocks until all
// iterations ran and the calling thread works too, so a pool of N threads
// runs N+1 iterations at a time.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_THREADPOOL_H
#define ATTN_RUNTIME_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attn {

class ThreadPool {
public:
  /// `numThreads` workers besides the caller; by default one fewer than
  /// the hardware's threads.
  explicit ThreadPool(unsigned numThreads = defaultThreads());
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  /// Runs fn(i) for every i in [0, n), in any order and on any thread, and
  /// returns when all have finished. Calls from inside a pool task, and
  /// concurrent calls from other threads, run serially on the caller, so
  /// nesting never deadlocks.
  void parallelFor(int64_t n, const std::function<void(int64_t)> &fn);

  unsigned getNumThreads() const {
    return static_cast<unsigned>(workers.size());
  }

  /// hardware_concurrency() - 1, or ATTNC_NUM_THREADS - 1 when set.
  static unsigned defaultThreads();

private:
  void workerLoop();
  void runChunks();

  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake, done;
  std::mutex jobMutex; ///< held by the one parallelFor in flight

  // The job in flight (guarded by `mutex`, except the atomic counter).
  const std::function<void(int64_t)> *job = nullptr;
  int64_t jobSize = 0;
  int64_t chunk = 1;
  uint64_t generation = 0;
  unsigned active = 0;
  bool stopping = false;
  std::atomic<int64_t> next{0};
};

} // namespace attn

#endif // ATTN_RUNTIME_THREADPOOL_H
