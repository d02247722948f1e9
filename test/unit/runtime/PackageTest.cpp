//===- PackageTest.cpp - .attnpkg writing, reading and validation ---------===//

#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

using namespace attn;
using namespace attn::test;

namespace {

Status readBytes(const std::string &bytes) {
  Package pkg;
  return readPackage(bytes, pkg);
}

/// Expects `bytes` to be rejected with a message containing `needle`.
void expectError(const std::string &bytes, const std::string &needle) {
  Status s = readBytes(bytes);
  ASSERT_TRUE(s) << "accepted a package that should fail with: " << needle;
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_PACKAGE);
  EXPECT_NE(s.getMessage().find(needle), std::string::npos)
      << "message: " << s.getMessage() << "\nexpected: " << needle;
}

/// The attention manifest as JSON, with `from` replaced by `to` once.
std::string mutated(const std::string &from, const std::string &to) {
  std::string text = manifestToJson(attentionManifest());
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos)
    text.replace(pos, from.size(), to);
  return container(text);
}

/// The split-K manifest as JSON, with `from` replaced by `to` once.
std::string mutatedSplitK(const std::string &from, const std::string &to) {
  std::string text = manifestToJson(splitKManifest());
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos)
    text.replace(pos, from.size(), to);
  return container(text, kSplitKPtx);
}

TEST(PackageTest, RoundTrip) {
  std::string bytes = serializedAttention();
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.rfind("attnpkg 1\nmanifest ", 0), 0u);
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(pkg.manifest.name, "gqa");
  EXPECT_EQ(pkg.manifest.target, "sm_90a");
  ASSERT_EQ(pkg.manifest.dims.size(), 6u);
  EXPECT_EQ(pkg.manifest.dims[5].size, 64);
  EXPECT_FALSE(pkg.manifest.dims[0].size);
  ASSERT_EQ(pkg.manifest.args.size(), 6u);
  EXPECT_EQ(pkg.manifest.args[1].layout, Layout::InnerContiguous);
  EXPECT_EQ(pkg.manifest.args[3].defaultValue, 1024);
  EXPECT_FALSE(pkg.manifest.args[4].defaultValue);
  ASSERT_EQ(pkg.manifest.entries.size(), 1u);
  EXPECT_EQ(pkg.manifest.entries[0].grid.size(), 3u);
  EXPECT_EQ(pkg.manifest.entries[0].sharedBytes, 64 * 1024);
  EXPECT_EQ(pkg.manifest.entries[0].params.size(), 11u);
  ASSERT_EQ(pkg.modules.size(), 1u);
  EXPECT_EQ(pkg.modules[0].bytes, kAttentionPtx);
  // Writing what was read gives the same bytes: the format is canonical.
  PackageWriter again(pkg.manifest);
  again.addModule("main", ModuleFormat::Ptx, pkg.modules[0].bytes);
  std::string bytes2;
  ASSERT_FALSE(again.serialize(bytes2));
  EXPECT_EQ(bytes, bytes2);
}

TEST(PackageTest, WhenWorkspacesAndExprsRoundTrip) {
  std::string bytes = serialized(splitKManifest(), kSplitKPtx);
  ASSERT_FALSE(bytes.empty());
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  const PackageManifest &m = pkg.manifest;
  ASSERT_EQ(m.workspaces.size(), 2u);
  EXPECT_EQ(m.workspaces[0].name, "partials");
  EXPECT_EQ(m.workspaces[0].bytes, "B*cdiv(N, 256)*D*4");
  EXPECT_EQ(pkg.findWorkspace("lse"), 1);
  EXPECT_EQ(pkg.findWorkspace("B"), -1);
  EXPECT_FALSE(m.workspaces[1].zeroed);
  ASSERT_EQ(pkg.workspaceExprs.size(), 2u);
  ASSERT_EQ(m.entries.size(), 3u);
  EXPECT_EQ(m.entries[1].when, "N > 256");
  ASSERT_EQ(pkg.whenExprs.size(), 3u);
  EXPECT_TRUE(pkg.whenExprs[1]);
  const ParamSlot &ws = m.entries[1].params[2];
  EXPECT_EQ(ws.kind, ParamSlot::Kind::Workspace);
  EXPECT_EQ(ws.arg, "partials");
  EXPECT_EQ(ws.type, SlotType::Ptr);
  const ParamSlot &expr = m.entries[2].params[3];
  EXPECT_EQ(expr.kind, ParamSlot::Kind::Expr);
  EXPECT_EQ(expr.arg, "cdiv(N, 256)");
  EXPECT_EQ(expr.type, SlotType::I32);
  // Parsed forms only where there is a formula.
  ASSERT_EQ(pkg.slotExprs.size(), 3u);
  ASSERT_EQ(pkg.slotExprs[2].size(), 5u);
  EXPECT_FALSE(pkg.slotExprs[2][0]);
  ASSERT_TRUE(pkg.slotExprs[2][3]);
  EXPECT_EQ(pkg.slotExprs[2][3]->getText(), "cdiv(N, 256)");
  std::string json = manifestToJson(m);
  EXPECT_NE(json.find("\"when\": \"N > 256\""), std::string::npos);
  EXPECT_NE(json.find("\"workspace\": \"partials\"\n"), std::string::npos)
      << "workspace slots are written without a type";
  EXPECT_NE(json.find("\"expr\": \"B*N\",\n          \"type\": \"f32\""),
            std::string::npos);
  // Canonical: writing what was read gives the same bytes.
  EXPECT_EQ(serialized(m, kSplitKPtx), bytes);

  // A workspace slot may spell out its type; an expr slot defaults to i64.
  Package again;
  s = readPackage(
      mutatedSplitK("\"expr\": \"cdiv(N, 256)\",\n          \"type\": \"i32\"",
                    "\"expr\": \"cdiv(N, 256)\""),
      again);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(again.manifest.entries[2].params[3].type, SlotType::I64);
  s = readPackage(mutatedSplitK("\"workspace\": \"lse\"",
                                "\"workspace\": \"lse\", \"type\": \"ptr\""),
                  again);
  ASSERT_FALSE(s) << s.getMessage();

  // Without conditions or workspaces the keys are left out.
  std::string plain = manifestToJson(attentionManifest());
  EXPECT_EQ(plain.find("\"when\""), std::string::npos);
  EXPECT_EQ(plain.find("\"workspaces\""), std::string::npos);
  Package att;
  ASSERT_FALSE(readPackage(serializedAttention(), att));
  ASSERT_EQ(att.whenExprs.size(), 1u);
  EXPECT_FALSE(att.whenExprs[0]);
  EXPECT_TRUE(att.workspaceExprs.empty());
}

TEST(PackageTest, WhenWorkspaceAndExprErrors) {
  expectError(
      mutatedSplitK("\"workspace\": \"lse\"", "\"workspace\": \"stats\""),
      "entry 'decode': params[3]: unknown workspace 'stats'");
  expectError(mutatedSplitK("\"workspace\": \"lse\"",
                            "\"workspace\": \"lse\", \"type\": \"i64\""),
              "entry 'decode': params[3]: a workspace slot must have type ptr");
  expectError(mutatedSplitK("\"workspace\": \"lse\"", "\"workspace\": 3"),
              "workspace must be a name");
  expectError(mutatedSplitK("\"when\": \"N > 256\"", "\"when\": \"X > 256\""),
              "package: entry 'decode': when: formula \"X > 256\": unknown "
              "dim 'X'");
  expectError(mutatedSplitK("\"when\": \"N > 256\"", "\"when\": \"N >\""),
              "entry 'decode': when: formula \"N >\": unexpected end");
  expectError(mutatedSplitK("\"when\": \"N > 256\"", "\"when\": 1"),
              "entries[1].when must be a string");
  expectError(mutatedSplitK("\"bytes\": \"B*cdiv(N, 256)*4\"",
                            "\"bytes\": \"B*cdiv(N, 256)*E\""),
              "package: workspace 'lse': bytes: formula "
              "\"B*cdiv(N, 256)*E\": unknown dim 'E'");
  expectError(mutatedSplitK(",\n      \"bytes\": \"B*cdiv(N, 256)*4\"", ""),
              "missing field workspaces[1].bytes");
  expectError(mutatedSplitK("\"bytes\": \"B*cdiv(N, 256)*4\"",
                            "\"bytes\": \"4\", \"size\": 4"),
              "unknown field workspaces[1].size");
  expectError(mutatedSplitK("\"bytes\": \"B*cdiv(N, 256)*4\"",
                            "\"bytes\": \"4\", \"zeroed\": 1"),
              "workspaces[1].zeroed must be true or false");
  expectError(
      mutatedSplitK("\"expr\": \"cdiv(N, 256)\"", "\"expr\": \"cdiv(N 256)\""),
      "package: entry 'merge': params[3]: expr: formula "
      "\"cdiv(N 256)\": expected ',' in cdiv(a, b)");
  expectError(
      mutatedSplitK("\"expr\": \"cdiv(N, 256)\",\n          \"type\": \"i32\"",
                    "\"expr\": \"cdiv(N, 256)\", \"type\": \"ptr\""),
      "entry 'merge': params[3]: only ptr and workspace slots may have "
      "type ptr");
  expectError(mutatedSplitK("\"workspace\": \"lse\"",
                            "\"workspace\": \"lse\", \"expr\": \"N\""),
              "must have exactly one of ptr, stride, size, dim, param, const, "
              "workspace, expr");
  // Workspace names: identifiers, unique, distinct from dims and args.
  expectError(mutatedSplitK("\"name\": \"lse\"", "\"name\": \"partials\""),
              "duplicate workspace 'partials'");
  expectError(mutatedSplitK("\"name\": \"lse\"", "\"name\": \"N\""),
              "workspace 'N' has the name of a dim or argument");
  expectError(mutatedSplitK("\"name\": \"lse\"", "\"name\": \"K\""),
              "workspace 'K' has the name of a dim or argument");
  expectError(mutatedSplitK("\"name\": \"lse\"", "\"name\": \"l s e\""),
              "workspace name 'l s e' is not an identifier");
  expectError(mutatedSplitK("\"workspaces\": [", "\"workspaces\": 1, \"x\": ["),
              "manifest.workspaces must be an array");
}

/// The TMA manifest as JSON, with `from` replaced by `to` once.
std::string mutatedTma(const std::string &from, const std::string &to) {
  std::string text = manifestToJson(tmaManifest());
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos)
    text.replace(pos, from.size(), to);
  return container(text, kTmaPtx);
}

/// Q's tensor map as the writer spells it.
const char *kQTensorMap = "\"tma\": \"Q\",\n"
                          "          \"box\": [1, 1, 128, 64],\n"
                          "          \"swizzle\": \"128B\",\n"
                          "          \"oob_fill\": \"zero\",\n"
                          "          \"l2_promotion\": \"128B\"";

/// Expects the writer to refuse `m` with a message containing `needle`.
void expectUnwritable(const PackageManifest &m, const std::string &needle) {
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, kTmaPtx);
  std::string bytes;
  Status s = w.serialize(bytes);
  ASSERT_TRUE(s) << "accepted a manifest that should fail with: " << needle;
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_PACKAGE);
  EXPECT_NE(s.getMessage().find(needle), std::string::npos)
      << "message: " << s.getMessage() << "\nexpected: " << needle;
}

TEST(PackageTest, TmaSlotsAndFallbacksRoundTrip) {
  std::string bytes = serialized(tmaManifest(), kTmaPtx);
  ASSERT_FALSE(bytes.empty());
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  const EntrySpec &fwd = pkg.manifest.entries[0];
  EXPECT_EQ(fwd.fallback, std::vector<std::string>{"fwd_plain"});
  ASSERT_EQ(fwd.params.size(), 5u);
  const ParamSlot &q = fwd.params[0];
  EXPECT_EQ(q.kind, ParamSlot::Kind::Tma);
  EXPECT_EQ(q.arg, "Q");
  EXPECT_EQ(q.type, SlotType::TensorMap);
  EXPECT_EQ(q.tile.box, (std::vector<int64_t>{1, 1, 128, 64}));
  EXPECT_EQ(q.tile.swizzle, TmaSwizzle::B128);
  EXPECT_EQ(q.tile.oobFill, TmaOobFill::Zero);
  EXPECT_EQ(q.tile.l2Promotion, TmaL2Promotion::B128);
  EXPECT_EQ(pkg.fallbackOf, (std::vector<std::vector<size_t>>{{2}, {}, {}}));
  EXPECT_EQ(pkg.standsInFor, (std::vector<int>{-1, -1, 0}));
  EXPECT_TRUE(pkg.usesTma(0));
  EXPECT_FALSE(pkg.usesTma(2));
  // A tensor map's slot type is implied: the writer leaves it out.
  std::string json = manifestToJson(pkg.manifest);
  EXPECT_NE(json.find(std::string(kQTensorMap) + "\n        }"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"module\": \"main\",\n      \"fallback\": "
                      "\"fwd_plain\",\n      \"grid\""),
            std::string::npos);
  // Canonical: writing what was read gives the same bytes.
  EXPECT_EQ(serialized(pkg.manifest, kTmaPtx), bytes);

  // Only the tensor and the box are required; the type may be spelled out.
  Package minimal;
  s = readPackage(mutatedTma(kQTensorMap, "\"tma\": \"Q\", \"box\": [1, 1, "
                                          "128, 64], \"type\": \"tmap\""),
                  minimal);
  ASSERT_FALSE(s) << s.getMessage();
  const TmaTile &tile = minimal.manifest.entries[0].params[0].tile;
  EXPECT_EQ(tile.swizzle, TmaSwizzle::None);
  EXPECT_EQ(tile.oobFill, TmaOobFill::Zero);
  EXPECT_EQ(tile.l2Promotion, TmaL2Promotion::B128);
  EXPECT_EQ(minimal.manifest.entries[0].params[0].type, SlotType::TensorMap);

  // Every other spelling, and back.
  Package other;
  s = readPackage(
      mutatedTma("\"swizzle\": \"128B\",\n          \"oob_fill\": \"zero\",\n"
                 "          \"l2_promotion\": \"128B\"",
                 "\"swizzle\": \"none\", \"oob_fill\": \"nan\", "
                 "\"l2_promotion\": \"256B\""),
      other);
  ASSERT_FALSE(s) << s.getMessage();
  const TmaTile &spelled = other.manifest.entries[0].params[0].tile;
  EXPECT_EQ(spelled.swizzle, TmaSwizzle::None);
  EXPECT_EQ(spelled.oobFill, TmaOobFill::Nan);
  EXPECT_EQ(spelled.l2Promotion, TmaL2Promotion::B256);
  for (auto [swizzle, name] :
       {std::pair{TmaSwizzle::B32, "32B"}, std::pair{TmaSwizzle::B64, "64B"}})
    EXPECT_EQ(tmaSwizzleName(swizzle), name);
  EXPECT_EQ(tmaL2PromotionName(TmaL2Promotion::None), "none");
  EXPECT_EQ(tmaL2PromotionName(TmaL2Promotion::B64), "64B");
  EXPECT_EQ(tmaOobFillName(TmaOobFill::Nan), "nan");
  EXPECT_EQ(slotTypeName(SlotType::TensorMap), "tmap");
  PackageWriter again(other.manifest);
  again.addModule("main", ModuleFormat::Ptx, kTmaPtx);
  std::string written;
  ASSERT_FALSE(again.serialize(written));
  Package reread;
  ASSERT_FALSE(readPackage(written, reread));
  EXPECT_EQ(manifestToJson(reread.manifest), manifestToJson(other.manifest));

  // An optional map is written as such, and read back; others leave the key
  // out.
  Package optional;
  s = readPackage(mutatedTma("\"l2_promotion\": \"128B\"",
                             "\"l2_promotion\": \"128B\", \"optional\": true"),
                  optional);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_TRUE(optional.manifest.entries[0].params[0].tile.optional);
  EXPECT_FALSE(optional.manifest.entries[0].params[1].tile.optional);
  EXPECT_NE(manifestToJson(optional.manifest).find("\"optional\": true"),
            std::string::npos);
  EXPECT_EQ(json.find("\"optional\""), std::string::npos);
  s = readPackage(mutatedTma("\"l2_promotion\": \"128B\"",
                             "\"l2_promotion\": \"128B\", \"optional\": 1"),
                  optional);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find(".optional must be true or false"),
            std::string::npos)
      << s.getMessage();

  // Without fallbacks the key is left out.
  EXPECT_EQ(manifestToJson(attentionManifest()).find("\"fallback\""),
            std::string::npos);
}

TEST(PackageTest, TmaSlotErrors) {
  std::string boxQ = "\"box\": [1, 1, 128, 64]";
  expectError(mutatedTma("\"tma\": \"Q\"", "\"tma\": \"M\""),
              "package: entry 'fwd': params[0]: 'M' is not a tensor argument");
  expectError(mutatedTma("\"tma\": \"Q\"", "\"tma\": 1"),
              "entries[0].params[0].tma must be a name");
  expectError(mutatedTma("\"tma\": \"Q\"", "\"tma\": \"Q\", \"ptr\": \"Q\""),
              "must have exactly one of ptr, stride, size, dim, param, const, "
              "workspace, expr, tma");
  expectError(mutatedTma(boxQ + ",", ""),
              "missing field entries[0].params[0].box");
  expectError(mutatedTma(boxQ, "\"box\": 128"),
              "entries[0].params[0].box must be an array");
  expectError(mutatedTma(boxQ, "\"box\": [1, 1, 128, 6.4]"),
              "entries[0].params[0].box[3] must be an integer");
  expectError(mutatedTma(boxQ, "\"box\": [1, 128, 64]"),
              "entry 'fwd': params[0]: box has 3 sizes, but 'Q' has rank 4");
  expectError(mutatedTma(boxQ, "\"box\": [1, 0, 128, 64]"),
              "entry 'fwd': params[0]: box[1] = 0 is outside [1, 256]");
  expectError(mutatedTma(boxQ, "\"box\": [1, 1, 257, 64]"),
              "entry 'fwd': params[0]: box[2] = 257 is outside [1, 256]");
  expectError(mutatedTma(boxQ, "\"box\": [1, 1, 128, 4]"),
              "entry 'fwd': params[0]: the box's inner extent, 4 bf16 = 8 "
              "bytes, is not a multiple of 16 bytes");
  expectError(mutatedTma("\"swizzle\": \"128B\"", "\"swizzle\": \"64B\""),
              "entry 'fwd': params[0]: the box's inner extent, 64 bf16 = 128 "
              "bytes, exceeds the 64B swizzle span");
  expectError(mutatedTma("\"swizzle\": \"128B\"", "\"swizzle\": \"16B\""),
              "entries[0].params[0].swizzle must be none, 32B, 64B or 128B, "
              "got '16B'");
  expectError(mutatedTma("\"oob_fill\": \"zero\"", "\"oob_fill\": \"one\""),
              "entries[0].params[0].oob_fill must be zero or nan, got 'one'");
  expectError(
      mutatedTma("\"l2_promotion\": \"128B\"", "\"l2_promotion\": \"512B\""),
      "entries[0].params[0].l2_promotion must be none, 64B, 128B or "
      "256B, got '512B'");
  expectError(mutatedTma("\"l2_promotion\": \"128B\"",
                         "\"l2_promotion\": \"128B\", \"type\": \"i64\""),
              "entry 'fwd': params[0]: a tma slot must have type tmap");
  expectError(mutatedTma("\"dim\": \"M\",\n          \"type\": \"i32\"",
                         "\"dim\": \"M\", \"type\": \"tmap\""),
              "entry 'fwd': params[3]: only tma slots may have type tmap");
  expectError(mutatedTma("\"ptr\": \"O\"", "\"ptr\": \"O\", \"box\": [1]"),
              "unknown field entries[0].params[2].box");
  // A tensor of rank 6, a bool tensor, a NaN fill of integers.
  expectError(mutatedTma("\"axes\": [\"B\", \"H\", \"M\", \"D\"]",
                         "\"axes\": [\"B\", \"H\", \"M\", \"D\", 1, 1]"),
              "entry 'fwd': params[0]: TMA loads tensors of rank 1 to 5, 'Q' "
              "has rank 6");
  PackageManifest m = tmaManifest();
  m.args[0].dtype = DType::I1;
  expectUnwritable(m, "entry 'fwd': params[0]: TMA does not load i1 tensors");
  m = tmaManifest();
  m.args[0].dtype = DType::I8;
  m.entries[0].params[0].tile.oobFill = TmaOobFill::Nan;
  expectUnwritable(m, "entry 'fwd': params[0]: oob_fill nan needs a "
                      "floating-point tensor, 'Q' is i8");
  // Every dtype TMA loads, with the inner extent its element size allows.
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32,
                  DType::I64, DType::I8}) {
    m = tmaManifest();
    m.args[0].dtype = t;
    m.entries[0].params[0].tile.box.back() = 128 / dtypeSize(t);
    PackageWriter w(m);
    w.addModule("main", ModuleFormat::Ptx, kTmaPtx);
    std::string bytes;
    Status s = w.serialize(bytes);
    EXPECT_FALSE(s) << dtypeName(t) << ": " << s.getMessage();
  }
}

TEST(PackageTest, TmaSlotsCount128BytesOfParameters) {
  // fwd's five slots take 280 bytes (two maps, three scalars): 29 more maps
  // from offset 320 end at 4032, a 30th at 4160.
  PackageManifest m = tmaManifest();
  ParamSlot map = m.entries[0].params[1];
  for (int i = 0; i < 29; ++i)
    m.entries[0].params.push_back(map);
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, kTmaPtx);
  std::string bytes;
  Status s = w.serialize(bytes);
  EXPECT_FALSE(s) << s.getMessage();
  m.entries[0].params.push_back(map);
  expectUnwritable(m, "entry 'fwd': kernel parameters exceed 4096 bytes");
}

TEST(PackageTest, FallbackOfSeveralEntriesRoundTrips) {
  PackageManifest m = tmaManifest();
  EntrySpec list = m.entries[2];
  list.name = "fwd_plain_list";
  m.entries.push_back(list);
  m.entries[0].fallback = {"fwd_plain_list", "fwd_plain"};
  std::string bytes = serialized(m, kTmaPtx);
  ASSERT_FALSE(bytes.empty());
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(pkg.manifest.entries[0].fallback,
            (std::vector<std::string>{"fwd_plain_list", "fwd_plain"}));
  EXPECT_EQ(pkg.fallbackOf,
            (std::vector<std::vector<size_t>>{{3, 2}, {}, {}, {}}));
  EXPECT_EQ(pkg.standsInFor, (std::vector<int>{-1, -1, 0, 0}));
  EXPECT_NE(manifestToJson(pkg.manifest)
                .find("\"fallback\": [\"fwd_plain_list\", \"fwd_plain\"],"),
            std::string::npos)
      << manifestToJson(pkg.manifest);
  EXPECT_EQ(serialized(pkg.manifest, kTmaPtx), bytes);
}

TEST(PackageTest, ZeroedWorkspacesRoundTrip) {
  PackageManifest m = splitKManifest();
  m.workspaces[1].zeroed = true;
  std::string bytes = serialized(m, kSplitKPtx);
  ASSERT_FALSE(bytes.empty());
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_FALSE(pkg.manifest.workspaces[0].zeroed);
  EXPECT_TRUE(pkg.manifest.workspaces[1].zeroed);
  std::string json = manifestToJson(pkg.manifest);
  EXPECT_NE(json.find("\"zeroed\": true"), std::string::npos) << json;
  EXPECT_EQ(json.find("\"zeroed\": false"), std::string::npos) << json;
  EXPECT_EQ(serialized(pkg.manifest, kSplitKPtx), bytes);
}

TEST(PackageTest, PersistentEntriesRoundTrip) {
  PackageManifest m = tmaManifest();
  m.entries[0].persistentCtasPerSm = 1;
  std::string bytes = serialized(m, kTmaPtx);
  ASSERT_FALSE(bytes.empty());
  Package pkg;
  Status s = readPackage(bytes, pkg);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(pkg.manifest.entries[0].persistentCtasPerSm, 1);
  EXPECT_EQ(pkg.manifest.entries[1].persistentCtasPerSm, 0);
  std::string json = manifestToJson(pkg.manifest);
  EXPECT_NE(json.find("\"persistent\": 1"), std::string::npos) << json;
  EXPECT_EQ(json.find("\"persistent\": 0"), std::string::npos) << json;
  EXPECT_EQ(serialized(pkg.manifest, kTmaPtx), bytes);

  std::string shared = "\"shared_bytes\": 163840,";
  expectError(mutatedTma(shared, shared + " \"persistent\": -1,"),
              "package: entry 'fwd': persistent must be in [0, 32] CTAs per "
              "SM");
  expectError(mutatedTma(shared, shared + " \"persistent\": 33,"),
              "package: entry 'fwd': persistent must be in [0, 32] CTAs per "
              "SM");
  expectError(mutatedTma(shared, shared + " \"persistent\": \"1\","),
              "entries[0].persistent must be an integer");
}

TEST(PackageTest, FallbackErrors) {
  std::string fallback = "\"fallback\": \"fwd_plain\"";
  expectError(mutatedTma(fallback, "\"fallback\": \"nope\""),
              "package: entry 'fwd': no fallback entry 'nope'");
  expectError(mutatedTma(fallback, "\"fallback\": \"fwd\""),
              "package: entry 'fwd' is its own fallback");
  expectError(mutatedTma(fallback, "\"fallback\": 2"),
              "entries[0].fallback must be a string or a non-empty array of "
              "strings");
  expectError(mutatedTma(fallback, "\"fallback\": []"),
              "entries[0].fallback must be a string or a non-empty array of "
              "strings");
  expectError(mutatedTma(fallback, "\"fallback\": [\"fwd_plain\", 2]"),
              "entries[0].fallback must be a string or a non-empty array of "
              "strings");
  expectError(
      mutatedTma(fallback, "\"fallback\": [\"fwd_plain\", \"fwd_plain\"]"),
      "package: entry 'fwd' names its fallback 'fwd_plain' twice");
  PackageManifest m = tmaManifest();
  m.entries[2].fallback = {"finish"};
  expectUnwritable(m, "entry 'fwd': fallback 'fwd_plain' has a fallback of "
                      "its own");
  m = tmaManifest();
  m.entries[2].params[0] = m.entries[0].params[0];
  expectUnwritable(m, "entry 'fwd': fallback 'fwd_plain' has tma slots");
  m = tmaManifest();
  m.entries[2].when = "M > 0";
  expectUnwritable(m, "entry 'fwd': fallback 'fwd_plain' has a when of its "
                      "own (it runs when 'fwd' does)");
  m = tmaManifest();
  m.entries[1].fallback = {"fwd_plain"};
  expectUnwritable(m, "entry 'fwd_plain' is the fallback of both 'fwd' and "
                      "'finish'");
  // An entry without tensor maps may name one; it never needs it.
  m = tmaManifest();
  m.entries[0].fallback.clear();
  m.entries[1].fallback = {"fwd_plain"};
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, kTmaPtx);
  std::string bytes;
  EXPECT_FALSE(w.serialize(bytes));
}

TEST(PackageTest, CubinModulesAreBinarySafe) {
  PackageManifest m = attentionManifest();
  std::string cubin("\x7f"
                    "ELF\0\n\n\xff\x00zz",
                    11);
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Cubin, cubin);
  std::string bytes;
  ASSERT_FALSE(w.serialize(bytes));
  Package pkg;
  ASSERT_FALSE(readPackage(bytes, pkg));
  EXPECT_EQ(pkg.modules[0].format, ModuleFormat::Cubin);
  EXPECT_EQ(pkg.modules[0].bytes, cubin);
}

TEST(PackageTest, FileRoundTripAndIoErrors) {
  std::string path = ::testing::TempDir() + "/roundtrip.attnpkg";
  PackageWriter w(attentionManifest());
  w.addModule("main", ModuleFormat::Ptx, kAttentionPtx);
  ASSERT_FALSE(w.writeFile(path));
  Package pkg;
  ASSERT_FALSE(readPackageFile(path, pkg));
  std::remove(path.c_str());
  Status s = readPackageFile(path, pkg);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_IO);
  EXPECT_TRUE(w.writeFile("/nonexistent-dir/x.attnpkg"));
}

TEST(PackageTest, WriterRefusesInvalidManifests) {
  PackageManifest m = attentionManifest();
  m.entries[0].module = "nope";
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, kAttentionPtx);
  std::string bytes;
  Status s = w.serialize(bytes);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("no module 'nope'"), std::string::npos);
}

TEST(PackageTest, ContainerErrors) {
  std::string good = serializedAttention();
  expectError("", "not an attnc package");
  expectError("hello world\n", "not an attnc package");
  expectError("attnpkg 2\n" + good.substr(10),
              "unsupported package version '2'");
  std::string noManifest = "attnpkg 1\n";
  noManifest += "end " + checksumHex(noManifest) + "\n";
  expectError(noManifest, "no manifest");
  expectError(good + "x", "bytes after the 'end' line");
  std::string unknown = "attnpkg 1\nfoo 3\n";
  expectError(unknown, "unknown section 'foo'");
  expectError("attnpkg 1\nmanifest 99999\n{}\n", "truncated");
  expectError("attnpkg 1\nmanifest 012\n", "malformed 'manifest' line");
  expectError("attnpkg 1\nmanifest -1\n", "malformed 'manifest' line");
  std::string badSum = good;
  badSum[badSum.size() - 2] = badSum[badSum.size() - 2] == '0' ? '1' : '0';
  expectError(badSum, "checksum mismatch");
}

/// Every strict prefix of a package is an error, never a crash.
TEST(PackageTest, TruncatedAtEveryOffset) {
  std::string good = serializedAttention();
  ASSERT_FALSE(readBytes(good));
  for (size_t n = 0; n < good.size(); ++n) {
    Status s = readBytes(good.substr(0, n));
    ASSERT_TRUE(s) << "prefix of " << n << " bytes accepted";
    ASSERT_EQ(s.getCode(), ATTNC_ERROR_INVALID_PACKAGE);
  }
}

/// Every single-byte change is detected: by the structure or the checksum.
TEST(PackageTest, ByteFlipsAreErrors) {
  std::string good = serializedAttention();
  for (size_t i = 0; i < good.size(); ++i) {
    for (unsigned char mask : {0x01, 0x20, 0x80}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      Status s = readBytes(bad);
      ASSERT_TRUE(s) << "flip of byte " << i << " by " << int(mask)
                     << " accepted";
    }
  }
  // Random multi-byte damage, insertions and deletions.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % bad.size();
      switch (rng() % 3) {
      case 0:
        bad[pos] = static_cast<char>(rng());
        break;
      case 1:
        bad.erase(pos, 1 + rng() % 8);
        break;
      case 2:
        bad.insert(pos, 1, static_cast<char>(rng()));
        break;
      }
      if (bad.empty())
        bad = "x";
    }
    if (bad == good)
      continue;
    ASSERT_TRUE(readBytes(bad)) << "damaged package accepted";
  }
}

/// Manifests with a valid checksum but broken content: parser and validator
/// must both hold on their own.
TEST(PackageTest, ManifestFuzzWithValidChecksums) {
  std::string text = manifestToJson(attentionManifest());
  std::mt19937 rng(11);
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = text;
    size_t pos = rng() % bad.size();
    if (rng() % 2)
      bad[pos] = "{}[]\",:0a-9 \\"[rng() % 14];
    else
      bad.erase(pos, 1 + rng() % 16);
    accepted += !readBytes(container(bad));
  }
  // Some edits are harmless (whitespace); most must fail. Mainly this test
  // is for the sanitizers.
  EXPECT_LT(accepted, 3000);
}

TEST(PackageTest, ManifestErrors) {
  expectError(mutated("\"format\": 1", "\"format\": 2"),
              "unsupported format 2");
  expectError(mutated("\"format\": 1,", ""), "missing field manifest.format");
  expectError(mutated("\"target\": \"sm_90a\"", "\"target\": \"sm90\""),
              "target 'sm90'");
  expectError(mutated("\"dtype\": \"bf16\"", "\"dtype\": \"bf17\""),
              "unknown dtype 'bf17'");
  expectError(mutated("\"axes\": [\"B\", \"H\", \"M\", \"D\"]",
                      "\"axes\": [\"B\", \"H\", \"X\", \"D\"]"),
              "unknown dim 'X'");
  expectError(mutated("\"axes\": [\"B\", \"H\", \"M\", \"D\"]",
                      "\"axes\": [\"B\", \"H\", 1.5, \"D\"]"),
              "must be a dim name or an integer");
  expectError(mutated("\"name\": \"K\"", "\"name\": \"Q\""),
              "duplicate name 'Q'");
  expectError(mutated("\"name\": \"K\"", "\"name\": \"B\""),
              "duplicate name 'B'");
  expectError(mutated("\"kind\": \"input\"", "\"kind\": \"inout\""),
              "must be input, output or param");
  expectError(mutated("\"layout\": \"contiguous\"", "\"layout\": \"tiled\""),
              "layout must be");
  expectError(mutated("\"default\": 1024", "\"default\": 3.5"),
              "default is not a valid i32");
  expectError(mutated("\"default\": 1024", "\"default\": true"),
              "default must be");
  expectError(mutated("\"ceil(M/128)\"", "\"ceil(Z/128)\""), "unknown dim 'Z'");
  expectError(mutated("\"ceil(M/128)\"", "\"ceil(M/\""), "formula");
  expectError(
      mutated("\"ceil(M/128)\", \"H\", \"B\"", "\"1\", \"2\", \"3\", \"4\""),
      "grid must have 1 to 3 formulas");
  expectError(mutated("\"block\": [128, 1, 1]", "\"block\": [2048, 1, 1]"),
              "block sizes must be in [1, 1024]");
  expectError(mutated("\"block\": [128, 1, 1]", "\"block\": [128, 16, 1]"),
              "more than 1024 threads");
  expectError(mutated("\"block\": [128, 1, 1]", "\"block\": []"),
              "block must have 1 to 3 sizes");
  expectError(mutated("\"shared_bytes\": 65536", "\"shared_bytes\": 999999"),
              "shared_bytes must be in");
  expectError(mutated("\"module\": \"main\"", "\"module\": \"other\""),
              "no module 'other'");
  expectError(mutated("\"function\": \"gqa_fwd\"", "\"function\": \"gqa_bwd\""),
              "has no .entry gqa_bwd");
  expectError(mutated("\"ptr\": \"Q\"", "\"ptr\": \"window\""),
              "'window' is not a tensor argument");
  expectError(mutated("\"param\": \"window\"", "\"param\": \"Q\""),
              "'Q' is not a param");
  expectError(mutated("\"stride\": \"K\",\n          \"axis\": 0",
                      "\"stride\": \"K\",\n          \"axis\": 7"),
              "axis 7 out of range");
  expectError(mutated("\"dim\": \"M\"", "\"dim\": \"Y\""), "unknown dim 'Y'");
  expectError(mutated("\"ptr\": \"Q\"", "\"ptr\": \"Q\", \"dim\": \"M\""),
              "exactly one of");
  expectError(mutated("\"type\": \"i32\"", "\"type\": \"u8\""),
              "unknown slot type 'u8'");
  expectError(mutated("\"type\": \"i32\"", "\"type\": \"ptr\""),
              "may have type ptr");
  expectError(mutated("\"producer\": \"test\"", "\"producr\": \"test\""),
              "unknown field manifest.producr");
  expectError(mutated("\"H % G == 0\"", "\"H %% G\""), "constraint");
  expectError(mutated("\"name\": \"gqa\"", "\"name\": \"g q a\""),
              "is not an identifier");
  // A symbolic dim no tensor mentions cannot be bound at launch.
  expectError(mutated("{\n      \"name\": \"B\"\n    }",
                      "{\"name\": \"B\"}, {\"name\": \"Z\"}"),
              "dim 'Z' is symbolic but no tensor has it");
  // Extension fields are allowed.
  EXPECT_FALSE(readBytes(mutated("\"producer\": \"test\"",
                                 "\"producer\": \"test\", \"x-note\": [1]")));
}

TEST(PackageTest, NoEntriesAndBadModules) {
  std::string text = manifestToJson(attentionManifest());
  size_t e = text.find("\"entries\": [");
  ASSERT_NE(e, std::string::npos);
  std::string noEntries = text.substr(0, e) + "\"entries\": []\n}";
  expectError(container(noEntries), "no entries");
  expectError(container(text, std::string("abc\0def", 7)), "NUL byte");
  expectError(container(text, ""), "module 'main' is empty");
}

} // namespace
