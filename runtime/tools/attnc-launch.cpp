//===- attnc-launch.cpp - Launch a kernel package from the command line ---===//
//
// The GPU test machine has no LLVM, so GPU tests carry .attnpkg files and this
// small program, built there from runtime/ alone. It fills the inputs (from
// .npy or raw files, or seeded random data that is identical on every
// machine), launches, optionally times the launch with CUDA events, and
// writes the outputs as .npy files for checking elsewhere.
//
//===----------------------------------------------------------------------===//

#include "attn/Runtime/Package.h"
#include "attn/Runtime/Runtime.h"
#include "attn/Runtime/Tensor.h"
#include "attnc/attnc.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace attn;

namespace {

const char *kUsage = R"(usage: attnc-launch PACKAGE [options]
  --info                 print the kernel signature and exit
  --devices              print the number of CUDA devices and exit
  --dim NAME=N           value of a symbolic dim (repeatable; or A=1,B=2)
  --param NAME=V         value of a param (others take their defaults)
  --input NAME=FILE      read an input from FILE (.npy, else raw row-major
                         bytes); inputs not given are random
  --seed S               seed of the random inputs (default 0)
  --int-range LO,HI      integer inputs are uniform in [LO, HI) (default 0,8)
  --entry NAME           launch only this entry
  --device N             CUDA device (default 0)
  --out-dir DIR          write outputs (and --save-inputs) as DIR/NAME.npy
  --save-inputs          also write the inputs to --out-dir
  --no-poison            do not fill outputs with 0xFF bytes before the run
  --output-offset BYTES  place each output BYTES past the start of its
                         allocation (its byte_offset), to run the paths for
                         addresses TMA cannot take
  --launches N           launch N times before writing the outputs, each
                         time poisoned again (default 1): what a kernel
                         leaves in its workspaces must serve the next launch
  --warmup N --repeat N  time N launches after N warm-ups (CUDA events)
Random floats are N(0, 1) from a fixed generator: the same seed gives the
same inputs on every machine. bf16 arrays are stored in .npy as '<u2' bits.
)";

int fail(const std::string &msg) {
  std::fprintf(stderr, "attnc-launch: error: %s\n", msg.c_str());
  return 1;
}

int failStatus(const Status &s) {
  return fail(std::string(attnc_status_name(s.getCode())) + ": " +
              s.getMessage());
}

/// splitmix64: tiny, and identical everywhere (unlike std:: distributions).
/// Each step only adds a constant to the state, so the value of any step
/// is computed directly: threads fill disjoint parts of a tensor with
/// exactly the values one thread would, in any number.
struct Rng {
  uint64_t seed;
  /// The steps taken so far; step k (from 1) mixes seed + k * gamma.
  uint64_t steps = 0;

  uint64_t at(uint64_t step) const {
    uint64_t z = seed + step * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniformAt(uint64_t step) const {
    return (at(step) >> 11) * (1.0 / 9007199254740992.0);
  }
  /// Box-Muller from steps `step` and `step + 1`.
  double normalAt(uint64_t step) const {
    double u1 = uniformAt(step), u2 = uniformAt(step + 1);
    if (u1 < 1e-300)
      u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  /// Fills `h` with N(0, 1) floats (two steps each) or integers in
  /// [lo, hi) (one step each), the next steps in element order.
  void fill(HostTensor &h, int64_t lo, int64_t hi) {
    const bool isFloat = isFloatDType(h.getDType());
    const uint64_t first = steps + 1, perElement = isFloat ? 2 : 1;
    const int64_t n = h.getNumElements();
    auto fillRange = [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        uint64_t step = first + perElement * static_cast<uint64_t>(e);
        h.setFromDouble(
            e, isFloat
                   ? normalAt(step)
                   : static_cast<double>(
                         lo + static_cast<int64_t>(
                                  at(step) % static_cast<uint64_t>(hi - lo))));
      }
    };
    // Large inputs (16k tokens are 10^8 values) take seconds on one thread.
    const int64_t perThread = int64_t(1) << 20;
    const int64_t threads = std::clamp<int64_t>(
        n / perThread, 1, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> workers;
    for (int64_t t = 1; t < threads; ++t)
      workers.emplace_back(fillRange, n * t / threads, n * (t + 1) / threads);
    fillRange(0, n / threads);
    for (std::thread &worker : workers)
      worker.join();
    steps += perElement * static_cast<uint64_t>(n);
  }
};

std::string npyDescr(DType t) {
  switch (t) {
  case DType::F32:
    return "<f4";
  case DType::F16:
    return "<f2";
  case DType::BF16:
    return "<u2";
  case DType::F64:
    return "<f8";
  case DType::I1:
    return "|b1";
  case DType::I8:
    return "|i1";
  case DType::I32:
    return "<i4";
  case DType::I64:
    return "<i8";
  }
  return "?";
}

std::string shapeTuple(const std::vector<int64_t> &shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    s += std::to_string(shape[i]) +
         (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  return s + ")";
}

bool writeNpy(const std::string &path, const HostTensor &t) {
  std::string header =
      "{'descr': '" + npyDescr(t.getDType()) +
      "', 'fortran_order': False, 'shape': " + shapeTuple(t.getShape()) + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f)
    return false;
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  char lenBytes[2] = {static_cast<char>(len & 0xff),
                      static_cast<char>(len >> 8)};
  f.write(lenBytes, 2);
  f << header;
  f.write(static_cast<const char *>(t.data()),
          static_cast<std::streamsize>(t.getNumElements() *
                                       dtypeSize(t.getDType())));
  return static_cast<bool>(f);
}

/// Reads FILE into `t` (already shaped): .npy with a matching dtype and
/// shape, or raw bytes of exactly the right size.
Status readInput(const std::string &path, const std::string &name,
                 HostTensor &t) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return Status(ATTNC_ERROR_IO, "cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string bytes = ss.str();
  size_t want =
      static_cast<size_t>(t.getNumElements()) * dtypeSize(t.getDType());
  size_t offset = 0;
  if (bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0) {
    size_t headerLen, start;
    if (bytes[6] == 1) {
      headerLen = static_cast<unsigned char>(bytes[8]) |
                  (static_cast<unsigned char>(bytes[9]) << 8);
      start = 10;
    } else {
      if (bytes.size() < 12)
        return invalidArgument("'" + path + "': truncated .npy header");
      headerLen = 0;
      for (int i = 3; i >= 0; --i)
        headerLen = (headerLen << 8) | static_cast<unsigned char>(bytes[8 + i]);
      start = 12;
    }
    if (start + headerLen > bytes.size())
      return invalidArgument("'" + path + "': truncated .npy header");
    std::string header = bytes.substr(start, headerLen);
    std::string descr = "'descr': '" + npyDescr(t.getDType()) + "'";
    std::string shape = "'shape': " + shapeTuple(t.getShape());
    // numpy writes "(4,)" and "(2, 3)"; normalise spaces before comparing.
    std::string h;
    for (char c : header)
      if (c != ' ')
        h += c;
    std::string d, s;
    for (char c : descr)
      if (c != ' ')
        d += c;
    for (char c : shape)
      if (c != ' ')
        s += c;
    if (h.find(d) == std::string::npos)
      return invalidArgument("input '" + name + "': '" + path +
                             "' does not hold " + npyDescr(t.getDType()) +
                             " (" + std::string(dtypeName(t.getDType())) +
                             "): header " + header);
    if (h.find(s) == std::string::npos)
      return invalidArgument("input '" + name + "': '" + path +
                             "' does not have shape " +
                             shapeTuple(t.getShape()) + ": header " + header);
    if (h.find("'fortran_order':True") != std::string::npos)
      return invalidArgument("'" + path + "': Fortran order not supported");
    offset = start + headerLen;
  }
  if (bytes.size() - offset != want)
    return invalidArgument("input '" + name + "': '" + path + "' has " +
                           std::to_string(bytes.size() - offset) +
                           " data bytes, expected " + std::to_string(want) +
                           " for " + t.describe());
  if (want)
    std::memcpy(t.data(), bytes.data() + offset, want);
  return Status::ok();
}

bool parseInt(const std::string &s, int64_t &out) {
  if (s.empty())
    return false;
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end)
    return false;
  out = v;
  return true;
}

bool splitAssign(const std::string &s, std::string &name, std::string &value) {
  size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0)
    return false;
  name = s.substr(0, eq);
  value = s.substr(eq + 1);
  return true;
}

const char *kindName(int32_t kind) {
  switch (kind) {
  case ATTNC_ARG_DIM:
    return "dim";
  case ATTNC_ARG_INPUT:
    return "in";
  case ATTNC_ARG_PARAM:
    return "param";
  case ATTNC_ARG_OUTPUT:
    return "out";
  }
  return "?";
}

bool toDType(attnc_dtype dt, DType &out) {
  static const std::pair<DType, attnc_dtype> table[] = {
      {DType::F32, {ATTNC_DTYPE_FLOAT, 32, 1}},
      {DType::F16, {ATTNC_DTYPE_FLOAT, 16, 1}},
      {DType::BF16, {ATTNC_DTYPE_BFLOAT, 16, 1}},
      {DType::F64, {ATTNC_DTYPE_FLOAT, 64, 1}},
      {DType::I1, {ATTNC_DTYPE_BOOL, 8, 1}},
      {DType::I8, {ATTNC_DTYPE_INT, 8, 1}},
      {DType::I32, {ATTNC_DTYPE_INT, 32, 1}},
      {DType::I64, {ATTNC_DTYPE_INT, 64, 1}}};
  for (const auto &[t, c] : table)
    if (c.code == dt.code && c.bits == dt.bits) {
      out = t;
      return true;
    }
  return false;
}

/// The signature from the C API, then what only the manifest says: when
/// the conditional entries run, the tensor maps they load with and the
/// entries that run in their place, and the workspaces.
void printSignature(const rt::KernelPackage &pkg, const Package &full) {
  std::printf("kernel %s, target %s, entries:", pkg.name().c_str(),
              pkg.target().c_str());
  for (size_t e = 0; e < attnc_package_num_entries(pkg.get()); ++e)
    std::printf(" %s", attnc_package_entry_name(pkg.get(), e));
  std::printf("\n");
  for (const attnc_arg_info &a : pkg.signature()) {
    std::printf("  %-5s %s", kindName(a.kind), a.name);
    if (a.kind == ATTNC_ARG_DIM) {
      if (a.size >= 0)
        std::printf(" = %lld", static_cast<long long>(a.size));
    } else {
      DType t = DType::F32;
      toDType(a.dtype, t);
      std::printf(": %s", std::string(dtypeName(t)).c_str());
      if (a.kind == ATTNC_ARG_PARAM) {
        if (a.has_default)
          std::printf(" = %g", a.default_value);
      } else {
        std::printf("[");
        for (int64_t k = 0; k < a.size; ++k)
          a.axis_dims[k] ? std::printf("%s%s", k ? ", " : "", a.axis_dims[k])
                         : std::printf("%s%lld", k ? ", " : "",
                                       static_cast<long long>(a.axis_sizes[k]));
        std::printf("]");
      }
    }
    std::printf("\n");
  }
  for (const EntrySpec &e : full.manifest.entries) {
    if (!e.when.empty())
      std::printf("  entry %s when %s\n", e.name.c_str(), e.when.c_str());
    for (size_t i = 0; i < e.params.size(); ++i) {
      const ParamSlot &p = e.params[i];
      if (p.kind != ParamSlot::Kind::Tma)
        continue;
      std::string box, axes;
      for (int64_t b : p.tile.box)
        box += (box.empty() ? "" : ", ") + std::to_string(b);
      for (int64_t a : p.tile.axes)
        axes += (axes.empty() ? " of axes [" : ", ") + std::to_string(a);
      if (!axes.empty())
        axes += "]";
      std::printf("  entry %s param %zu: tma %s%s, box [%s], swizzle %s, "
                  "oob_fill %s, l2_promotion %s%s\n",
                  e.name.c_str(), i, p.arg.c_str(), axes.c_str(), box.c_str(),
                  std::string(tmaSwizzleName(p.tile.swizzle)).c_str(),
                  std::string(tmaOobFillName(p.tile.oobFill)).c_str(),
                  std::string(tmaL2PromotionName(p.tile.l2Promotion)).c_str(),
                  p.tile.optional ? ", optional" : "");
    }
    if (!e.fallback.empty()) {
      std::string fallback;
      for (const std::string &name : e.fallback)
        fallback += (fallback.empty() ? "" : ", then ") + name;
      std::printf("  entry %s falls back to %s\n", e.name.c_str(),
                  fallback.c_str());
    }
    if (e.persistentCtasPerSm)
      std::printf("  entry %s persistent: at most %lld CTAs per SM\n",
                  e.name.c_str(),
                  static_cast<long long>(e.persistentCtasPerSm));
  }
  for (const WorkspaceSpec &w : full.manifest.workspaces) {
    // The tensor it begins with, which tensor maps load: "bf16[B, H, M, D]".
    std::string tensor;
    if (w.tensor) {
      tensor = ", begins with " + std::string(dtypeName(w.tensor->dtype)) + "[";
      for (size_t k = 0; k < w.tensor->shape.size(); ++k)
        tensor += (k ? ", " : "") + w.tensor->shape[k];
      tensor += "]";
    }
    std::printf("  workspace %s: %s bytes%s%s\n", w.name.c_str(),
                w.bytes.c_str(), tensor.c_str(),
                w.zeroed ? ", zeroed (its kernels leave it so)" : "");
  }
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string packagePath;
  std::map<std::string, std::string> dimArgs, paramArgs, inputFiles;
  bool info = false, devicesOnly = false, saveInputs = false, poison = true;
  int64_t seed = 0, device = 0, warmup = 0, repeat = 0, intLo = 0, intHi = 8,
          launches = 1;
  int64_t outputOffset = 0;
  std::string outDir, entry;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string &out) {
      if (i + 1 >= argc)
        return false;
      out = argv[++i];
      return true;
    };
    std::string v, name, val;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--info") {
      info = true;
    } else if (a == "--devices") {
      devicesOnly = true;
    } else if (a == "--save-inputs") {
      saveInputs = true;
    } else if (a == "--no-poison") {
      poison = false;
    } else if (a == "--dim" && value(v)) {
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ','))
        if (splitAssign(item, name, val))
          dimArgs[name] = val;
        else
          return fail("bad --dim '" + item + "' (want NAME=N)");
    } else if (a == "--param" && value(v)) {
      if (!splitAssign(v, name, val))
        return fail("bad --param '" + v + "' (want NAME=VALUE)");
      paramArgs[name] = val;
    } else if (a == "--input" && value(v)) {
      if (!splitAssign(v, name, val))
        return fail("bad --input '" + v + "' (want NAME=FILE)");
      inputFiles[name] = val;
    } else if (a == "--seed" && value(v)) {
      if (!parseInt(v, seed))
        return fail("bad --seed");
    } else if (a == "--device" && value(v)) {
      if (!parseInt(v, device))
        return fail("bad --device");
    } else if (a == "--output-offset" && value(v)) {
      if (!parseInt(v, outputOffset) || outputOffset < 0 || outputOffset > 4096)
        return fail("bad --output-offset (want 0 to 4096 bytes)");
    } else if (a == "--warmup" && value(v)) {
      if (!parseInt(v, warmup) || warmup < 0)
        return fail("bad --warmup");
    } else if (a == "--launches" && value(v)) {
      if (!parseInt(v, launches) || launches < 1)
        return fail("bad --launches");
    } else if (a == "--repeat" && value(v)) {
      if (!parseInt(v, repeat) || repeat < 0)
        return fail("bad --repeat");
    } else if (a == "--int-range" && value(v)) {
      size_t comma = v.find(',');
      if (comma == std::string::npos || !parseInt(v.substr(0, comma), intLo) ||
          !parseInt(v.substr(comma + 1), intHi) || intHi <= intLo)
        return fail("bad --int-range (want LO,HI with LO < HI)");
    } else if (a == "--out-dir" && value(v)) {
      outDir = v;
    } else if (a == "--entry" && value(v)) {
      entry = v;
    } else if (!a.empty() && a[0] != '-' && packagePath.empty()) {
      packagePath = a;
    } else {
      return fail("unknown or incomplete option '" + a + "' (see --help)");
    }
  }
  if (devicesOnly) {
    int n = attnc_device_count();
    std::printf("%d CUDA device(s)\n", n);
    if (n == 0)
      std::printf("reason: %s\n", attnc_last_error());
    return 0;
  }
  if (packagePath.empty())
    return fail("no package given (see --help)");

  rt::KernelPackage pkg;
  if (Status s = rt::KernelPackage::load(packagePath, pkg))
    return failStatus(s);
  if (info) {
    Package full;
    if (Status s = readPackageFile(packagePath, full))
      return failStatus(s);
    printSignature(pkg, full);
    return 0;
  }
  std::vector<attnc_arg_info> sig = pkg.signature();

  // Dims: fixed ones from the package, symbolic ones from --dim.
  std::map<std::string, int64_t> dims;
  for (const attnc_arg_info &a : sig) {
    if (a.kind != ATTNC_ARG_DIM)
      continue;
    auto it = dimArgs.find(a.name);
    if (a.size >= 0) {
      dims[a.name] = a.size;
      if (it != dimArgs.end() && it->second != std::to_string(a.size))
        return fail(std::string("dim '") + a.name + "' is fixed to " +
                    std::to_string(a.size) + " by the package");
    } else {
      int64_t n;
      if (it == dimArgs.end())
        return fail(std::string("dim '") + a.name +
                    "' is symbolic: pass --dim " + a.name + "=N");
      if (!parseInt(it->second, n) || n < 0)
        return fail(std::string("bad value for dim '") + a.name + "'");
      dims[a.name] = n;
    }
    dimArgs.erase(a.name);
  }
  if (!dimArgs.empty())
    return fail("unknown dim '" + dimArgs.begin()->first + "'");

  Rng rng{static_cast<uint64_t>(seed)};
  std::vector<HostTensor> hostIn, hostOut;
  std::vector<std::string> inNames, outNames;
  std::vector<std::vector<int64_t>> inShapes, outShapes;
  std::vector<DType> inTypes, outTypes;
  std::vector<double> params;
  for (const attnc_arg_info &a : sig) {
    if (a.kind == ATTNC_ARG_PARAM) {
      auto it = paramArgs.find(a.name);
      double v;
      if (it != paramArgs.end()) {
        char *end = nullptr;
        v = std::strtod(it->second.c_str(), &end);
        if (it->second.empty() || *end)
          return fail(std::string("bad value for param '") + a.name + "'");
        paramArgs.erase(it);
      } else if (a.has_default) {
        v = a.default_value;
      } else {
        return fail(std::string("param '") + a.name +
                    "' has no default: pass --param " + a.name + "=V");
      }
      params.push_back(v);
      continue;
    }
    if (a.kind != ATTNC_ARG_INPUT && a.kind != ATTNC_ARG_OUTPUT)
      continue;
    std::vector<int64_t> shape;
    for (int64_t k = 0; k < a.size; ++k)
      shape.push_back(a.axis_dims[k] ? dims[a.axis_dims[k]] : a.axis_sizes[k]);
    DType t;
    if (!toDType(a.dtype, t))
      return fail(std::string("unsupported dtype of '") + a.name + "'");
    if (a.kind == ATTNC_ARG_INPUT) {
      inNames.push_back(a.name);
      inShapes.push_back(shape);
      inTypes.push_back(t);
    } else {
      outNames.push_back(a.name);
      outShapes.push_back(shape);
      outTypes.push_back(t);
    }
  }
  if (!paramArgs.empty())
    return fail("unknown param '" + paramArgs.begin()->first + "'");
  for (const auto &[name, file] : inputFiles)
    if (std::find(inNames.begin(), inNames.end(), name) == inNames.end())
      return fail("unknown input '" + name + "'");

  int dev = static_cast<int>(device);
  std::vector<rt::DeviceBuffer> inBufs(hostIn.size()), outBufs(hostOut.size());
  std::vector<attnc_tensor> ins, outs;
  auto bytesOf = [](const HostTensor &h) {
    return static_cast<size_t>(h.getNumElements()) * dtypeSize(h.getDType());
  };
  // Check the arguments before allocating: shape errors then show up on a
  // machine without a GPU too. The descriptors point at a dummy aligned
  // address until real buffers exist.
  {
    std::vector<attnc_tensor> checkIns, checkOuts;
    for (size_t i = 0; i < inShapes.size(); ++i)
      checkIns.push_back(rt::cudaTensor(reinterpret_cast<void *>(4096), dev,
                                        attnc_tensor{}.dtype, inShapes[i]));
    for (size_t i = 0; i < outShapes.size(); ++i)
      checkOuts.push_back(rt::cudaTensor(reinterpret_cast<void *>(4096), dev,
                                         attnc_tensor{}.dtype, outShapes[i]));
    size_t in = 0, out = 0;
    for (const attnc_arg_info &a : sig) {
      if (a.kind == ATTNC_ARG_INPUT)
        checkIns[in++].dtype = a.dtype;
      else if (a.kind == ATTNC_ARG_OUTPUT)
        checkOuts[out++].dtype = a.dtype;
    }
    if (Status s = pkg.check(checkIns, params, checkOuts))
      return failStatus(s);
    ins = checkIns;
    outs = checkOuts;
  }
  // Host data only once the shapes are known to be valid.
  // Results go to a folder of their own; make it as `mkdir -p` would.
  if (!outDir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(outDir, error);
    if (error)
      return fail("cannot create " + outDir + ": " + error.message());
  }
  for (size_t i = 0; i < inShapes.size(); ++i) {
    HostTensor h(inTypes[i], inShapes[i]);
    auto it = inputFiles.find(inNames[i]);
    if (it != inputFiles.end()) {
      if (Status s = readInput(it->second, inNames[i], h))
        return failStatus(s);
    } else {
      rng.fill(h, intLo, intHi);
    }
    if (saveInputs && !outDir.empty() &&
        !writeNpy(outDir + "/" + inNames[i] + ".npy", h))
      return fail("cannot write " + outDir + "/" + inNames[i] + ".npy");
    hostIn.push_back(std::move(h));
  }
  for (size_t i = 0; i < outShapes.size(); ++i)
    hostOut.emplace_back(outTypes[i], outShapes[i]);
  inBufs.resize(hostIn.size());
  outBufs.resize(hostOut.size());
  for (size_t i = 0; i < hostIn.size(); ++i) {
    if (Status s =
            rt::DeviceBuffer::allocate(dev, bytesOf(hostIn[i]), inBufs[i]))
      return failStatus(s);
    if (Status s = inBufs[i].upload(hostIn[i].data(), bytesOf(hostIn[i])))
      return failStatus(s);
    ins[i].data = inBufs[i].data();
  }
  for (size_t i = 0; i < hostOut.size(); ++i) {
    if (Status s = rt::DeviceBuffer::allocate(
            dev, bytesOf(hostOut[i]) + outputOffset, outBufs[i]))
      return failStatus(s);
    outs[i].data = outBufs[i].data();
    outs[i].byte_offset = static_cast<uint64_t>(outputOffset);
  }
  rt::Stream stream;
  if (Status s = rt::Stream::create(dev, stream))
    return failStatus(s);
  const char *entryName = entry.empty() ? nullptr : entry.c_str();
  if (Status s = pkg.prepare(dev))
    return failStatus(s);
  for (int64_t launch = 0; launch < launches; ++launch) {
    if (poison)
      for (rt::DeviceBuffer &out : outBufs)
        if (Status s = rt::fromC(
                attnc_device_memset(dev, out.data(), 0xFF, out.size())))
          return failStatus(s);
    if (Status s = pkg.launch(ins, params, outs, stream.get(), entryName))
      return failStatus(s);
    if (Status s = stream.synchronize())
      return failStatus(s);
  }
  std::printf("launched %s on device %d: ok\n", pkg.name().c_str(), dev);

  if (repeat > 0) {
    for (int64_t i = 0; i < warmup; ++i)
      if (Status s = pkg.launch(ins, params, outs, stream.get(), entryName))
        return failStatus(s);
    std::vector<float> times;
    attnc_event start = nullptr, stop = nullptr;
    if (Status s = rt::fromC(attnc_event_create(dev, &start)))
      return failStatus(s);
    if (Status s = rt::fromC(attnc_event_create(dev, &stop)))
      return failStatus(s);
    for (int64_t i = 0; i < repeat; ++i) {
      float ms = 0;
      Status s = rt::fromC(attnc_event_record(start, stream.get()));
      if (s.isOk())
        s = pkg.launch(ins, params, outs, stream.get(), entryName);
      if (s.isOk())
        s = rt::fromC(attnc_event_record(stop, stream.get()));
      if (s.isOk())
        s = rt::fromC(attnc_event_elapsed_ms(start, stop, &ms));
      if (s)
        return failStatus(s);
      times.push_back(ms);
    }
    attnc_event_destroy(start);
    attnc_event_destroy(stop);
    std::sort(times.begin(), times.end());
    std::printf("time: median %.4f ms, min %.4f ms, max %.4f ms over %lld "
                "launches\n",
                times[times.size() / 2], times.front(), times.back(),
                static_cast<long long>(repeat));
  }

  for (size_t i = 0; i < hostOut.size(); ++i) {
    if (Status s = rt::fromC(attnc_copy_to_host(
            dev, hostOut[i].data(),
            static_cast<char *>(outBufs[i].data()) + outputOffset,
            bytesOf(hostOut[i]))))
      return failStatus(s);
    // A 0xFF pattern left in an output means the kernel never wrote it.
    size_t unwritten = 0, n = static_cast<size_t>(hostOut[i].getNumElements());
    size_t es = dtypeSize(hostOut[i].getDType());
    const unsigned char *p =
        static_cast<const unsigned char *>(hostOut[i].data());
    for (size_t e = 0; poison && e < n; ++e) {
      bool allFF = true;
      for (size_t b = 0; b < es; ++b)
        allFF &= p[e * es + b] == 0xFF;
      unwritten += allFF;
    }
    std::printf("output %s: %s", outNames[i].c_str(),
                hostOut[i].describe().c_str());
    if (poison)
      std::printf(", %zu of %zu elements unwritten", unwritten, n);
    std::printf("\n");
    if (!outDir.empty() &&
        !writeNpy(outDir + "/" + outNames[i] + ".npy", hostOut[i]))
      return fail("cannot write " + outDir + "/" + outNames[i] + ".npy");
  }
  return 0;
}
