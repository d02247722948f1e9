//===- RuntimeTestUtil.h - Shared helpers of the runtime tests --*- C++ -*-===//

#ifndef ATTN_TEST_UNIT_RUNTIME_RUNTIMETESTUTIL_H
#define ATTN_TEST_UNIT_RUNTIME_RUNTIMETESTUTIL_H

#include "attn/Runtime/LaunchCheck.h"
#include "attn/Runtime/Package.h"

#include <cstdio>
#include <string>
#include <vector>

namespace attn {
namespace test {

/// A bf16 tensor argument whose axes are all dims.
inline ArgSpec bf16TensorArg(std::string name, ArgKind kind,
                             std::vector<std::string> axes,
                             Layout layout = Layout::Contiguous,
                             int64_t alignment = 0) {
  ArgSpec a;
  a.name = std::move(name);
  a.kind = kind;
  a.dtype = DType::BF16;
  for (std::string &d : axes)
    a.axes.push_back(AxisSpec::ofDim(d));
  a.layout = layout;
  a.alignment = alignment;
  return a;
}

/// A kernel parameter slot.
inline ParamSlot paramSlot(ParamSlot::Kind kind, std::string arg,
                           SlotType type = SlotType::Ptr, int64_t axis = 0) {
  ParamSlot s;
  s.kind = kind;
  s.arg = std::move(arg);
  s.type = type;
  s.axis = axis;
  return s;
}

/// A GQA attention kernel signature like the ones attnc compile emits:
/// Q[B,H,M,D], K/V[B,G,N,D], O[B,H,M,D], D = 64 fixed, H % G == 0.
inline PackageManifest attentionManifest() {
  PackageManifest m;
  m.name = "gqa";
  m.target = "sm_90a";
  m.producer = "test";
  m.dims = {{"B", std::nullopt}, {"H", std::nullopt}, {"G", std::nullopt},
            {"M", std::nullopt}, {"N", std::nullopt}, {"D", 64}};
  auto tensor = [](std::string name, ArgKind kind, std::vector<std::string> ax,
                   Layout layout) {
    return bf16TensorArg(std::move(name), kind, std::move(ax), layout, 16);
  };
  m.args.push_back(tensor("Q", ArgKind::Input, {"B", "H", "M", "D"},
                          Layout::InnerContiguous));
  m.args.push_back(tensor("K", ArgKind::Input, {"B", "G", "N", "D"},
                          Layout::InnerContiguous));
  m.args.push_back(tensor("V", ArgKind::Input, {"B", "G", "N", "D"},
                          Layout::InnerContiguous));
  ArgSpec window;
  window.name = "window";
  window.kind = ArgKind::Param;
  window.dtype = DType::I32;
  window.defaultValue = 1024;
  m.args.push_back(window);
  ArgSpec scale;
  scale.name = "scale";
  scale.kind = ArgKind::Param;
  scale.dtype = DType::F32;
  m.args.push_back(scale);
  m.args.push_back(
      tensor("O", ArgKind::Output, {"B", "H", "M", "D"}, Layout::Contiguous));
  m.constraints = {"H % G == 0"};
  EntrySpec e;
  e.name = "fwd";
  e.function = "gqa_fwd";
  e.module = "main";
  e.grid = {"ceil(M/128)", "H", "B"};
  e.block[0] = 128;
  e.sharedBytes = 64 * 1024;
  for (const char *t : {"Q", "K", "V", "O"})
    e.params.push_back(paramSlot(ParamSlot::Kind::Ptr, t, SlotType::Ptr));
  for (int64_t ax = 0; ax < 3; ++ax)
    e.params.push_back(
        paramSlot(ParamSlot::Kind::Stride, "K", SlotType::I64, ax));
  e.params.push_back(paramSlot(ParamSlot::Kind::Dim, "M", SlotType::I32));
  e.params.push_back(paramSlot(ParamSlot::Kind::Dim, "N", SlotType::I32));
  e.params.push_back(
      paramSlot(ParamSlot::Kind::Param, "window", SlotType::I32));
  e.params.push_back(paramSlot(ParamSlot::Kind::Param, "scale", SlotType::F32));
  m.entries.push_back(e);
  return m;
}

inline const char *kAttentionPtx =
    "//\n.version 8.0\n.target sm_90a\n.address_size 64\n"
    ".visible .entry gqa_fwd(.param .u64 p0)\n{\n\tret;\n}\n";

inline std::string serializedAttention() {
  PackageWriter w(attentionManifest());
  w.addModule("main", ModuleFormat::Ptx, kAttentionPtx);
  std::string bytes;
  Status s = w.serialize(bytes);
  if (s)
    std::fprintf(stderr, "serialize failed: %s\n", s.getMessage().c_str());
  return bytes;
}

/// A split-K decode kernel next to its prefill kernel, as attnc compile emits
/// them: Q[B,D], K[B,N,D], O[B,D], D = 64. Short sequences run `prefill`;
/// long ones run `decode` (partial results over chunks of 256 keys into two
/// workspaces) and then `merge`. Every entry has 5 params.
inline PackageManifest splitKManifest() {
  PackageManifest m;
  m.name = "splitk";
  m.target = "sm_90a";
  m.dims = {{"B", std::nullopt}, {"N", std::nullopt}, {"D", 64}};
  m.args = {bf16TensorArg("Q", ArgKind::Input, {"B", "D"}),
            bf16TensorArg("K", ArgKind::Input, {"B", "N", "D"}),
            bf16TensorArg("O", ArgKind::Output, {"B", "D"})};
  m.workspaces = {{"partials", "B*cdiv(N, 256)*D*4"},
                  {"lse", "B*cdiv(N, 256)*4"}};
  auto entry = [](std::string name, std::string when,
                  std::vector<std::string> grid) {
    EntrySpec e;
    e.function = "splitk_" + name;
    e.name = std::move(name);
    e.module = "main";
    e.when = std::move(when);
    e.grid = std::move(grid);
    e.block[0] = 128;
    return e;
  };
  using K = ParamSlot::Kind;
  EntrySpec prefill = entry("prefill", "N <= 256", {"B"});
  prefill.params = {paramSlot(K::Ptr, "Q"), paramSlot(K::Ptr, "K"),
                    paramSlot(K::Ptr, "O"),
                    paramSlot(K::Dim, "N", SlotType::I32),
                    paramSlot(K::Expr, "B*N", SlotType::I64)};
  EntrySpec decode = entry("decode", "N > 256", {"B", "cdiv(N, 256)"});
  decode.params = {paramSlot(K::Ptr, "Q"), paramSlot(K::Ptr, "K"),
                   paramSlot(K::Workspace, "partials"),
                   paramSlot(K::Workspace, "lse"),
                   paramSlot(K::Dim, "N", SlotType::I32)};
  EntrySpec merge = entry("merge", "N > 256", {"B"});
  merge.params = {paramSlot(K::Workspace, "partials"),
                  paramSlot(K::Workspace, "lse"), paramSlot(K::Ptr, "O"),
                  paramSlot(K::Expr, "cdiv(N, 256)", SlotType::I32),
                  paramSlot(K::Expr, "B*N", SlotType::F32)};
  m.entries = {prefill, decode, merge};
  return m;
}

inline const char *kSplitKPtx =
    "//\n.version 8.0\n.target sm_90a\n.address_size 64\n"
    ".visible .entry splitk_prefill(.param .u64 p0)\n{\n\tret;\n}\n"
    ".visible .entry splitk_decode(.param .u64 p0)\n{\n\tret;\n}\n"
    ".visible .entry splitk_merge(.param .u64 p0)\n{\n\tret;\n}\n";

/// A Hopper kernel that loads tiles of Q and K through tensor maps, as
/// attnc compile will emit it: Q[B,H,M,D], K[B,H,N,D], O[B,H,M,D] in bf16,
/// D = 64 fixed, Q and K with free row strides. `fwd` (tensor maps of Q and
/// K, 128-byte swizzle) falls back to `fwd_plain`, which comes last in the
/// list but runs in fwd's place, before `finish`.
inline PackageManifest tmaManifest() {
  PackageManifest m;
  m.name = "tma";
  m.target = "sm_90a";
  m.dims = {{"B", std::nullopt},
            {"H", std::nullopt},
            {"M", std::nullopt},
            {"N", std::nullopt},
            {"D", 64}};
  m.args = {bf16TensorArg("Q", ArgKind::Input, {"B", "H", "M", "D"},
                          Layout::InnerContiguous),
            bf16TensorArg("K", ArgKind::Input, {"B", "H", "N", "D"},
                          Layout::InnerContiguous),
            bf16TensorArg("O", ArgKind::Output, {"B", "H", "M", "D"})};
  using K = ParamSlot::Kind;
  auto tma = [](std::string arg, std::vector<int64_t> box) {
    ParamSlot s = paramSlot(K::Tma, std::move(arg), SlotType::TensorMap);
    s.tile.box = std::move(box);
    s.tile.swizzle = TmaSwizzle::B128;
    return s;
  };
  EntrySpec fwd;
  fwd.name = "fwd";
  fwd.function = "tma_fwd";
  fwd.module = "main";
  fwd.fallback = {"fwd_plain"};
  fwd.grid = {"cdiv(M, 128)", "H", "B"};
  fwd.block[0] = 384;
  fwd.sharedBytes = 160 * 1024;
  fwd.params = {tma("Q", {1, 1, 128, 64}), tma("K", {1, 1, 128, 64}),
                paramSlot(K::Ptr, "O"), paramSlot(K::Dim, "M", SlotType::I32),
                paramSlot(K::Dim, "N", SlotType::I32)};
  EntrySpec finish;
  finish.name = "finish";
  finish.function = "tma_finish";
  finish.module = "main";
  finish.grid = {"B*H"};
  finish.block[0] = 128;
  finish.params = {paramSlot(K::Ptr, "O"),
                   paramSlot(K::Dim, "M", SlotType::I32)};
  EntrySpec plain;
  plain.name = "fwd_plain";
  plain.function = "tma_fwd_plain";
  plain.module = "main";
  plain.grid = {"cdiv(M, 64)", "H", "B"};
  plain.block[0] = 128;
  plain.params = {paramSlot(K::Ptr, "Q"), paramSlot(K::Ptr, "K"),
                  paramSlot(K::Ptr, "O"),
                  paramSlot(K::Stride, "Q", SlotType::I64, 2),
                  paramSlot(K::Dim, "M", SlotType::I32)};
  m.entries = {fwd, finish, plain};
  return m;
}

inline const char *kTmaPtx =
    "//\n.version 8.0\n.target sm_90a\n.address_size 64\n"
    ".visible .entry tma_fwd(.param .align 64 .b8 q[128])\n{\n\tret;\n}\n"
    ".visible .entry tma_finish(.param .u64 p0)\n{\n\tret;\n}\n"
    ".visible .entry tma_fwd_plain(.param .u64 p0)\n{\n\tret;\n}\n";

inline std::string serialized(const PackageManifest &m, const char *ptx) {
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, ptx);
  std::string bytes;
  Status s = w.serialize(bytes);
  if (s)
    std::fprintf(stderr, "serialize failed: %s\n", s.getMessage().c_str());
  return bytes;
}

/// FNV-1a 64, as the container format documents it.
inline std::string checksumHex(const std::string &bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)h);
  return buf;
}

/// Builds a container around arbitrary manifest text (bypassing the writer's
/// validation), with a correct checksum.
inline std::string container(const std::string &manifest,
                             const std::string &ptx = kAttentionPtx,
                             const std::string &header = "attnpkg 1") {
  std::string out = header + "\n";
  out += "manifest " + std::to_string(manifest.size()) + "\n" + manifest + "\n";
  out += "module main ptx " + std::to_string(ptx.size()) + "\n" + ptx + "\n";
  out += "end " + checksumHex(out) + "\n";
  return out;
}

/// A bf16 CUDA tensor descriptor; `shape`/`strides` must outlive it.
inline attnc_tensor bf16Tensor(const std::vector<int64_t> &shape,
                               const std::vector<int64_t> *strides = nullptr,
                               void *data = reinterpret_cast<void *>(0x10000),
                               int device = 0) {
  attnc_tensor t{};
  t.data = data;
  t.device_type = ATTNC_DEVICE_CUDA;
  t.device_id = device;
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = {ATTNC_DTYPE_BFLOAT, 16, 1};
  t.shape = shape.data();
  t.strides = strides ? strides->data() : nullptr;
  return t;
}

} // namespace test
} // namespace attn

#endif // ATTN_TEST_UNIT_RUNTIME_RUNTIMETESTUTIL_H
