//===- aot_runner.cpp - Time an ahead-of-time compiled attnc kernel -------===//
//
// A standalone harness (no LLVM, no MLIR) for a kernel object written by
// `attnc compile SPEC --cpu CPU -o kernel.o` (ABI in kernel.json beside it),
// for machines that have no LLVM: it fills the inputs with random data, calls
// the kernel through its packed entry point `void _mlir_<name>(void **args)`,
// and prints one JSON line with the median time and GFLOP/s.
//
// Build (the kernel's parallel loops call LLVM's OpenMP runtime, __kmpc_*:
// link libomp, or Intel's libiomp5 which has the same entry points; GNU
// libgomp does not have them):
//
//   g++ -O2 aot_runner.cpp kernel.o -o runner -L$LIBOMP_DIR -lomp
//       -Wl,-rpath,$LIBOMP_DIR -lm -ldl       (one command line)
//   (a kernel without OpenMP needs no -lomp; or use -o kernel.so and --so)
//
// Run:
//
//   ./runner --kernel causal --dims B=1,H=16,M=2048,N=2048,D=128
//            --in f32:B,H,M,D --in f32:B,H,N,D --in f32:B,H,N,D
//            --out f32:B,H,M,D --mask causal --threads 16 --repeat 10
//   ./runner --kernel causal --preset mha ...   (the --in/--out above)
//   ./runner ... --const-input 2=1 --repeat 1   (V = 1: a softmax kernel's
//            output is then exactly 1 on every row with a kept key; the
//            printed checksum is B*H*M*D for causal/full: a quick ABI check)
//
// Arguments, in the order of kernel.json's "arguments": --dims (every dim, in
// the spec's dims order), --in (one per input: dtype and shape, the shape in
// dim names or numbers), --param (one per param: TYPE=VALUE with TYPE i32,
// i64, f32 or f64), --out (one per output). --kernel NAME calls
// _mlir_NAME; the symbol is found in the executable (linked kernel.o, for
// the kernel names below and for -DATTN_KERNEL=_mlir_NAME) or, with --so FILE, in
// a shared library. FLOPs for GFLOP/s: --mask full|causal|window:W counts
// 4 * D * (kept (query, key) pairs) per batch and query head, as
// bench/cpu_suite.py does; or --flops X.
//
// The packed convention (codegen/cpu/lib/CpuKernel.cpp): one pointer per
// flattened argument. A dim is an int64_t; a memref is allocated pointer,
// aligned pointer, offset, sizes..., strides... (each a separate argument:
// args[k] points at the pointer or the int64_t); a param points at its value
// in its own type. Order: dims, inputs, params, outputs. Tensors are dense,
// row-major, strides in elements; bf16 is 16-bit storage.
//
//===----------------------------------------------------------------------===//

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

using KernelFn = void (*)(void **);

// Weak references: a linked kernel.o defines one of them, the others stay
// null. Add a kernel with -DATTN_KERNEL=_mlir_NAME (then --kernel NAME).
extern "C" {
#define ATTN_WEAK_KERNEL(name) void name(void **) __attribute__((weak));
ATTN_WEAK_KERNEL(_mlir_causal)
ATTN_WEAK_KERNEL(_mlir_bidirectional)
ATTN_WEAK_KERNEL(_mlir_sliding_window)
ATTN_WEAK_KERNEL(_mlir_streaming_llm)
ATTN_WEAK_KERNEL(_mlir_gqa)
ATTN_WEAK_KERNEL(_mlir_alibi)
ATTN_WEAK_KERNEL(_mlir_softcap)
ATTN_WEAK_KERNEL(_mlir_softplus)
ATTN_WEAK_KERNEL(_mlir_sigmoid)
ATTN_WEAK_KERNEL(_mlir_document_mask)
#ifdef ATTN_KERNEL
ATTN_WEAK_KERNEL(ATTN_KERNEL)
#endif
#undef ATTN_WEAK_KERNEL
// OpenMP's thread count, when an OpenMP runtime is linked.
void omp_set_num_threads(int) __attribute__((weak));
int omp_get_max_threads(void) __attribute__((weak));
}

namespace {

#define ATTN_STR2(x) #x
#define ATTN_STR(x) ATTN_STR2(x)

struct Linked {
  const char *name;
  KernelFn fn;
};

std::vector<Linked> linkedKernels() {
  return {
      {"causal", _mlir_causal},
      {"bidirectional", _mlir_bidirectional},
      {"sliding_window", _mlir_sliding_window},
      {"streaming_llm", _mlir_streaming_llm},
      {"gqa", _mlir_gqa},
      {"alibi", _mlir_alibi},
      {"softcap", _mlir_softcap},
      {"softplus", _mlir_softplus},
      {"sigmoid", _mlir_sigmoid},
      {"document_mask", _mlir_document_mask},
#ifdef ATTN_KERNEL
      {ATTN_STR(ATTN_KERNEL) + 6, ATTN_KERNEL}, // drop "_mlir_"
#endif
  };
}

[[noreturn]] void die(const std::string &message) {
  std::fprintf(stderr, "aot_runner: %s\n", message.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string &text, char sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  for (;;) {
    size_t next = text.find(sep, pos);
    parts.push_back(text.substr(pos, next == std::string::npos ? next : next - pos));
    if (next == std::string::npos)
      return parts;
    pos = next + 1;
  }
}

int64_t parseInt(const std::string &text) {
  char *end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end)
    die("expected an integer, got '" + text + "'");
  return value;
}

enum class DType { F32, BF16, F16, F64, I32, I64, I8 };

DType parseDType(const std::string &name) {
  static const std::map<std::string, DType> names{
      {"f32", DType::F32}, {"bf16", DType::BF16}, {"f16", DType::F16},
      {"f64", DType::F64}, {"i32", DType::I32},   {"i64", DType::I64},
      {"i8", DType::I8},   {"i1", DType::I8}};
  auto it = names.find(name);
  if (it == names.end())
    die("unknown dtype '" + name + "'");
  return it->second;
}

size_t byteSize(DType type) {
  switch (type) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
    return 2;
  case DType::I8:
    return 1;
  default:
    return 8;
  }
}

uint16_t toBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return uint16_t(bits >> 16);
}

uint16_t toF16(float value) {
  // Good enough for N(0, 1) data: normal numbers, truncated mantissa.
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  uint32_t sign = (bits >> 16) & 0x8000;
  int exponent = int((bits >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0)
    return uint16_t(sign);
  if (exponent >= 31)
    return uint16_t(sign | 0x7bff);
  return uint16_t(sign | (exponent << 10) | ((bits >> 13) & 0x3ff));
}

struct Tensor {
  DType dtype;
  std::vector<int64_t> shape, strides;
  void *data = nullptr;
  size_t bytes = 0;

  Tensor(DType type, std::vector<int64_t> dims) : dtype(type), shape(std::move(dims)) {
    strides.assign(shape.size(), 1);
    for (int i = int(shape.size()) - 2; i >= 0; --i)
      strides[i] = strides[i + 1] * shape[i + 1];
    size_t elements = 1;
    for (int64_t size : shape)
      elements *= size_t(size);
    bytes = std::max<size_t>(64, (elements * byteSize(dtype) + 63) / 64 * 64);
    data = std::aligned_alloc(64, bytes);
    if (!data)
      die("out of memory");
    std::memset(data, 0, bytes);
  }
  Tensor(const Tensor &) = delete;
  Tensor(Tensor &&other) noexcept
      : dtype(other.dtype), shape(std::move(other.shape)),
        strides(std::move(other.strides)), data(other.data), bytes(other.bytes) {
    other.data = nullptr;
  }
  ~Tensor() { std::free(data); }

  size_t elements() const {
    size_t n = 1;
    for (int64_t size : shape)
      n *= size_t(size);
    return n;
  }

  void fillRandom(std::mt19937_64 &rng, int64_t intRange) {
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_int_distribution<int64_t> uniform(0, std::max<int64_t>(0, intRange - 1));
    size_t n = elements();
    for (size_t i = 0; i < n; ++i) {
      switch (dtype) {
      case DType::F32:
        static_cast<float *>(data)[i] = normal(rng);
        break;
      case DType::F64:
        static_cast<double *>(data)[i] = normal(rng);
        break;
      case DType::BF16:
        static_cast<uint16_t *>(data)[i] = toBF16(normal(rng));
        break;
      case DType::F16:
        static_cast<uint16_t *>(data)[i] = toF16(normal(rng));
        break;
      case DType::I32:
        static_cast<int32_t *>(data)[i] = int32_t(uniform(rng));
        break;
      case DType::I64:
        static_cast<int64_t *>(data)[i] = uniform(rng);
        break;
      case DType::I8:
        static_cast<int8_t *>(data)[i] = int8_t(uniform(rng) & 1);
        break;
      }
    }
  }

  void fill(double v) {
    size_t n = elements();
    for (size_t i = 0; i < n; ++i) {
      switch (dtype) {
      case DType::F32:
        static_cast<float *>(data)[i] = float(v);
        break;
      case DType::F64:
        static_cast<double *>(data)[i] = v;
        break;
      case DType::BF16:
        static_cast<uint16_t *>(data)[i] = toBF16(float(v));
        break;
      case DType::F16:
        static_cast<uint16_t *>(data)[i] = toF16(float(v));
        break;
      case DType::I32:
        static_cast<int32_t *>(data)[i] = int32_t(v);
        break;
      case DType::I64:
        static_cast<int64_t *>(data)[i] = int64_t(v);
        break;
      case DType::I8:
        static_cast<int8_t *>(data)[i] = int8_t(v);
        break;
      }
    }
  }

  double checksum() const {
    double sum = 0;
    size_t n = elements();
    for (size_t i = 0; i < n; ++i) {
      switch (dtype) {
      case DType::F32:
        sum += static_cast<const float *>(data)[i];
        break;
      case DType::BF16: {
        uint32_t bits = uint32_t(static_cast<const uint16_t *>(data)[i]) << 16;
        float value;
        std::memcpy(&value, &bits, 4);
        sum += value;
        break;
      }
      case DType::F64:
        sum += static_cast<const double *>(data)[i];
        break;
      default:
        break;
      }
    }
    return sum;
  }
};

struct Param {
  DType dtype;
  union {
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
  } value;
};

/// "f32:B,H,M,D" -> dtype and sizes, dim names looked up in `dims`.
std::pair<DType, std::vector<int64_t>>
parseTensorSpec(const std::string &text,
                const std::vector<std::pair<std::string, int64_t>> &dims) {
  size_t colon = text.find(':');
  if (colon == std::string::npos)
    die("expected DTYPE:SHAPE (e.g. f32:B,H,M,D), got '" + text + "'");
  DType dtype = parseDType(text.substr(0, colon));
  std::vector<int64_t> shape;
  for (const std::string &axis : split(text.substr(colon + 1), ',')) {
    auto it = std::find_if(dims.begin(), dims.end(),
                           [&](const auto &dim) { return dim.first == axis; });
    shape.push_back(it != dims.end() ? it->second : parseInt(axis));
  }
  return {dtype, shape};
}

int64_t dimValue(const std::vector<std::pair<std::string, int64_t>> &dims,
                 const std::string &name, int64_t fallback) {
  for (const auto &dim : dims)
    if (dim.first == name)
      return dim.second;
  return fallback;
}

double keptPairs(const std::string &mask, int64_t M, int64_t N) {
  // Queries sit at the end of the keys: query m is key position m + N - M.
  double kept = 0;
  int64_t window = -1;
  if (mask.rfind("window:", 0) == 0)
    window = parseInt(mask.substr(7));
  else if (mask != "full" && mask != "causal")
    die("--mask: expected full, causal or window:W, got '" + mask + "'");
  for (int64_t m = 0; m < M; ++m) {
    int64_t q = m + N - M;
    if (mask == "full") {
      kept += double(N);
      continue;
    }
    int64_t visible = std::max<int64_t>(0, std::min<int64_t>(q + 1, N));
    if (window >= 0)
      visible = std::min(visible, window);
    kept += double(visible);
  }
  return kept;
}

using Clock = std::chrono::steady_clock;

} // namespace

int main(int argc, char **argv) {
  std::string kernelName, soPath, mask, preset;
  std::vector<std::pair<std::string, int64_t>> dims;
  std::vector<std::string> inputSpecs, outputSpecs;
  std::vector<Param> params;
  int repeat = 10, warmup = 1, threads = 0;
  double flops = 0;
  uint64_t seed = 1;
  int64_t intRange = 4;
  std::map<size_t, double> constInputs;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        die("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--kernel") {
      kernelName = value();
      if (kernelName.rfind("_mlir_", 0) == 0)
        kernelName = kernelName.substr(6);
    } else if (arg == "--so") {
      soPath = value();
    } else if (arg == "--dims") {
      for (const std::string &item : split(value(), ',')) {
        size_t eq = item.find('=');
        if (eq == std::string::npos)
          die("--dims: expected NAME=SIZE, got '" + item + "'");
        dims.push_back({item.substr(0, eq), parseInt(item.substr(eq + 1))});
      }
    } else if (arg == "--in") {
      inputSpecs.push_back(value());
    } else if (arg == "--out") {
      outputSpecs.push_back(value());
    } else if (arg == "--param") {
      std::string item = value();
      size_t eq = item.find('=');
      if (eq == std::string::npos)
        die("--param: expected TYPE=VALUE (i32=1024, f32=30), got '" + item + "'");
      Param param;
      param.dtype = parseDType(item.substr(0, eq));
      std::string text = item.substr(eq + 1);
      switch (param.dtype) {
      case DType::I32:
        param.value.i32 = int32_t(parseInt(text));
        break;
      case DType::I64:
        param.value.i64 = parseInt(text);
        break;
      case DType::F32:
        param.value.f32 = std::strtof(text.c_str(), nullptr);
        break;
      case DType::F64:
        param.value.f64 = std::strtod(text.c_str(), nullptr);
        break;
      default:
        die("--param: type must be i32, i64, f32 or f64");
      }
      params.push_back(param);
    } else if (arg == "--preset") {
      preset = value();
    } else if (arg == "--repeat") {
      repeat = std::max<int>(1, int(parseInt(value())));
    } else if (arg == "--warmup") {
      warmup = std::max<int>(0, int(parseInt(value())));
    } else if (arg == "--threads") {
      threads = int(parseInt(value()));
    } else if (arg == "--mask") {
      mask = value();
    } else if (arg == "--flops") {
      flops = std::strtod(value().c_str(), nullptr);
    } else if (arg == "--seed") {
      seed = uint64_t(parseInt(value()));
    } else if (arg == "--const-input") {
      std::string item = value();
      size_t eq = item.find('=');
      if (eq == std::string::npos)
        die("--const-input: expected INDEX=VALUE, got '" + item + "'");
      constInputs[size_t(parseInt(item.substr(0, eq)))] =
          std::strtod(item.substr(eq + 1).c_str(), nullptr);
    } else if (arg == "--int-range") {
      intRange = parseInt(value());
    } else if (arg == "--help" || arg == "-h") {
      std::puts("usage: aot_runner --kernel NAME [--so FILE] --dims N=V,... "
                "(--in DT:SHAPE)... (--param T=V)... (--out DT:SHAPE)... "
                "[--preset mha|gqa:DTYPE] [--mask full|causal|window:W] "
                "[--flops X] [--threads N] [--repeat N] [--warmup N] [--seed N] "
                "[--const-input INDEX=VALUE] [--int-range N]");
      return 0;
    } else {
      die("unknown argument '" + arg + "'");
    }
  }
  if (kernelName.empty())
    die("--kernel NAME is required (the kernel's name; the symbol is _mlir_NAME)");
  if (!preset.empty()) {
    // mha: Q[B,H,M,D], K/V[B,H,N,D] -> O[B,H,M,D]; gqa: K/V over G heads.
    auto parts = split(preset, ':');
    std::string dtype = parts.size() > 1 ? parts[1] : "f32";
    std::string kv = parts[0] == "gqa" ? "G" : parts[0] == "mha" ? "H" : "";
    if (kv.empty())
      die("--preset: expected mha[:DTYPE] or gqa[:DTYPE]");
    inputSpecs = {dtype + ":B,H,M,D", dtype + ":B," + kv + ",N,D",
                  dtype + ":B," + kv + ",N,D"};
    outputSpecs = {dtype + ":B,H,M,D"};
  }
  if (dims.empty() || outputSpecs.empty())
    die("--dims and at least one --out (or --preset) are required");

  // Find the entry point.
  KernelFn entry = nullptr;
  if (!soPath.empty()) {
    void *library = dlopen(soPath.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!library)
      die(std::string("dlopen: ") + dlerror());
    entry = reinterpret_cast<KernelFn>(dlsym(library, ("_mlir_" + kernelName).c_str()));
  } else {
    for (const Linked &linked : linkedKernels())
      if (kernelName == linked.name)
        entry = linked.fn;
    if (!entry) // an executable linked with -rdynamic
      entry = reinterpret_cast<KernelFn>(
          dlsym(RTLD_DEFAULT, ("_mlir_" + kernelName).c_str()));
  }
  if (!entry)
    die("no symbol _mlir_" + kernelName +
        " (link kernel.o, build with -DATTN_KERNEL=_mlir_" + kernelName +
        ", or pass --so kernel.so)");

  if (threads > 0) {
    if (omp_set_num_threads)
      omp_set_num_threads(threads);
    else
      setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  }
  int reportedThreads = omp_get_max_threads ? omp_get_max_threads() : threads;

  // Data.
  std::mt19937_64 rng(seed);
  std::vector<Tensor> inputs, outputs;
  for (const std::string &spec : inputSpecs) {
    auto [dtype, shape] = parseTensorSpec(spec, dims);
    inputs.emplace_back(dtype, shape);
    inputs.back().fillRandom(rng, intRange);
    auto constant = constInputs.find(inputs.size() - 1);
    if (constant != constInputs.end())
      inputs.back().fill(constant->second);
  }
  for (const std::string &spec : outputSpecs) {
    auto [dtype, shape] = parseTensorSpec(spec, dims);
    outputs.emplace_back(dtype, shape);
  }

  // Pack: storage reserved up front, so the pointers into it stay valid.
  std::vector<int64_t> ints;
  std::vector<void *> pointers, args;
  size_t numInts = dims.size();
  for (const auto *group : {&inputs, &outputs})
    for (const Tensor &t : *group)
      numInts += 1 + 2 * t.shape.size();
  ints.reserve(numInts);
  pointers.reserve(2 * (inputs.size() + outputs.size()));
  auto addInt = [&](int64_t v) {
    ints.push_back(v);
    args.push_back(&ints.back());
  };
  auto addMemRef = [&](Tensor &t) {
    for (int copy = 0; copy < 2; ++copy) { // allocated, aligned
      pointers.push_back(t.data);
      args.push_back(&pointers.back());
    }
    addInt(0); // offset
    for (int64_t size : t.shape)
      addInt(size);
    for (int64_t stride : t.strides)
      addInt(stride);
  };
  for (const auto &dim : dims)
    addInt(dim.second);
  for (Tensor &t : inputs)
    addMemRef(t);
  for (Param &p : params)
    args.push_back(&p.value);
  for (Tensor &t : outputs)
    addMemRef(t);

  for (int i = 0; i < warmup; ++i)
    entry(args.data());
  std::vector<double> times;
  for (int i = 0; i < repeat; ++i) {
    auto start = Clock::now();
    entry(args.data());
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted.size() % 2
                      ? sorted[sorted.size() / 2]
                      : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);

  int64_t B = dimValue(dims, "B", 1), H = dimValue(dims, "H", 1),
          D = dimValue(dims, "D", 0), M = dimValue(dims, "M", 0),
          N = dimValue(dims, "N", M);
  double kept = 0;
  if (!mask.empty() && flops == 0) {
    kept = keptPairs(mask, M, N);
    flops = 4.0 * double(D) * double(B) * double(H) * kept;
  }
  std::string shapeText;
  for (const auto &dim : dims)
    shapeText += (shapeText.empty() ? "" : ", ") + ("\"" + dim.first + "\": " +
                                                    std::to_string(dim.second));
  std::printf("{\"impl\": \"attnc-aot\", \"kernel\": \"%s\", \"shapes\": {%s}, "
              "\"dtype\": \"%s\", \"mask\": \"%s\", \"threads\": %d, "
              "\"hardware_threads\": %u, \"repeat\": %d, \"ms\": %.4f, "
              "\"ms_min\": %.4f, \"ms_max\": %.4f, \"kept_pairs\": %.0f, "
              "\"flops\": %.6g, \"gflops\": %.3f, \"checksum\": %.6g}\n",
              kernelName.c_str(), shapeText.c_str(), split(outputSpecs[0], ':')[0].c_str(),
              mask.c_str(), reportedThreads, std::thread::hardware_concurrency(),
              repeat, median, sorted.front(), sorted.back(), kept, flops,
              flops > 0 ? flops / (median * 1e6) : 0.0, outputs[0].checksum());
  return 0;
}
