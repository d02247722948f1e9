//===- ErrorTest.cpp - The evaluator's errors -----------------------------===//
//
// Bad launches and unsupported IR give diagnostics at the offending op and
// failure(), never a crash.
//
//===----------------------------------------------------------------------===//

#include "ReferenceTestSupport.h"

using namespace attn;
using namespace attn::ref;
using namespace attn::ref::test;
using ::testing::HasSubstr;

namespace {

class ErrorTest : public ReferenceTest {
protected:
  /// Evaluates and expects failure.
  void expectFailure(const std::string &text, const KernelArguments &args) {
    mlir::attn::KernelOp kernel = parse(text);
    ASSERT_TRUE(kernel);
    EXPECT_TRUE(mlir::failed(evaluate(kernel, args)));
  }
};

/// Y[m] = X[m + shift]: out of range when shift > 0.
const char *kShift = R"mlir(
attn.kernel @shift attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = ["shift"], param_defaults = [0 : i32],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>, %shift: i32):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %s = arith.index_cast %shift : i32 to index
    %i = arith.addi %m, %s : index
    %x = attn.read %X[%i] : tensor<?xf32>
    attn.yield %x : f32
  }
  attn.return %y : tensor<?xf32>
}
)mlir";

TEST_F(ErrorTest, SubscriptOutOfRangeNamesTensorAxisValueRangeAndPoint) {
  HostTensor x = randomTensor(DType::F32, {5}, 1);
  expectFailure(kShift, {{5}, {&x}, {2}});
  EXPECT_THAT(diagnostics, HasSubstr("input 'X'"));
  EXPECT_THAT(diagnostics,
              HasSubstr("subscript 5 on axis 0 is outside the valid range "
                        "[0, 5) at point (m=3)"));
  // Reported at the attn.read (line 12 of the text), with a note on the
  // einsum.
  EXPECT_THAT(diagnostics, HasSubstr(":12:"));
  EXPECT_THAT(diagnostics, HasSubstr("note: while evaluating this"));

  // A negative subscript is out of range too.
  diagnostics.clear();
  expectFailure(kShift, {{5}, {&x}, {-1}});
  EXPECT_THAT(diagnostics, HasSubstr("subscript -1 on axis 0"));
  EXPECT_THAT(diagnostics, HasSubstr("at point (m=0)"));

  // And in range it works.
  diagnostics.clear();
  std::vector<HostTensor> out = run(parse(kShift), {{5}, {&x}, {0}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].getAsDouble(4), x.getAsDouble(4));
}

TEST_F(ErrorTest, GatherOutOfRangeNamesTheGatheredTensor) {
  const char *text = R"mlir(
attn.kernel @gather attributes {
    dim_names = ["N", "P"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["Table", "Pages"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["P"], ["N"], ["N"]]} {
^bb0(%N: index, %P: index, %Table: tensor<?xf32>, %Pages: tensor<?xi32>):
  %y = attn.einsum <none> ["n"] extents(%N) : tensor<?xf32> {
  ^bb0(%n: index):
    %p32 = attn.read %Pages[%n] : tensor<?xi32>
    %p = arith.index_cast %p32 : i32 to index
    %x = attn.read %Table[%p] : tensor<?xf32>
    attn.yield %x : f32
  }
  attn.return %y : tensor<?xf32>
}
)mlir";
  HostTensor table = randomTensor(DType::F32, {4}, 1);
  HostTensor pages(DType::I32, {3});
  pages.setFromDouble(0, 1);
  pages.setFromDouble(1, 9);
  pages.setFromDouble(2, 0);
  expectFailure(text, {{3, 4}, {&table, &pages}, {}});
  EXPECT_THAT(diagnostics,
              HasSubstr("attn.read of input 'Table' out of range: subscript "
                        "9 on axis 0 is outside the valid range [0, 4) at "
                        "point (n=1)"));
}

TEST_F(ErrorTest, ReadOfAnIntermediateTensorOutOfRange) {
  const char *text = R"mlir(
attn.kernel @inner attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Z"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %x = attn.read %X[%m] : tensor<?xf32>
    attn.yield %x : f32
  } loc("Y"("spec.attn":3:5))
  %z = attn.einsum <sum> ["m"] reduce ["k"] extents(%M, %M) : tensor<?xf32> {
  ^bb0(%m: index, %k: index):
    %i = arith.addi %m, %k : index
    %x = attn.read %y[%i] : tensor<?xf32> loc("spec.attn":4:20)
    attn.yield %x : f32
  }
  attn.return %z : tensor<?xf32>
}
)mlir";
  HostTensor x = randomTensor(DType::F32, {3}, 1);
  expectFailure(text, {{3}, {&x}, {}});
  EXPECT_THAT(diagnostics, HasSubstr("spec.attn\":4:20"));
  EXPECT_THAT(diagnostics, HasSubstr("'Y'"));
  EXPECT_THAT(diagnostics, HasSubstr("at point (m=1, k=2)"));
}

TEST_F(ErrorTest, IntegerDivisionByZero) {
  for (const char *op : {"floordivsi", "divsi", "remsi"}) {
    std::string text = substitute(R"mlir(
attn.kernel @div attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = ["g"], param_defaults = [1 : i32],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>, %g: i32):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %gi = arith.index_cast %g : i32 to index
    %i = arith.{OP} %m, %gi : index
    %x = attn.read %X[%i] : tensor<?xf32>
    attn.yield %x : f32
  }
  attn.return %y : tensor<?xf32>
}
)mlir",
                                  "OP", op);
    SCOPED_TRACE(op);
    diagnostics.clear();
    HostTensor x = randomTensor(DType::F32, {4}, 1);
    expectFailure(text, {{4}, {&x}, {0}});
    EXPECT_THAT(diagnostics, HasSubstr("integer division by zero in 'arith." +
                                       std::string(op) + "'"));
    EXPECT_THAT(diagnostics, HasSubstr("at point (m=0)"));
  }
}

TEST_F(ErrorTest, DivisionByZeroInTopLevelExtent) {
  const char *text = R"mlir(
attn.kernel @top attributes {
    dim_names = ["M", "G"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = [], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"]]} {
^bb0(%M: index, %G: index):
  %e = arith.floordivsi %M, %G : index
  %y = attn.einsum <none> ["m"] extents(%e) : tensor<?xf32> {
  ^bb0(%m: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  attn.return %y : tensor<?xf32>
}
)mlir";
  expectFailure(text, {{4, 0}, {}, {}});
  EXPECT_THAT(diagnostics, HasSubstr("integer division by zero"));
  diagnostics.clear();
  std::vector<HostTensor> out = run(parse(text), {{4, 2}, {}, {}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].getShape(), std::vector<int64_t>{2});
  EXPECT_EQ(out[0].getAsDouble(1), 1.0);
}

TEST_F(ErrorTest, UnsupportedOp) {
  const char *text = R"mlir(
attn.kernel @sin attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %x = attn.read %X[%m] : tensor<?xf32>
    %s = math.sin %x : f32
    attn.yield %s : f32
  }
  attn.return %y : tensor<?xf32>
}
)mlir";
  HostTensor x = randomTensor(DType::F32, {4}, 1);
  expectFailure(text, {{4}, {&x}, {}});
  EXPECT_THAT(diagnostics,
              HasSubstr("reference evaluator does not support op 'math.sin'"));
}

TEST_F(ErrorTest, ArgumentsThatDoNotMatchTheSignature) {
  HostTensor x = randomTensor(DType::F32, {5}, 1);
  expectFailure(kShift, {{5}, {&x}, {}});
  EXPECT_THAT(diagnostics, HasSubstr("1 params, but got"));
  diagnostics.clear();
  HostTensor wrongRank = randomTensor(DType::F32, {5, 1}, 1);
  expectFailure(kShift, {{5}, {&wrongRank}, {0}});
  EXPECT_THAT(diagnostics, HasSubstr("input X has rank 2, expected 1"));
  diagnostics.clear();
  expectFailure(kShift, {{5}, {nullptr}, {0}});
  EXPECT_THAT(diagnostics, HasSubstr("input X is missing"));
}

} // namespace
