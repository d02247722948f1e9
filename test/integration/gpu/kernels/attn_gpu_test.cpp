//===- attn_gpu_test.cpp - Run the generated attention PTX on a GPU -------===//
//
// Standalone: only cuda.h and libcuda. Build and run from this directory:
//   g++ -O2 -std=c++17 attn_gpu_test.cpp -o attn_gpu_test \
//       -I/usr/local/cuda/include -lcuda
//   ./attn_gpu_test [--no-perf] [--sm80]
//
// For each generated kernel (*.ptx + *.json manifest from attn-gpu-gen) it
// fills random bf16 inputs, launches with grid [ceil(M/BM), H, B], block
// [32 BM/16] and the manifest's dynamic shared memory, and compares O (and
// LSE) with a double-precision CPU reference of the variant, at small sizes
// (M = N, M != N, fully masked rows). Then it times causal attention at
// L = 16384, H = 16, D = 128, B = 1 (median of 20 launches; 4 D flops per
// kept (query, key) pair). One line per case; exit status 1 on any FAIL.
// The sm_90a PTX is used on compute capability 9.x, the sm_80 PTX elsewhere
// or with --sm80 (it JIT-compiles for Hopper too).
//
//===----------------------------------------------------------------------===//

#include <cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

#define CHECK_CU(call)                                                         \
  do {                                                                         \
    CUresult status_ = (call);                                                 \
    if (status_ != CUDA_SUCCESS) {                                             \
      const char *name_ = nullptr;                                             \
      cuGetErrorName(status_, &name_);                                         \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,       \
                   #call, name_ ? name_ : "?");                                \
      std::exit(2);                                                            \
    }                                                                          \
  } while (0)

const double kNegInf = -std::numeric_limits<double>::infinity();

uint16_t toBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}
float fromBf16(uint16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s (run from the kernels directory)\n",
                 path.c_str());
    std::exit(2);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Reads an integer field `"key": N` of the one-line manifest.
long manifestInt(const std::string &json, const std::string &key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) {
    std::fprintf(stderr, "manifest has no %s\n", key.c_str());
    std::exit(2);
  }
  // A number, or the first number of an array ("block": [128, 1, 1]).
  const char *value = json.c_str() + at + key.size() + 3;
  while (*value == ' ' || *value == '[')
    ++value;
  return std::strtol(value, nullptr, 10);
}

/// What the reference needs to know about a variant.
struct Variant {
  std::string name; // file stem: NAME.ptx, NAME.json
  bool causal = false;
  bool window = false; // m - W < n <= m, W a capture (i64)
  bool softcap = false; // 30 tanh(s / 30)
  bool hasLse = false;
  bool hasSink = false;
};

struct Kernel {
  CUmodule module = nullptr;
  CUfunction function = nullptr;
  long blockM = 64, threads = 128, sharedBytes = 0;
};

Kernel loadKernel(const Variant &variant) {
  std::string ptx = readFile(variant.name + ".ptx");
  std::string json = readFile(variant.name + ".json");
  Kernel kernel;
  kernel.blockM = manifestInt(json, "block_m");
  kernel.threads = manifestInt(json, "block");
  kernel.sharedBytes = manifestInt(json, "shared_bytes");
  char log[8192] = {0};
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log, reinterpret_cast<void *>(sizeof(log))};
  CUresult status =
      cuModuleLoadDataEx(&kernel.module, ptx.c_str(), 2, options, values);
  if (status != CUDA_SUCCESS) {
    std::fprintf(stderr, "loading %s.ptx failed: %d\n%s\n",
                 variant.name.c_str(), status, log);
    std::exit(2);
  }
  CHECK_CU(cuModuleGetFunction(&kernel.function, kernel.module, "attn_fwd"));
  CHECK_CU(cuFuncSetAttribute(kernel.function,
                              CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                              static_cast<int>(kernel.sharedBytes)));
  return kernel;
}

struct Problem {
  int B = 1, H = 1, G = 1, M = 1, N = 1, D = 128;
  float scale = 0.088388f;
  int64_t window = 0;
};

/// Device buffers of one problem; Q [B,H,M,D], K/V [B,G,N,D] bf16, O
/// [B,H,M,D] f32, LSE and sink [B,H,M] f32, all contiguous.
struct Buffers {
  CUdeviceptr q = 0, k = 0, v = 0, o = 0, lse = 0, sink = 0;
  size_t qCount = 0, kvCount = 0, rowCount = 0;
};

CUdeviceptr allocate(size_t bytes) {
  CUdeviceptr p;
  CHECK_CU(cuMemAlloc(&p, std::max<size_t>(bytes, 16)));
  return p;
}

void launch(const Kernel &kernel, const Problem &p, const Buffers &buf,
            CUstream stream) {
  int32_t B = p.B, H = p.H, G = p.G, M = p.M, N = p.N;
  int64_t D = p.D;
  int64_t qs[3] = {int64_t(H) * M * D, int64_t(M) * D, D};
  int64_t ks[3] = {int64_t(G) * N * D, int64_t(N) * D, D};
  int64_t os[3] = {int64_t(H) * M * D, int64_t(M) * D, D};
  int64_t ls[2] = {int64_t(H) * M, M};
  int64_t ss[3] = {int64_t(H) * M, M, 1};
  float scale = p.scale;
  int64_t window = p.window;
  // The decode kernels' workspace and split count, and the live-block
  // lists, unused by the attention kernels of these variants.
  CUdeviceptr partials = 0, tiles = 0;
  int32_t splits = 0;
  // The order of GpuKernelSignature (see GpuKernel.h).
  void *args[] = {(void *)&buf.q,
                  (void *)&buf.k,
                  (void *)&buf.v,
                  (void *)&buf.o,
                  (void *)&buf.lse,
                  (void *)&buf.sink,
                  &B,
                  &H,
                  &G,
                  &M,
                  &N,
                  &qs[0],
                  &qs[1],
                  &qs[2],
                  &ks[0],
                  &ks[1],
                  &ks[2],
                  &ks[0],
                  &ks[1],
                  &ks[2],
                  &os[0],
                  &os[1],
                  &os[2],
                  &ls[0],
                  &ls[1],
                  &ss[0],
                  &ss[1],
                  &ss[2],
                  &scale,
                  &partials,
                  &splits,
                  &tiles,
                  &window};
  unsigned gridX = (M + kernel.blockM - 1) / kernel.blockM;
  CHECK_CU(cuLaunchKernel(kernel.function, gridX, H, B, kernel.threads, 1, 1,
                          kernel.sharedBytes, stream, args, nullptr));
}

/// Reference for one (b, h, m) row: O row and LSE, double precision.
void referenceRow(const Variant &variant, const Problem &p,
                  const std::vector<float> &q, const std::vector<float> &k,
                  const std::vector<float> &v, const std::vector<float> &sink,
                  int b, int h, int m, std::vector<double> &out,
                  double &lse) {
  const int g = h / (p.H / p.G);
  const float *qr = &q[((size_t(b) * p.H + h) * p.M + m) * p.D];
  std::vector<double> s(p.N);
  std::vector<char> kept(p.N, 0);
  double max = kNegInf;
  for (int n = 0; n < p.N; ++n) {
    bool keep = true;
    if (variant.causal)
      keep = n <= m;
    if (variant.window)
      keep = n <= m && int64_t(n) + p.window > m;
    if (!keep)
      continue;
    const float *kr = &k[((size_t(b) * p.G + g) * p.N + n) * p.D];
    double dot = 0;
    for (int d = 0; d < p.D; ++d)
      dot += double(qr[d]) * kr[d];
    double x = p.scale * dot;
    if (variant.softcap)
      x = 30.0 * std::tanh(x / 30.0);
    s[n] = x;
    kept[n] = 1;
    max = std::max(max, x);
  }
  double sum = 0;
  for (int n = 0; n < p.N; ++n)
    if (kept[n])
      sum += std::exp(s[n] - max);
  out.assign(p.D, 0.0);
  lse = sum == 0 ? kNegInf : max + std::log(sum);
  if (sum == 0)
    return;
  double top = max, denominator = sum;
  if (variant.hasSink) {
    double sk = sink[(size_t(b) * p.H + h) * p.M + m];
    top = std::max(max, sk);
    denominator = sum * std::exp(max - top) + std::exp(sk - top);
  }
  for (int n = 0; n < p.N; ++n) {
    if (!kept[n])
      continue;
    double w = std::exp(s[n] - top) / denominator;
    const float *vr = &v[((size_t(b) * p.G + g) * p.N + n) * p.D];
    for (int e = 0; e < p.D; ++e)
      out[e] += w * vr[e];
  }
}

bool runCheck(const Variant &variant, const Kernel &kernel, Problem p,
              const char *label) {
  std::mt19937 rng(1234 + p.M * 7 + p.N);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  size_t qCount = size_t(p.B) * p.H * p.M * p.D;
  size_t kvCount = size_t(p.B) * p.G * p.N * p.D;
  size_t rows = size_t(p.B) * p.H * p.M;
  std::vector<uint16_t> qh(qCount), kh(kvCount), vh(kvCount);
  std::vector<float> q(qCount), k(kvCount), v(kvCount), sink(rows);
  auto fill = [&](std::vector<uint16_t> &h, std::vector<float> &f) {
    for (size_t i = 0; i < h.size(); ++i) {
      h[i] = toBf16(uniform(rng));
      f[i] = fromBf16(h[i]);
    }
  };
  fill(qh, q);
  fill(kh, k);
  fill(vh, v);
  for (float &x : sink)
    x = 2.f * uniform(rng);

  Buffers buf;
  buf.q = allocate(qCount * 2);
  buf.k = allocate(kvCount * 2);
  buf.v = allocate(kvCount * 2);
  buf.o = allocate(qCount * 4);
  buf.lse = allocate(rows * 4);
  buf.sink = allocate(rows * 4);
  CHECK_CU(cuMemcpyHtoD(buf.q, qh.data(), qCount * 2));
  CHECK_CU(cuMemcpyHtoD(buf.k, kh.data(), kvCount * 2));
  CHECK_CU(cuMemcpyHtoD(buf.v, vh.data(), kvCount * 2));
  CHECK_CU(cuMemcpyHtoD(buf.sink, sink.data(), rows * 4));
  // NaN-fill the outputs so that a row the kernel forgets is caught.
  CHECK_CU(cuMemsetD32(buf.o, 0x7fc00000, qCount));
  CHECK_CU(cuMemsetD32(buf.lse, 0x7fc00000, rows));
  launch(kernel, p, buf, nullptr);
  CHECK_CU(cuCtxSynchronize());
  std::vector<float> o(qCount), lse(rows);
  CHECK_CU(cuMemcpyDtoH(o.data(), buf.o, qCount * 4));
  CHECK_CU(cuMemcpyDtoH(lse.data(), buf.lse, rows * 4));

  double maxErrO = 0, maxErrLse = 0;
  size_t bad = 0, emptyRows = 0;
  std::vector<double> ref;
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h)
      for (int m = 0; m < p.M; ++m) {
        double refLse;
        referenceRow(variant, p, q, k, v, sink, b, h, m, ref, refLse);
        size_t row = (size_t(b) * p.H + h) * p.M + m;
        if (std::isinf(refLse))
          ++emptyRows;
        for (int e = 0; e < p.D; ++e) {
          double got = o[row * p.D + e];
          double err = std::fabs(got - ref[e]);
          if (!(err <= 1e-2 + 1e-2 * std::fabs(ref[e])))
            ++bad;
          if (!(err <= maxErrO))
            maxErrO = std::isnan(err) ? INFINITY : err;
        }
        if (variant.hasLse) {
          double got = lse[row];
          bool ok = std::isinf(refLse)
                        ? (std::isinf(got) && got < 0)
                        : std::fabs(got - refLse) <= 2e-3 * (1 + std::fabs(refLse));
          if (!ok)
            ++bad;
          if (!std::isinf(refLse))
            maxErrLse = std::max(maxErrLse, std::fabs(got - refLse));
        }
      }
  for (CUdeviceptr ptr : {buf.q, buf.k, buf.v, buf.o, buf.lse, buf.sink})
    cuMemFree(ptr);
  std::printf("%-5s %-12s %-22s B=%d H=%d G=%d M=%d N=%d W=%lld  "
              "max|dO|=%.2e max|dLSE|=%.2e empty_rows=%zu bad=%zu\n",
              bad == 0 ? "PASS" : "FAIL", variant.name.c_str(), label, p.B,
              p.H, p.G, p.M, p.N, (long long)p.window, maxErrO, maxErrLse,
              emptyRows, bad);
  return bad == 0;
}

void runPerf(const Variant &variant, const Kernel &kernel, int L, int H,
             bool causal) {
  Problem p;
  p.B = 1, p.H = H, p.G = H, p.M = L, p.N = L, p.D = 128;
  size_t count = size_t(H) * L * p.D;
  Buffers buf;
  buf.q = allocate(count * 2);
  buf.k = allocate(count * 2);
  buf.v = allocate(count * 2);
  buf.o = allocate(count * 4);
  buf.lse = allocate(size_t(H) * L * 4);
  buf.sink = allocate(size_t(H) * L * 4);
  std::vector<uint16_t> host(count);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (uint16_t &x : host)
    x = toBf16(uniform(rng));
  for (CUdeviceptr ptr : {buf.q, buf.k, buf.v})
    CHECK_CU(cuMemcpyHtoD(ptr, host.data(), count * 2));
  CUevent start, stop;
  CHECK_CU(cuEventCreate(&start, CU_EVENT_DEFAULT));
  CHECK_CU(cuEventCreate(&stop, CU_EVENT_DEFAULT));
  for (int i = 0; i < 3; ++i)
    launch(kernel, p, buf, nullptr);
  std::vector<float> times;
  for (int i = 0; i < 20; ++i) {
    CHECK_CU(cuEventRecord(start, nullptr));
    launch(kernel, p, buf, nullptr);
    CHECK_CU(cuEventRecord(stop, nullptr));
    CHECK_CU(cuEventSynchronize(stop));
    float ms;
    CHECK_CU(cuEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  double ms = times[times.size() / 2];
  double pairs = causal ? double(L) * (L + 1) / 2 : double(L) * L;
  double flops = 4.0 * p.D * pairs * H;
  std::printf("PERF  %-12s L=%d H=%d D=128 B=1 bf16: median %.3f ms, "
              "%.1f TFLOP/s\n",
              variant.name.c_str(), L, H, ms, flops / (ms * 1e-3) / 1e12);
  for (CUdeviceptr ptr : {buf.q, buf.k, buf.v, buf.o, buf.lse, buf.sink})
    cuMemFree(ptr);
  cuEventDestroy(start);
  cuEventDestroy(stop);
}

} // namespace

int main(int argc, char **argv) {
  bool perf = true, forceSm80 = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-perf") == 0)
      perf = false;
    else if (std::strcmp(argv[i], "--sm80") == 0)
      forceSm80 = true;
  }
  CHECK_CU(cuInit(0));
  CUdevice device;
  CHECK_CU(cuDeviceGet(&device, 0));
  CUcontext context;
  CHECK_CU(cuDevicePrimaryCtxRetain(&context, device));
  CHECK_CU(cuCtxSetCurrent(context));
  char name[256];
  cuDeviceGetName(name, sizeof(name), device);
  int major = 0, minor = 0;
  cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                       device);
  cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                       device);
  std::printf("device: %s (sm_%d%d)\n", name, major, minor);
  // The PTX is for sm_90a; on another chip use the sm_80 build (gen.sh).
  std::string suffix = major == 9 && !forceSm80 ? "" : ".sm_80";

  auto variant = [&](std::string stem) {
    Variant v;
    v.name = stem + suffix;
    return v;
  };
  Variant causal = variant("causal");
  causal.causal = causal.hasLse = true;
  // The same causal kernel in the other tile configurations (gen.sh).
  Variant causal64 = variant("causal_bm64");
  causal64.causal = causal64.hasLse = true;
  Variant causalN32 = variant("causal_bn32");
  causalN32.causal = causalN32.hasLse = true;
  Variant plain = variant("plain");
  Variant window = variant("window_sink");
  window.window = window.hasLse = window.hasSink = true;
  Variant softcap = variant("softcap");
  softcap.softcap = softcap.hasLse = true;
  Variant gqa = variant("gqa");
  gqa.causal = gqa.hasLse = true;

  bool ok = true;
  auto problem = [](int B, int H, int G, int M, int N, float scale = 0.088388f,
                    int64_t window = 0) {
    Problem p;
    p.B = B, p.H = H, p.G = G, p.M = M, p.N = N, p.scale = scale;
    p.window = window;
    return p;
  };
  Kernel kCausal = loadKernel(causal);
  ok &= runCheck(causal, kCausal, problem(2, 3, 3, 200, 200), "M=N");
  ok &= runCheck(causal, kCausal, problem(1, 2, 2, 200, 333), "M<N");
  ok &= runCheck(causal, kCausal, problem(1, 2, 2, 333, 130), "M>N");
  ok &= runCheck(causal, kCausal, problem(1, 1, 1, 64, 64), "one block");
  Kernel kCausal64 = loadKernel(causal64);
  ok &= runCheck(causal64, kCausal64, problem(2, 3, 3, 200, 200), "M=N");
  ok &= runCheck(causal64, kCausal64, problem(1, 2, 2, 300, 257), "M>N");
  Kernel kCausalN32 = loadKernel(causalN32);
  ok &= runCheck(causalN32, kCausalN32, problem(2, 3, 3, 200, 200), "M=N");
  ok &= runCheck(causalN32, kCausalN32, problem(1, 2, 2, 300, 257), "M>N");
  Kernel kPlain = loadKernel(plain);
  ok &= runCheck(plain, kPlain, problem(2, 3, 3, 200, 200), "M=N");
  ok &= runCheck(plain, kPlain, problem(1, 2, 2, 77, 300), "M<N");
  ok &= runCheck(plain, kPlain, problem(1, 2, 2, 300, 5), "tiny N");
  ok &= runCheck(plain, kPlain, problem(1, 2, 2, 100, 0), "N=0 (all empty)");
  // Negative and zero scales.
  ok &= runCheck(plain, kPlain, problem(1, 2, 2, 77, 300, -0.3f), "scale<0");
  ok &= runCheck(plain, kPlain, problem(1, 2, 2, 77, 130, 0.0f), "scale=0");
  ok &= runCheck(causal, kCausal, problem(1, 2, 2, 130, 200, -0.2f),
                 "scale<0");
  Kernel kWindow = loadKernel(window);
  ok &= runCheck(window, kWindow, problem(2, 3, 3, 200, 200, 0.088388f, 48),
                 "W=48");
  ok &= runCheck(window, kWindow, problem(1, 2, 2, 200, 320, 0.088388f, 100),
                 "W=100 M<N");
  ok &= runCheck(window, kWindow, problem(1, 2, 2, 200, 200, 0.088388f, 0),
                 "W=0 (all empty)");
  Kernel kSoftcap = loadKernel(softcap);
  ok &= runCheck(softcap, kSoftcap, problem(2, 3, 3, 200, 200, 4.0f),
                 "M=N scale=4");
  ok &= runCheck(softcap, kSoftcap, problem(1, 2, 2, 150, 260, 4.0f),
                 "M<N scale=4");
  Kernel kGqa = loadKernel(gqa);
  ok &= runCheck(gqa, kGqa, problem(1, 32, 8, 200, 200), "H=32 G=8");
  ok &= runCheck(gqa, kGqa, problem(2, 32, 8, 130, 200), "H=32 G=8 M<N");

  if (perf) {
    runPerf(causal, kCausal, 16384, 16, true);
    runPerf(causal64, kCausal64, 16384, 16, true);
    runPerf(causalN32, kCausalN32, 16384, 16, true);
    runPerf(plain, kPlain, 8192, 16, false);
  }
  std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
  return ok ? 0 : 1;
}
