//===- fma_peak.cpp - The machine's fp32 FMA peak, measured ---------------===//
//
// attn-fma-peak [--threads N|all] [--seconds S] [--json]
//
// Runs independent fused multiply-add chains and reports fp32 GFLOP/s, one
// thread and then every thread (std::thread), so the CPU benchmark can state
// its results as a fraction of what this machine actually reaches (turbo,
// AVX-512 frequency offsets and virtualisation included).
//
// Kernels are chosen at run time: AVX-512F (zmm), AVX2+FMA (ymm), or plain
// scalar C++ as a floor. Each kernel keeps 16 accumulators: enough to cover
// FMA latency (4-5 cycles) times throughput (2 per cycle) on current x86
// cores. The file is compiled with -O2 and no -m flags; the vector kernels
// get their ISA from per-function target attributes.
//
// One FMA counts as 2 FLOPs per lane.
//
//===----------------------------------------------------------------------===//

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// The accumulators are 16 named variables, not an array, so the compiler
// keeps every chain in its own register.
#define ATTN_FMA16(FMA)                                                        \
  a0 = FMA(a0, x, y);                                                          \
  a1 = FMA(a1, x, y);                                                          \
  a2 = FMA(a2, x, y);                                                          \
  a3 = FMA(a3, x, y);                                                          \
  a4 = FMA(a4, x, y);                                                          \
  a5 = FMA(a5, x, y);                                                          \
  a6 = FMA(a6, x, y);                                                          \
  a7 = FMA(a7, x, y);                                                          \
  a8 = FMA(a8, x, y);                                                          \
  a9 = FMA(a9, x, y);                                                          \
  a10 = FMA(a10, x, y);                                                        \
  a11 = FMA(a11, x, y);                                                        \
  a12 = FMA(a12, x, y);                                                        \
  a13 = FMA(a13, x, y);                                                        \
  a14 = FMA(a14, x, y);                                                        \
  a15 = FMA(a15, x, y);

constexpr int kChains = 16;

/// Runs `iterations` rounds of 16 independent vector FMAs; returns a value
/// that depends on every chain so nothing is optimised away.
__attribute__((target("avx512f"))) float runAvx512(int64_t iterations,
                                                   float seed) {
  // x * acc + y with x slightly below 1 keeps the values finite forever.
  __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f * seed);
  __m512 a0 = _mm512_set1_ps(seed), a1 = _mm512_set1_ps(seed + 1),
         a2 = _mm512_set1_ps(seed + 2), a3 = _mm512_set1_ps(seed + 3),
         a4 = _mm512_set1_ps(seed + 4), a5 = _mm512_set1_ps(seed + 5),
         a6 = _mm512_set1_ps(seed + 6), a7 = _mm512_set1_ps(seed + 7),
         a8 = _mm512_set1_ps(seed + 8), a9 = _mm512_set1_ps(seed + 9),
         a10 = _mm512_set1_ps(seed + 10), a11 = _mm512_set1_ps(seed + 11),
         a12 = _mm512_set1_ps(seed + 12), a13 = _mm512_set1_ps(seed + 13),
         a14 = _mm512_set1_ps(seed + 14), a15 = _mm512_set1_ps(seed + 15);
#define ATTN_FMA512(acc, a, b) _mm512_fmadd_ps(acc, a, b)
  for (int64_t i = 0; i < iterations; ++i) {
    ATTN_FMA16(ATTN_FMA512)
    // An empty asm that "reads" the accumulators stops the compiler from
    // collapsing iterations.
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3));
  }
#undef ATTN_FMA512
  __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                    _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
      _mm512_add_ps(
          _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
          _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
  float lanes[16];
  _mm512_storeu_ps(lanes, s);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}

__attribute__((target("avx2,fma"))) float runAvx2(int64_t iterations,
                                                  float seed) {
  __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f * seed);
  __m256 a0 = _mm256_set1_ps(seed), a1 = _mm256_set1_ps(seed + 1),
         a2 = _mm256_set1_ps(seed + 2), a3 = _mm256_set1_ps(seed + 3),
         a4 = _mm256_set1_ps(seed + 4), a5 = _mm256_set1_ps(seed + 5),
         a6 = _mm256_set1_ps(seed + 6), a7 = _mm256_set1_ps(seed + 7),
         a8 = _mm256_set1_ps(seed + 8), a9 = _mm256_set1_ps(seed + 9),
         a10 = _mm256_set1_ps(seed + 10), a11 = _mm256_set1_ps(seed + 11),
         a12 = _mm256_set1_ps(seed + 12), a13 = _mm256_set1_ps(seed + 13),
         a14 = _mm256_set1_ps(seed + 14), a15 = _mm256_set1_ps(seed + 15);
#define ATTN_FMA256(acc, a, b) _mm256_fmadd_ps(acc, a, b)
  for (int64_t i = 0; i < iterations; ++i) {
    ATTN_FMA16(ATTN_FMA256)
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));
  }
#undef ATTN_FMA256
  __m256 s = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                    _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))),
      _mm256_add_ps(
          _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)),
          _mm256_add_ps(_mm256_add_ps(a12, a13), _mm256_add_ps(a14, a15))));
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}

float runScalar(int64_t iterations, float seed) {
  float x = 0.999999f, y = 1e-7f * seed;
  float a0 = seed, a1 = seed + 1, a2 = seed + 2, a3 = seed + 3, a4 = seed + 4,
        a5 = seed + 5, a6 = seed + 6, a7 = seed + 7, a8 = seed + 8,
        a9 = seed + 9, a10 = seed + 10, a11 = seed + 11, a12 = seed + 12,
        a13 = seed + 13, a14 = seed + 14, a15 = seed + 15;
#define ATTN_FMA1(acc, a, b) ((acc) * (a) + (b))
  for (int64_t i = 0; i < iterations; ++i) {
    ATTN_FMA16(ATTN_FMA1)
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));
  }
#undef ATTN_FMA1
  return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 +
         a13 + a14 + a15;
}

struct Kernel {
  const char *isa;
  int lanes;
  float (*run)(int64_t, float);
};

Kernel pickKernel(const std::string &forced) {
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f");
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if ((forced.empty() || forced == "avx512") && avx512)
    return {"avx512f", 16, runAvx512};
  if ((forced.empty() || forced == "avx2" || forced == "avx512") && avx2)
    return {"avx2+fma", 8, runAvx2};
  return {"scalar", 1, runScalar};
}

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::atomic<float> sink{0};

/// GFLOP/s of `threads` threads each running `iterations` rounds; the
/// threads start together and the time is wall time until the last ends.
double measure(const Kernel &kernel, unsigned threads, int64_t iterations) {
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire))
        std::this_thread::yield();
      float r = kernel.run(iterations, 1.0f + t);
      sink.store(sink.load() + r);
    });
  while (ready.load() < threads)
    std::this_thread::yield();
  auto start = Clock::now();
  go.store(true, std::memory_order_release);
  for (std::thread &worker : workers)
    worker.join();
  double seconds = secondsSince(start);
  double flops = 2.0 * kernel.lanes * kChains * double(iterations) * threads;
  return flops / seconds * 1e-9;
}

/// The best of `trials` runs of about `seconds` each: the peak is what the
/// machine can do, so interference only ever lowers a trial.
double peak(const Kernel &kernel, unsigned threads, double seconds,
            int trials) {
  // Calibrate single-threaded: iterations for the requested duration.
  int64_t iterations = 1 << 16;
  for (;;) {
    auto start = Clock::now();
    sink.store(sink.load() + kernel.run(iterations, 1.0f));
    double elapsed = secondsSince(start);
    if (elapsed > 0.02) {
      iterations = std::max<int64_t>(1, int64_t(iterations * seconds / elapsed));
      break;
    }
    iterations *= 4;
  }
  double best = 0;
  for (int trial = 0; trial < trials; ++trial)
    best = std::max(best, measure(kernel, threads, iterations));
  return best;
}

[[noreturn]] void usage(const char *message) {
  if (message)
    std::fprintf(stderr, "attn-fma-peak: %s\n", message);
  std::fprintf(stderr,
               "usage: attn-fma-peak [--threads N|all|1,all] [--seconds S] "
               "[--trials N] [--isa avx512|avx2|scalar] [--json]\n");
  std::exit(message ? 2 : 0);
}

} // namespace

int main(int argc, char **argv) {
  unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned> threadCounts{1, hardware};
  double seconds = 0.3;
  int trials = 3;
  bool json = false;
  std::string isa;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--threads") {
      threadCounts.clear();
      std::string list = value();
      size_t pos = 0;
      while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string item = list.substr(pos, comma == std::string::npos
                                                ? std::string::npos
                                                : comma - pos);
        unsigned count = item == "all" ? hardware : unsigned(std::atoi(item.c_str()));
        if (count == 0)
          usage(("bad thread count '" + item + "'").c_str());
        threadCounts.push_back(count);
        if (comma == std::string::npos)
          break;
        pos = comma + 1;
      }
    } else if (arg == "--seconds") {
      seconds = std::atof(value().c_str());
    } else if (arg == "--trials") {
      trials = std::max(1, std::atoi(value().c_str()));
    } else if (arg == "--isa") {
      isa = value();
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--help" || arg == "-h") {
      usage(nullptr);
    } else {
      usage(("unknown argument '" + arg + "'").c_str());
    }
  }
  Kernel kernel = pickKernel(isa);
  for (unsigned threads : threadCounts) {
    double gflops = peak(kernel, threads, seconds, trials);
    if (json)
      std::printf("{\"what\": \"fma_peak\", \"dtype\": \"f32\", \"isa\": "
                  "\"%s\", \"threads\": %u, \"hardware_threads\": %u, "
                  "\"gflops\": %.2f, \"flops_per_cycle_note\": \"2 per FMA "
                  "lane\"}\n",
                  kernel.isa, threads, hardware, gflops);
    else
      std::printf("fp32 FMA peak (%s, %u thread%s): %.1f GFLOP/s\n", kernel.isa,
                  threads, threads == 1 ? "" : "s", gflops);
    std::fflush(stdout);
  }
  return sink.load() == 12345.0f ? 1 : 0;
}
