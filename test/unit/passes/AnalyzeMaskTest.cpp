//===- AnalyzeMaskTest.cpp - Soundness of attn-analyze-mask ---------------===//
//
// The tile classes must be sound: a tile called empty holds no kept point, a
// tile called full no dropped point. Each test builds a kernel whose mask is
// a combination of the usual predicates, runs attn-analyze-mask, turns the
// generated tile_class region into an einsum over a list of random tiles, and
// evaluates it with the reference evaluator next to the mask itself at every
// point; then it checks every tile against brute force.
//
//===----------------------------------------------------------------------===//

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Runtime/Tensor.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "gtest/gtest.h"

#include <cstdio>
#include <functional>
#include <random>
#include <sstream>
#include <string>

using namespace mlir;
using namespace mlir::attn;
using ::attn::DType;
using ::attn::HostTensor;

namespace {

/// Emits a mask body in SSA text: each atom appends its ops and returns the
/// name of its i1 result.
class MaskWriter {
public:
  std::string fresh() { return "%v" + std::to_string(next++); }
  std::string line(const std::string &text) {
    std::string name = fresh();
    body += "    " + name + " = " + text + "\n";
    return name;
  }
  /// m + (N - M): the query's key position.
  std::string queryPosition() {
    std::string off = line("arith.subi %N, %M : index");
    return line("arith.addi %m, " + off + " : index");
  }
  std::string param(const std::string &name) {
    return line("arith.index_cast %" + name + " : i32 to index");
  }
  std::string constant(int64_t v) {
    return line("arith.constant " + std::to_string(v) + " : index");
  }
  /// The front end's floored modulo.
  std::string floorMod(const std::string &a, const std::string &d) {
    std::string r = line("arith.remsi " + a + ", " + d + " : index");
    std::string zero = constant(0);
    std::string nz = line("arith.cmpi ne, " + r + ", " + zero + " : index");
    std::string rneg = line("arith.cmpi slt, " + r + ", " + zero + " : index");
    std::string dneg = line("arith.cmpi slt, " + d + ", " + zero + " : index");
    std::string mismatch = line("arith.xori " + rneg + ", " + dneg + " : i1");
    std::string fix = line("arith.andi " + nz + ", " + mismatch + " : i1");
    std::string sum = line("arith.addi " + r + ", " + d + " : index");
    return line("arith.select " + fix + ", " + sum + ", " + r + " : index");
  }
  std::string docId(const std::string &position) {
    std::string id = line("attn.read %Doc[%b, " + position +
                          "] : tensor<?x?xi32>");
    return line("arith.index_cast " + id + " : i32 to index");
  }

  std::string body;
  int next = 0;
};

using Atom = std::function<std::string(MaskWriter &)>;

/// The predicates the masks are built from.
struct Atoms {
  static std::string causal(MaskWriter &w) {
    std::string q = w.queryPosition();
    return w.line("arith.cmpi sle, %n, " + q + " : index");
  }
  static std::string window(MaskWriter &w) {
    std::string q = w.queryPosition();
    std::string d = w.line("arith.subi " + q + ", %n : index");
    return w.line("arith.cmpi slt, " + d + ", " + w.param("window") +
                  " : index");
  }
  static std::string sinks(MaskWriter &w) {
    return w.line("arith.cmpi slt, %n, " + w.param("sinks") + " : index");
  }
  static std::string prefix(MaskWriter &w) {
    return w.line("arith.cmpi slt, %n, " + w.param("prefix") + " : index");
  }
  static std::string sameDoc(MaskWriter &w) {
    std::string key = w.docId("%n");
    std::string query = w.docId(w.queryPosition());
    return w.line("arith.cmpi eq, " + key + ", " + query + " : index");
  }
  static std::string notPad(MaskWriter &w) {
    std::string key = w.docId("%n");
    return w.line("arith.cmpi ne, " + key + ", " + w.param("pad") +
                  " : index");
  }
  static std::string block(MaskWriter &w) {
    std::string c64 = w.constant(64);
    std::string mb = w.line("arith.floordivsi %m, " + c64 + " : index");
    std::string nb = w.line("arith.floordivsi %n, " + c64 + " : index");
    return w.line("attn.read %Blocks[%b, %h, " + mb + ", " + nb +
                  "] : tensor<?x?x?x?xi1>");
  }
  static std::string streaming(MaskWriter &w) {
    return w.line("attn.read %Streaming[%h] : tensor<?xi1>");
  }
  /// Block-periodic: key block <= query block, blocks of 64.
  static std::string blockCausal(MaskWriter &w) {
    std::string c64 = w.constant(64);
    std::string mb = w.line("arith.floordivsi %m, " + c64 + " : index");
    std::string nb = w.line("arith.floordivsi %n, " + c64 + " : index");
    return w.line("arith.cmpi sle, " + nb + ", " + mb + " : index");
  }
  /// Dilated: (m - n) mod 4 == 0.
  static std::string dilated(MaskWriter &w) {
    std::string d = w.line("arith.subi %m, %n : index");
    std::string r = w.floorMod(d, w.constant(4));
    return w.line("arith.cmpi eq, " + r + ", " + w.constant(0) + " : index");
  }
  /// Strided by a runtime param: n mod stride < stride / 2 (+ 1).
  static std::string strided(MaskWriter &w) {
    std::string s = w.param("stride");
    std::string r = w.floorMod("%n", s);
    std::string half =
        w.line("arith.divsi " + s + ", " + w.constant(2) + " : index");
    return w.line("arith.cmpi sle, " + r + ", " + half + " : index");
  }
  /// Local band over blocks of 16 via multiplication: |m/16*16 - n| < 48.
  static std::string band(MaskWriter &w) {
    std::string c16 = w.constant(16);
    std::string mb = w.line("arith.floordivsi %m, " + c16 + " : index");
    std::string start = w.line("arith.muli " + mb + ", " + c16 + " : index");
    std::string d = w.line("arith.subi " + start + ", %n : index");
    std::string nd = w.line("arith.subi " + w.constant(0) + ", " + d +
                            " : index");
    std::string a = w.line("arith.maxsi " + d + ", " + nd + " : index");
    return w.line("arith.cmpi ult, " + a + ", " + w.constant(48) + " : index");
  }
};

std::string andOf(MaskWriter &w, const std::string &a, const std::string &b) {
  return w.line("arith.andi " + a + ", " + b + " : i1");
}
std::string orOf(MaskWriter &w, const std::string &a, const std::string &b) {
  return w.line("arith.ori " + a + ", " + b + " : i1");
}
std::string notOf(MaskWriter &w, const std::string &a) {
  std::string t = w.line("arith.constant true");
  return w.line("arith.xori " + a + ", " + t + " : i1");
}

/// The test kernel around a mask body.
std::string makeKernel(const std::string &maskBody, const std::string &keep) {
  std::string dyn = "-9223372036854775808";
  std::ostringstream os;
  os << "attn.kernel @k attributes {\n"
     << "  dim_names = [\"B\", \"H\", \"M\", \"N\", \"D\", \"MB\", \"NB\", "
        "\"TB\"],\n"
     << "  dim_sizes = array<i64: " << dyn << ", " << dyn << ", " << dyn
     << ", " << dyn << ", " << dyn << ", " << dyn << ", " << dyn << ", " << dyn
     << ">,\n"
     << "  input_names = [\"Q\", \"K\", \"V\", \"Tiles\", \"Doc\", "
        "\"Blocks\", \"Streaming\"],\n"
     << "  param_names = [\"window\", \"sinks\", \"prefix\", \"pad\", "
        "\"stride\"],\n"
     << "  param_defaults = [0 : i32, 0 : i32, 0 : i32, 0 : i32, 1 : i32],\n"
     << "  output_names = [\"C\", \"Mask\"], output_types = [i32, i1],\n"
     << "  shapes = [[\"B\", \"H\", \"M\", \"D\"], [\"B\", \"H\", \"N\", "
        "\"D\"], [\"B\", \"H\", \"N\", \"D\"], [\"TB\", 6], [\"B\", \"N\"], "
        "[\"B\", \"H\", \"MB\", \"NB\"], [\"H\"], [\"TB\"], [\"B\", \"H\", "
        "\"M\", \"N\"]]} {\n"
     << "^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %MB: "
        "index, %NB: index, %TB: index,\n"
     << "     %Q: tensor<?x?x?x?xf32>, %K: tensor<?x?x?x?xf32>, %V: "
        "tensor<?x?x?x?xf32>, %Tiles: tensor<?x6xi64>,\n"
     << "     %Doc: tensor<?x?xi32>, %Blocks: tensor<?x?x?x?xi1>, "
        "%Streaming: tensor<?xi1>,\n"
     << "     %window: i32, %sinks: i32, %prefix: i32, %pad: i32, %stride: "
        "i32):\n"
     << "  %scale = arith.constant 1.0 : f32\n"
     << "  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)\n"
     << "      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, "
        "tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>\n"
     << "  score_mod {\n"
     << "  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):\n"
     << "    attn.yield %s : f32\n"
     << "  } mask {\n"
     << "  ^bb0(%b: index, %h: index, %m: index, %n: index):\n"
     << maskBody << "    attn.yield " << keep << " : i1\n"
     << "  }\n"
     << "  %C = attn.einsum <none> [\"t\"] extents(%TB) : tensor<?xi32> {\n"
     << "  ^bb0(%t: index):\n"
     << "    %z = arith.constant 1 : i32\n"
     << "    attn.yield %z : i32\n"
     << "  }\n"
     << "  %Mask = attn.einsum <none> [\"b\", \"h\", \"m\", \"n\"] "
        "extents(%B, %H, %M, %N) : tensor<?x?x?x?xi1> {\n"
     << "  ^bb0(%b: index, %h: index, %m: index, %n: index):\n"
     << maskBody << "    attn.yield " << keep << " : i1\n"
     << "  }\n"
     << "  attn.return %C, %Mask : tensor<?xi32>, tensor<?x?x?x?xi1>\n"
     << "}\n";
  return os.str();
}

/// Moves the generated tile_class into the body of the einsum %C, reading
/// the tile bounds from Tiles[t, 0..5], and erases the attention.
void extractTileClass(KernelOp kernel) {
  AttentionOp attention;
  EinsumOp classes;
  kernel.walk([&](AttentionOp op) { attention = op; });
  kernel.walk([&](EinsumOp op) {
    if (op.getIndices().size() == 1 &&
        cast<StringAttr>(op.getIndices()[0]).getValue() == "t")
      classes = op;
  });
  ASSERT_TRUE(attention && classes);
  ASSERT_TRUE(attention.hasTileClass());
  Block &tile = attention.getTileClass().front();
  Block &body = classes.getBodyBlock();
  while (!body.empty())
    body.back().erase();
  OpBuilder b = OpBuilder::atBlockEnd(&body);
  Location loc = classes.getLoc();
  Value tiles = kernel.getInputArg(3);
  IRMapping mapping;
  for (unsigned i = 0; i < 6; ++i) {
    Value column = arith::ConstantIndexOp::create(b, loc, i);
    Value bound = ReadOp::create(b, loc, b.getI64Type(), tiles,
                                 ValueRange{body.getArgument(0), column});
    mapping.map(tile.getArgument(i),
                arith::IndexCastOp::create(b, loc, b.getIndexType(), bound));
  }
  for (Operation &op : tile)
    b.clone(op, mapping);
  attention->erase();
}

struct Sizes {
  int64_t B, H, M, N;
};

struct Precision {
  int64_t trulyEmpty = 0, calledEmpty = 0, trulyFull = 0, calledFull = 0,
          tiles = 0;
};

class AnalyzeMaskTest : public ::testing::Test {
protected:
  AnalyzeMaskTest() {
    context.loadDialect<AttnDialect, arith::ArithDialect, math::MathDialect>();
  }

  /// Runs the pass on the kernel of `keep` and checks `trials` random
  /// launches of `tilesPerTrial` random tiles each. `aligned`: tiles on a
  /// grid (as backends use), else anywhere.
  Precision check(const std::string &name, const std::string &maskBody,
                  const std::string &keep, bool needsMLeN, int trials,
                  unsigned seed, bool alignedOnly = false) {
    Precision precision;
    std::string text = makeKernel(maskBody, keep);
    OwningOpRef<ModuleOp> module =
        parseSourceString<ModuleOp>(text, ParserConfig(&context));
    EXPECT_TRUE(module) << text;
    if (!module)
      return precision;
    PassManager pm(&context);
    pm.addNestedPass<KernelOp>(createAttnAnalyzeMask());
    EXPECT_TRUE(succeeded(pm.run(*module))) << name;
    KernelOp kernel = *module->getOps<KernelOp>().begin();
    extractTileClass(kernel);
    EXPECT_TRUE(succeeded(verify(*module))) << name;

    std::mt19937 rng(seed);
    auto uniform = [&](int64_t lo, int64_t hi) {
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    for (int trial = 0; trial < trials; ++trial) {
      Sizes s{uniform(1, 2), uniform(1, 3), uniform(1, 300), uniform(1, 300)};
      if (needsMLeN && s.M > s.N)
        std::swap(s.M, s.N);
      int64_t MB = (s.M + 63) / 64 + uniform(0, 1);
      int64_t NB = (s.N + 63) / 64 + uniform(0, 1);
      int64_t TB = 200;
      HostTensor q(DType::F32, {s.B, s.H, s.M, 1});
      HostTensor k(DType::F32, {s.B, s.H, s.N, 1});
      HostTensor v(DType::F32, {s.B, s.H, s.N, 1});
      HostTensor tiles(DType::I64, {TB, 6});
      HostTensor doc(DType::I32, {s.B, s.N});
      HostTensor blocks(DType::I1, {s.B, s.H, MB, NB});
      HostTensor streaming(DType::I1, {s.H});
      // Documents: sorted runs of random lengths (packed sequences), padding
      // ids (-1) at the tail, now and then stray ones, and sometimes huge ids
      // that f32 cannot hold.
      for (int64_t bi = 0; bi < s.B; ++bi) {
        int64_t id = uniform(0, 7) == 0 ? (int64_t(1) << 26) + 1 : 0;
        int64_t tail = uniform(0, 2) == 0 ? uniform(0, 20) : 0;
        for (int64_t n = 0; n < s.N; ++n) {
          if (uniform(0, 40) == 0)
            id += uniform(1, 3);
          bool pad = n >= s.N - tail || uniform(0, 500) == 0;
          doc.setFromDouble(bi * s.N + n, pad ? -1.0 : double(id));
        }
      }
      int64_t density = uniform(0, 4);
      for (int64_t i = 0; i < blocks.getNumElements(); ++i)
        blocks.setFromDouble(i, uniform(0, 4) < density ? 1.0 : 0.0);
      for (int64_t i = 0; i < s.H; ++i)
        streaming.setFromDouble(i, uniform(0, 1));
      std::vector<double> params = {
          double(uniform(0, 200)), double(uniform(0, 20)),
          double(uniform(0, 100)), -1.0, double(uniform(1, 40))};
      // Tiles: sizes 1..128, on a grid or anywhere, last tiles cut short.
      for (int64_t t = 0; t < TB; ++t) {
        int64_t tm = uniform(1, 128), tn = uniform(1, 128);
        int64_t m0, n0;
        if (alignedOnly || uniform(0, 1)) {
          m0 = uniform(0, (s.M - 1) / tm) * tm;
          n0 = uniform(0, (s.N - 1) / tn) * tn;
        } else {
          m0 = uniform(0, s.M - 1);
          n0 = uniform(0, s.N - 1);
        }
        double row[6] = {double(uniform(0, s.B - 1)),
                         double(uniform(0, s.H - 1)),
                         double(m0),
                         double(std::min(m0 + tm - 1, s.M - 1)),
                         double(n0),
                         double(std::min(n0 + tn - 1, s.N - 1))};
        for (int c = 0; c < 6; ++c)
          tiles.setFromDouble(t * 6 + c, row[c]);
      }
      ::attn::ref::KernelArguments args;
      args.dims = {s.B, s.H, s.M, s.N, 1, MB, NB, TB};
      args.inputs = {&q, &k, &v, &tiles, &doc, &blocks, &streaming};
      args.params = params;
      auto outputs = ::attn::ref::evaluate(kernel, args);
      EXPECT_TRUE(succeeded(outputs)) << name;
      if (failed(outputs))
        return precision;
      const HostTensor &classes = (*outputs)[0];
      const HostTensor &mask = (*outputs)[1];
      for (int64_t t = 0; t < TB; ++t) {
        int64_t r[6];
        for (int c = 0; c < 6; ++c)
          r[c] = int64_t(tiles.getAsDouble(t * 6 + c));
        bool anyKept = false, anyDropped = false;
        for (int64_t m = r[2]; m <= r[3]; ++m)
          for (int64_t n = r[4]; n <= r[5]; ++n) {
            bool kept =
                mask.getAsDouble(((r[0] * s.H + r[1]) * s.M + m) * s.N + n) !=
                0.0;
            anyKept |= kept;
            anyDropped |= !kept;
          }
        int cls = int(classes.getAsDouble(t));
        ++precision.tiles;
        precision.trulyEmpty += !anyKept;
        precision.trulyFull += !anyDropped;
        precision.calledEmpty += cls == 0;
        precision.calledFull += cls == 2;
        EXPECT_TRUE(cls == 0 || cls == 1 || cls == 2) << name;
        EXPECT_FALSE(cls == 0 && anyKept)
            << name << ": tile called empty keeps a point: b=" << r[0]
            << " h=" << r[1] << " m=[" << r[2] << "," << r[3] << "] n=["
            << r[4] << "," << r[5] << "] M=" << s.M << " N=" << s.N;
        EXPECT_FALSE(cls == 2 && anyDropped)
            << name << ": tile called full drops a point: b=" << r[0]
            << " h=" << r[1] << " m=[" << r[2] << "," << r[3] << "] n=["
            << r[4] << "," << r[5] << "] M=" << s.M << " N=" << s.N;
        if (::testing::Test::HasFailure())
          return precision;
      }
    }
    std::printf("[ precision] %-16s tiles %5lld  empty %5lld/%-5lld full "
                "%5lld/%-5lld\n",
                name.c_str(), (long long)precision.tiles,
                (long long)precision.calledEmpty,
                (long long)precision.trulyEmpty,
                (long long)precision.calledFull,
                (long long)precision.trulyFull);
    return precision;
  }

  Precision checkAtoms(const std::string &name,
                       const std::function<std::string(MaskWriter &)> &build,
                       bool needsMLeN, int trials = 12,
                       bool alignedOnly = false) {
    MaskWriter w;
    std::string keep = build(w);
    return check(name, w.body, keep, needsMLeN, trials, 1234, alignedOnly);
  }

  MLIRContext context;
};

TEST_F(AnalyzeMaskTest, Causal) {
  Precision p = checkAtoms("causal", Atoms::causal, false, 12, true);
  // Affine masks are decided exactly on grid tiles.
  EXPECT_EQ(p.calledEmpty, p.trulyEmpty);
  EXPECT_EQ(p.calledFull, p.trulyFull);
}

TEST_F(AnalyzeMaskTest, Window) {
  checkAtoms("window", [](MaskWriter &w) {
    return andOf(w, Atoms::causal(w), Atoms::window(w));
  }, false);
}

TEST_F(AnalyzeMaskTest, SinksAndWindow) {
  checkAtoms("sinks+window", [](MaskWriter &w) {
    return andOf(w, Atoms::causal(w), orOf(w, Atoms::window(w), Atoms::sinks(w)));
  }, false);
}

TEST_F(AnalyzeMaskTest, PrefixLM) {
  checkAtoms("prefix-lm", [](MaskWriter &w) {
    return orOf(w, Atoms::causal(w), Atoms::prefix(w));
  }, false);
}

TEST_F(AnalyzeMaskTest, BlockPeriodicAndDilated) {
  Precision p = checkAtoms("block-causal", Atoms::blockCausal, false);
  EXPECT_GT(p.calledEmpty + p.calledFull, 0);
  checkAtoms("dilated", Atoms::dilated, false);
  checkAtoms("strided", Atoms::strided, false);
  checkAtoms("band", Atoms::band, false);
  checkAtoms("dilated-or-block", [](MaskWriter &w) {
    return orOf(w, Atoms::dilated(w), Atoms::blockCausal(w));
  }, false);
}

TEST_F(AnalyzeMaskTest, DocumentIds) {
  Precision p = checkAtoms("document", [](MaskWriter &w) {
    return andOf(w, andOf(w, Atoms::causal(w), Atoms::sameDoc(w)),
                 Atoms::notPad(w));
  }, true);
  EXPECT_GT(p.calledEmpty, 0);
  checkAtoms("same-doc", Atoms::sameDoc, true);
}

TEST_F(AnalyzeMaskTest, BlockMap) {
  Precision p = checkAtoms("block-map", Atoms::block, false);
  EXPECT_GT(p.calledEmpty + p.calledFull, 0);
}

TEST_F(AnalyzeMaskTest, PerHeadFlags) {
  checkAtoms("per-head", [](MaskWriter &w) {
    std::string local = orOf(w, Atoms::window(w), Atoms::sinks(w));
    std::string retrieval = notOf(w, Atoms::streaming(w));
    return andOf(w, Atoms::causal(w), orOf(w, retrieval, local));
  }, false);
}

TEST_F(AnalyzeMaskTest, RandomCombinations) {
  std::vector<std::pair<Atom, bool>> atoms = {
      {Atoms::causal, false},    {Atoms::window, false},
      {Atoms::sinks, false},     {Atoms::prefix, false},
      {Atoms::sameDoc, true},    {Atoms::notPad, false},
      {Atoms::block, false},     {Atoms::streaming, false},
      {Atoms::blockCausal, false}, {Atoms::dilated, false},
      {Atoms::strided, false},   {Atoms::band, false}};
  std::mt19937 rng(99);
  for (int i = 0; i < 12; ++i) {
    MaskWriter w;
    bool needsMLeN = false;
    std::function<std::string(int)> tree = [&](int depth) -> std::string {
      int choice = std::uniform_int_distribution<int>(0, 3)(rng);
      if (depth == 0 || choice == 0) {
        auto &[atom, needs] = atoms[std::uniform_int_distribution<size_t>(
            0, atoms.size() - 1)(rng)];
        needsMLeN |= needs;
        return atom(w);
      }
      if (choice == 1)
        return notOf(w, tree(depth - 1));
      std::string a = tree(depth - 1), b = tree(depth - 1);
      return choice == 2 ? andOf(w, a, b) : orOf(w, a, b);
    };
    std::string keep = tree(3);
    check("random-" + std::to_string(i), w.body, keep, needsMLeN, 4,
          1000 + i);
    if (HasFailure())
      return;
  }
}

} // namespace
