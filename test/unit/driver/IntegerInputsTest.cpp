//===- IntegerInputsTest.cpp - Random data for integer inputs -------------===//
//
// Integer inputs get data drawn for what the cascade does with them: a
// length compared with a key index spreads over the whole axis, ends
// included (rows fully masked, rows fully kept); document ids come in runs
// of several lengths; a divisor is never 0; a gather index stays inside the
// axis it indexes.
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/IntegerInputs.h"
#include "DriverTestUtil.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/Launch.h"

#include <gtest/gtest.h>

#include <set>

using namespace attn;

namespace {

/// Lengths per batch, a width per head, document ids per key, a page table,
/// and a flag compared with a param only.
constexpr const char *kSpec = R"(
attention integer_roles {
  dims  B, H, M, N, D, NP
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  in    Len: i32[B]
  in    Width: i32[H]
  in    Doc: i32[B, N]
  in    Pages: i32[B, NP]
  in    Tag: i32[B]
  param tag: i32 = 1
  out   O: f32[B, H, M, D]

  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[Pages[b, 0], h, n, d]) * rsqrt(D)
  keep S where n < Len[b] and n / Width[h] <= m and Doc[b, n] == Doc[b, m + (N - M)] and Tag[b] != tag
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
)";

enum Input { Q, K, V, Len, Width, Doc, Pages, Tag };

class IntegerInputsTest : public ::testing::Test {
protected:
  IntegerInputsTest() {
    test::loadCodegenDialects(context);
    module = test::parseSpec(context, kSpec);
  }

  mlir::attn::KernelOp kernel() {
    return *module->getOps<mlir::attn::KernelOp>().begin();
  }

  IntegerInputPlan plan(Input input) {
    std::optional<IntegerInputPlan> plan =
        planIntegerInput(kernel(), input, dims);
    EXPECT_TRUE(plan.has_value());
    return plan.value_or(IntegerInputPlan{});
  }

  /// B = 8, H = 4, M = N = 65, D = 8, NP = 2.
  std::vector<int64_t> dims = {8, 4, 65, 65, 8, 2};
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};

TEST_F(IntegerInputsTest, RolesComeFromWhatTheCascadeDoes) {
  ASSERT_TRUE(module);
  EXPECT_FALSE(planIntegerInput(kernel(), Q, dims).has_value());
  // n < Len[b] with n in [0, 64]: lengths over [0, 65].
  EXPECT_EQ(plan(Len).role, IntegerRole::Bound);
  EXPECT_EQ(plan(Len).range.lo, 0);
  EXPECT_EQ(plan(Len).range.hi, 65);
  // n / Width[h]: never 0.
  EXPECT_EQ(plan(Width).role, IntegerRole::Divisor);
  EXPECT_GE(plan(Width).range.lo, 1);
  EXPECT_EQ(plan(Doc).role, IntegerRole::Id);
  // Pages[b, 0] indexes K's batch axis, of size B = 8.
  EXPECT_EQ(plan(Pages).role, IntegerRole::Subscript);
  EXPECT_EQ(plan(Pages).range.lo, 0);
  EXPECT_EQ(plan(Pages).range.hi, 7);
  // Compared with a param only: a few small values, as before.
  EXPECT_EQ(plan(Tag).role, IntegerRole::Other);
}

TEST_F(IntegerInputsTest, DataMatchesThePlan) {
  ASSERT_TRUE(module);
  std::vector<HostTensor> inputs = makeRandomInputs(kernel(), dims, 7);
  ASSERT_EQ(inputs.size(), 8u);

  // Lengths: spread over the key axis, with a length of 0 (its rows are
  // fully masked) and one of N (fully kept).
  std::set<int64_t> lengths;
  for (int64_t b = 0; b < 8; ++b)
    lengths.insert(static_cast<int64_t>(inputs[Len].getAsDouble(b)));
  EXPECT_TRUE(lengths.count(0));
  EXPECT_TRUE(lengths.count(65));
  EXPECT_GE(lengths.size(), 4u) << "lengths barely spread";
  for (int64_t length : lengths) {
    EXPECT_GE(length, 0);
    EXPECT_LE(length, 65);
  }

  for (int64_t h = 0; h < 4; ++h)
    EXPECT_NE(inputs[Width].getAsDouble(h), 0.0);
  for (int64_t e = 0; e < inputs[Pages].getNumElements(); ++e) {
    EXPECT_GE(inputs[Pages].getAsDouble(e), 0.0);
    EXPECT_LE(inputs[Pages].getAsDouble(e), 7.0);
  }

  // Document ids: along each row, runs of increasing ids from 0, at least
  // two documents, and rows whose documents have different lengths.
  std::set<std::vector<int64_t>> allRunLengths;
  for (int64_t b = 0; b < 8; ++b) {
    std::vector<int64_t> runLengths;
    int64_t previous = -1;
    for (int64_t n = 0; n < 65; ++n) {
      int64_t id = static_cast<int64_t>(inputs[Doc].getAsDouble(b * 65 + n));
      if (id == previous) {
        ++runLengths.back();
        continue;
      }
      EXPECT_EQ(id, previous + 1) << "ids do not increase by one";
      runLengths.push_back(1);
      previous = id;
    }
    EXPECT_GE(runLengths.size(), 2u);
    EXPECT_LE(runLengths.size(), 5u);
    allRunLengths.insert(runLengths);
  }
  EXPECT_GE(allRunLengths.size(), 2u);
}

TEST_F(IntegerInputsTest, TheLaunchCheckAcceptsTheData) {
  ASSERT_TRUE(module);
  Launch launch;
  launch.dims = dims;
  launch.params = {1.0};
  launch.inputs = makeRandomInputs(kernel(), dims, 3);
  llvm::Error error = checkLaunch(kernel(), launch);
  EXPECT_FALSE(!!error) << llvm::toString(std::move(error));
}

} // namespace
