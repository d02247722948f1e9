//===- GradientTest.cpp - Reverse mode against finite differences ---------===//
//
// evaluateGradients is the oracle for training, so it is checked against
// the one thing that needs no derivation: central differences of the
// forward evaluator, entry by entry, for every float input. First on every
// spec in examples/ through the front end, then on small cascades that cover
// each reduction kind, each normalizer, fully masked rows, gathers, a bias
// table and every float opcode a body can hold.
//
//===----------------------------------------------------------------------===//

#include "ReferenceTestSupport.h"

#include "attn/Frontend/Frontend.h"
#include "attn/Reference/Gradient.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace attn;
using namespace attn::ref;
using namespace attn::ref::test;
using ::testing::HasSubstr;

namespace {

/// L = sum over outputs of <adjoint, output>, the scalar the gradients are
/// of. Infinite entries (the LSE or max of a fully masked row) are left
/// out: they stay infinite under any finite change of the inputs, so they
/// contribute no gradient, and inf - inf would make every difference NaN.
double objective(const std::vector<HostTensor> &outputs,
                 const std::vector<HostTensor> &adjoints) {
  double sum = 0.0;
  for (size_t o = 0; o < outputs.size(); ++o)
    for (int64_t i = 0; i < outputs[o].getNumElements(); ++i) {
      double value = outputs[o].getAsDouble(i);
      if (!std::isinf(value))
        sum += adjoints[o].getAsDouble(i) * value;
    }
  return sum;
}

/// The largest |v|, or NaN if any v is.
double maxAbs(const std::vector<double> &values) {
  double max = 0.0;
  for (double v : values) {
    if (std::isnan(v))
      return v;
    max = std::max(max, std::fabs(v));
  }
  return max;
}

bool isIntegerInput(mlir::attn::KernelOp kernel, unsigned i) {
  auto type =
      llvm::cast<mlir::RankedTensorType>(kernel.getInputArg(i).getType());
  return type.getElementType().isIntOrIndex();
}

/// A kernel and what it runs on. Float inputs are F64 so that a finite
/// difference perturbs exactly the value the evaluator reads.
struct Problem {
  mlir::attn::KernelOp kernel;
  std::vector<int64_t> dims;
  std::vector<HostTensor> inputs;
  std::vector<double> params;

  KernelArguments arguments() const {
    KernelArguments args{dims, {}, params};
    for (const HostTensor &input : inputs)
      args.inputs.push_back(&input);
    return args;
  }
};

/// N(0, 1) samples in F64, moved at least `margin` away from 0 so that no
/// entry sits within a finite-difference step of the kink of abs or relu
/// at 0 (a kink elsewhere needs an exact tie, which N(0, 1) data never has).
HostTensor randomF64(std::vector<int64_t> shape, unsigned seed,
                     double margin = 0.05) {
  HostTensor tensor = randomTensor(DType::F64, std::move(shape), seed);
  for (int64_t i = 0; i < tensor.getNumElements(); ++i) {
    double x = tensor.getAsDouble(i);
    if (std::fabs(x) < margin)
      tensor.setFromDouble(i, x < 0 ? -margin : margin);
  }
  return tensor;
}

class GradientTest : public ReferenceTest {
protected:
  /// Evaluates, or fails the test and gives nullopt.
  std::optional<std::vector<HostTensor>> forward(const Problem &problem) {
    mlir::FailureOr<std::vector<HostTensor>> outputs =
        evaluate(problem.kernel, problem.arguments());
    if (mlir::failed(outputs)) {
      ADD_FAILURE() << "evaluation failed:\n" << diagnostics;
      return std::nullopt;
    }
    return std::move(*outputs);
  }

  /// Runs evaluateGradients on `problem` with random adjoints (all zero for
  /// the outputs `silent` names) and compares every entry of every float
  /// input's gradient with a central difference of L. Gives the gradients
  /// for further checks, or nullopt after a test failure.
  std::optional<Gradients> checkGradients(Problem &problem, unsigned seed,
                                          std::vector<unsigned> silent = {}) {
    std::optional<std::vector<HostTensor>> outputs = forward(problem);
    if (!outputs)
      return std::nullopt;
    std::vector<HostTensor> adjoints;
    std::vector<const HostTensor *> adjointPointers;
    for (auto [o, output] : llvm::enumerate(*outputs)) {
      adjoints.push_back(randomF64(output.getShape(), seed * 97 + o, 0.0));
      if (llvm::is_contained(silent, o))
        for (int64_t i = 0; i < output.getNumElements(); ++i)
          adjoints.back().setFromDouble(i, 0.0);
    }
    for (const HostTensor &adjoint : adjoints)
      adjointPointers.push_back(&adjoint);

    mlir::FailureOr<Gradients> gradients =
        evaluateGradients(problem.kernel, problem.arguments(), adjointPointers);
    if (mlir::failed(gradients)) {
      ADD_FAILURE() << "reverse mode failed:\n" << diagnostics;
      return std::nullopt;
    }
    // The outputs reverse mode returns are the forward pass's.
    EXPECT_EQ(gradients->outputs.size(), outputs->size());
    for (size_t o = 0; o < outputs->size() && o < gradients->outputs.size();
         ++o) {
      const HostTensor &a = gradients->outputs[o], &b = (*outputs)[o];
      EXPECT_EQ(a.getShape(), b.getShape());
      if (a.getShape() != b.getShape())
        continue;
      for (int64_t e = 0; e < b.getNumElements(); ++e)
        if (a.getAsDouble(e) != b.getAsDouble(e)) {
          ADD_FAILURE() << "output " << o << " entry " << e << " is "
                        << a.getAsDouble(e) << ", evaluate gives "
                        << b.getAsDouble(e);
          break;
        }
    }
    if (gradients->inputs.size() != problem.inputs.size() ||
        gradients->scales.size() != problem.inputs.size()) {
      ADD_FAILURE() << "expected " << problem.inputs.size()
                    << " gradients and scales, got " << gradients->inputs.size()
                    << " and " << gradients->scales.size();
      return std::nullopt;
    }

    double objectiveScale =
        std::max(1.0, std::fabs(objective(*outputs, adjoints)));
    for (unsigned i = 0; i < problem.inputs.size(); ++i) {
      std::string name =
          llvm::cast<mlir::StringAttr>(problem.kernel.getInputNames()[i])
              .getValue()
              .str();
      SCOPED_TRACE("input " + name);
      const std::optional<HostTensor> &gradient = gradients->inputs[i];
      if (isIntegerInput(problem.kernel, i)) {
        EXPECT_FALSE(gradient.has_value()) << "an integer input got a "
                                              "gradient";
        continue;
      }
      if (!gradient) {
        ADD_FAILURE() << "a float input got no gradient";
        continue;
      }
      HostTensor &input = problem.inputs[i];
      EXPECT_EQ(gradient->getDType(), DType::F64);
      if (gradient->getShape() != input.getShape()) {
        ADD_FAILURE() << "gradient has the wrong shape";
        continue;
      }
      // The scale of the terms: nonnegative, and 0 only where no term came.
      const std::optional<HostTensor> &termsScale = gradients->scales[i];
      if (!termsScale || termsScale->getShape() != input.getShape()) {
        ADD_FAILURE() << "a float input got no scale of its shape";
        continue;
      }
      for (int64_t e = 0; e < input.getNumElements(); ++e)
        if (!(termsScale->getAsDouble(e) >= 0.0) ||
            (termsScale->getAsDouble(e) == 0.0 &&
             gradient->getAsDouble(e) != 0.0)) {
          ADD_FAILURE() << "entry " << e << ": gradient "
                        << gradient->getAsDouble(e) << ", scale "
                        << termsScale->getAsDouble(e);
          break;
        }
      std::vector<double> analytic, numeric;
      for (int64_t e = 0; e < input.getNumElements(); ++e) {
        double x = input.getAsDouble(e);
        double step = 1e-6 * std::max(1.0, std::fabs(x));
        double up = x + step, down = x - step;
        input.setFromDouble(e, up);
        std::optional<std::vector<HostTensor>> plus = forward(problem);
        input.setFromDouble(e, down);
        std::optional<std::vector<HostTensor>> minus = forward(problem);
        input.setFromDouble(e, x);
        if (!plus || !minus)
          return std::nullopt;
        numeric.push_back(
            (objective(*plus, adjoints) - objective(*minus, adjoints)) /
            (up - down));
        analytic.push_back(gradient->getAsDouble(e));
      }
      // Central differences in f64 are good to about 1e-9 of L here; the
      // tolerance is relative to the largest entry of this gradient.
      double scale = std::max(maxAbs(analytic), maxAbs(numeric));
      double tolerance = 1e-6 * scale + 1e-9 * objectiveScale;
      int reported = 0;
      EXPECT_TRUE(std::isfinite(scale)) << "a gradient or a difference is "
                                           "not finite";
      for (size_t e = 0; e < analytic.size(); ++e) {
        // Written so that NaN fails.
        if (!(std::fabs(analytic[e] - numeric[e]) <= tolerance) &&
            reported++ < 5)
          ADD_FAILURE() << "entry " << e << ": reverse mode " << analytic[e]
                        << ", finite differences " << numeric[e]
                        << " (tolerance " << tolerance << ")";
      }
    }
    return std::move(*gradients);
  }
};

//===----------------------------------------------------------------------===//
// Every example
//===----------------------------------------------------------------------===//

/// The stems of examples/*.attn, sorted, so that a new example is checked
/// without being listed here.
std::vector<std::string> listExamples() {
  std::vector<std::string> names;
  std::error_code error;
  for (llvm::sys::fs::directory_iterator it(ATTN_EXAMPLES_DIR, error), end;
       it != end && !error; it.increment(error))
    if (llvm::sys::path::extension(it->path()) == ".attn")
      names.push_back(llvm::sys::path::stem(it->path()).str());
  std::sort(names.begin(), names.end());
  return names;
}

/// Sizes small enough for one forward pass per input entry, with M != N and
/// neither a multiple of anything. Some examples need more: paged_kv spans
/// two 16-entry pages with fewer physical pages than batches x pages, so
/// pages are shared; block_sparse spans two 64-key blocks; streaming_llm
/// fixes D = 128 and so gets one batch.
int64_t sizeOf(llvm::StringRef example, llvm::StringRef dim) {
  static const std::map<std::string, std::map<std::string, int64_t>>
      kOverrides = {
          {"paged_kv", {{"N", 19}, {"P", 3}, {"NP", 2}}},
          {"block_sparse", {{"N", 70}, {"MB", 1}, {"NB", 2}, {"D", 3}}},
          {"streaming_llm", {{"B", 1}}},
      };
  static const std::map<std::string, int64_t> kDefaults = {
      {"B", 2}, {"H", 2}, {"G", 1}, {"M", 5}, {"N", 7}, {"D", 4}, {"E", 3}};
  auto overrides = kOverrides.find(example.str());
  if (overrides != kOverrides.end()) {
    auto it = overrides->second.find(dim.str());
    if (it != overrides->second.end())
      return it->second;
  }
  auto it = kDefaults.find(dim.str());
  return it == kDefaults.end() ? -1 : it->second;
}

/// Params chosen so that the masks cut inside the small sizes (a window of
/// 3, 2 sinks, a prefix of 2, pad and ignore ids that occur) and the float
/// params leave curvature to check (a softcap of 2, a sigmoid bias of 0.5).
std::optional<double> paramOverride(llvm::StringRef name) {
  static const std::map<std::string, double> kParams = {
      {"window", 3}, {"sinks", 2}, {"prefix", 2}, {"cap", 2.0},
      {"bias", 0.5}, {"pad", 0},   {"ignore", 0}};
  auto it = kParams.find(name.str());
  if (it == kParams.end())
    return std::nullopt;
  return it->second;
}

/// Valid data for the examples' integer inputs, chosen to make some rows
/// fully masked and some tensors read more than once. Entry `index` (row
/// major) of input `name` whose shape is `shape`; nullopt for an input with
/// no rule, which fails the test.
std::optional<int64_t> integerEntry(llvm::StringRef name,
                                    const std::vector<int64_t> &shape,
                                    const llvm::StringMap<int64_t> &dims,
                                    int64_t index) {
  int64_t last = shape.empty() ? 1 : shape.back();
  int64_t row = index / last, column = index % last;
  // Documents in runs of 3 keys, shifted per batch; with pad = 0 the keys
  // of document 0 are dropped, so a query in document 0 keeps nothing.
  if (name == "Doc")
    return (column + 2 * row) / 3;
  // Every other head streams.
  if (name == "Streaming")
    return index % 2;
  // A block map with both blocks of some (b, h) off: fully masked rows.
  if (name == "Blocks") {
    static const int kPattern[] = {1, 0, 0, 1, 1, 1, 0, 0};
    return kPattern[index % 8];
  }
  // Query label 3 occurs on no key, and key label 0 is ignored: both give
  // fully masked rows.
  if (name == "QLabel")
    return (row + column) % 4;
  if (name == "KLabel")
    return (row + column) % 3;
  // Fewer physical pages than logical ones: batches share page 0, so its
  // gradient gathers from both.
  if (name == "Pages")
    return index % dims.lookup("P");
  return std::nullopt;
}

class ExampleGradientTest : public GradientTest,
                            public ::testing::WithParamInterface<std::string> {
protected:
  /// The example through the front end, with its arguments; null kernel
  /// after a test failure.
  Problem load(llvm::StringRef example) {
    Problem problem;
    llvm::SmallString<256> path(ATTN_EXAMPLES_DIR);
    llvm::sys::path::append(path, example + ".attn");
    auto buffer = llvm::MemoryBuffer::getFile(path);
    if (!buffer) {
      ADD_FAILURE() << "cannot read " << path.str().str();
      return problem;
    }
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
    auto compiled = dsl::compileSpec(sourceMgr, context);
    if (mlir::failed(compiled)) {
      ADD_FAILURE() << "the example does not compile";
      return problem;
    }
    module = std::move(*compiled);
    mlir::attn::KernelOp kernel =
        *module->getOps<mlir::attn::KernelOp>().begin();

    llvm::StringMap<int64_t> dims;
    for (auto [i, attr] : llvm::enumerate(kernel.getDimNames())) {
      llvm::StringRef dim = llvm::cast<mlir::StringAttr>(attr).getValue();
      int64_t fixed = kernel.getDimSizes()[i];
      int64_t size =
          mlir::ShapedType::isDynamic(fixed) ? sizeOf(example, dim) : fixed;
      if (size < 0) {
        ADD_FAILURE() << "no size for dim " << dim.str();
        return problem;
      }
      dims[dim] = size;
      problem.dims.push_back(size);
    }
    for (auto [i, attr] : llvm::enumerate(kernel.getParamNames())) {
      llvm::StringRef name = llvm::cast<mlir::StringAttr>(attr).getValue();
      std::optional<double> value = paramOverride(name);
      mlir::Attribute given = kernel.getParamDefaults()[i];
      if (!value) {
        if (auto f = llvm::dyn_cast<mlir::FloatAttr>(given))
          value = f.getValueAsDouble();
        else if (auto n = llvm::dyn_cast<mlir::IntegerAttr>(given))
          value = static_cast<double>(n.getInt());
      }
      if (!value) {
        ADD_FAILURE() << "no value for param " << name.str();
        return problem;
      }
      problem.params.push_back(*value);
    }
    for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
      llvm::StringRef name =
          llvm::cast<mlir::StringAttr>(kernel.getInputNames()[i]).getValue();
      std::vector<int64_t> shape;
      for (mlir::Attribute axis : kernel.getShapeOf(i)) {
        if (auto dim = llvm::dyn_cast<mlir::StringAttr>(axis))
          shape.push_back(dims.lookup(dim.getValue()));
        else
          shape.push_back(llvm::cast<mlir::IntegerAttr>(axis).getInt());
      }
      if (!isIntegerInput(kernel, i)) {
        problem.inputs.push_back(randomF64(shape, 1000 + i));
        continue;
      }
      HostTensor tensor(DType::I64, shape);
      for (int64_t e = 0; e < tensor.getNumElements(); ++e) {
        std::optional<int64_t> value = integerEntry(name, shape, dims, e);
        if (!value) {
          ADD_FAILURE() << "no data for integer input " << name.str()
                        << ": add a rule to integerEntry";
          return problem;
        }
        tensor.setFromDouble(e, static_cast<double>(*value));
      }
      problem.inputs.push_back(std::move(tensor));
    }
    problem.kernel = kernel;
    return problem;
  }
};

TEST(GradientExamples, EveryExampleIsFound) {
  EXPECT_GE(listExamples().size(), 21u) << "in " << ATTN_EXAMPLES_DIR;
}

TEST_P(ExampleGradientTest, MatchesFiniteDifferences) {
  Problem problem = load(GetParam());
  ASSERT_TRUE(problem.kernel);
  std::optional<Gradients> gradients = checkGradients(problem, 7);
  ASSERT_TRUE(gradients);
  // Q (input 0) always influences the output.
  ASSERT_TRUE(gradients->inputs[0]);
  std::vector<double> q;
  for (int64_t e = 0; e < gradients->inputs[0]->getNumElements(); ++e)
    q.push_back(gradients->inputs[0]->getAsDouble(e));
  EXPECT_GT(maxAbs(q), 0.0);
}

/// Checks the adjoint kernel of `forwardKernel` (a cascade, or the same
/// kernel raised), interpreted by the evaluator, against reverse mode on the
/// cascade of `problem`.
void expectAdjointMatchesReverseMode(const Problem &problem,
                                     mlir::attn::KernelOp forwardKernel,
                                     std::vector<HostTensor> &adjoints,
                                     const std::string &diagnostics) {
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> adjointModule =
      mlir::attn::buildGradientModule(forwardKernel);
  ASSERT_TRUE(mlir::succeeded(adjointModule)) << diagnostics;
  mlir::attn::KernelOp adjoint =
      *(*adjointModule)->getOps<mlir::attn::KernelOp>().begin();
  std::vector<const HostTensor *> adjointPointers;
  for (const HostTensor &a : adjoints)
    adjointPointers.push_back(&a);
  mlir::FailureOr<Gradients> expected =
      evaluateGradients(problem.kernel, problem.arguments(), adjointPointers);
  ASSERT_TRUE(mlir::succeeded(expected)) << diagnostics;

  KernelArguments args = problem.arguments();
  // Every output of the examples is a float: one adjoint input each.
  for (const HostTensor &a : adjoints)
    args.inputs.push_back(&a);
  mlir::FailureOr<std::vector<HostTensor>> gradients = evaluate(adjoint, args);
  ASSERT_TRUE(mlir::succeeded(gradients)) << diagnostics;
  unsigned next = 0;
  for (unsigned i = 0; i < problem.inputs.size(); ++i) {
    if (isIntegerInput(problem.kernel, i))
      continue;
    SCOPED_TRACE("gradient of input " + std::to_string(i));
    ASSERT_LT(next, gradients->size());
    const HostTensor &got = (*gradients)[next++];
    const HostTensor &want = *expected->inputs[i];
    ASSERT_EQ(got.getShape(), want.getShape());
    std::vector<double> difference, reference;
    for (int64_t e = 0; e < want.getNumElements(); ++e) {
      difference.push_back(got.getAsDouble(e) - want.getAsDouble(e));
      reference.push_back(want.getAsDouble(e));
    }
    double tolerance = 1e-9 * std::max(1.0, maxAbs(reference));
    EXPECT_LE(maxAbs(difference), tolerance);
  }
  EXPECT_EQ(next, gradients->size());
}

/// Random adjoints for the outputs of `problem`.
std::vector<HostTensor> randomAdjoints(const std::vector<HostTensor> &outputs) {
  std::vector<HostTensor> adjoints;
  for (auto [o, output] : llvm::enumerate(outputs))
    adjoints.push_back(randomF64(output.getShape(), 31 + o, 0.0));
  return adjoints;
}

/// attn-grad's adjoint kernel, interpreted by the evaluator, gives what
/// reverse mode gives: the pass's cascade is checked here at every example
/// independently of any backend.
TEST_P(ExampleGradientTest, AdjointKernelAgreesWithReverseMode) {
  Problem problem = load(GetParam());
  ASSERT_TRUE(problem.kernel);
  std::optional<std::vector<HostTensor>> outputs = forward(problem);
  ASSERT_TRUE(outputs);
  std::vector<HostTensor> adjoints = randomAdjoints(*outputs);
  expectAdjointMatchesReverseMode(problem, problem.kernel, adjoints,
                                  diagnostics);
}

/// The same after attn-raise and attn-analyze-mask: every raised
/// attn.attention becomes an attn.attention_backward (learnable ALiBi slopes
/// and softplus included).
TEST_P(ExampleGradientTest, RaisedAdjointKernelAgreesWithReverseMode) {
  Problem problem = load(GetParam());
  ASSERT_TRUE(problem.kernel);
  std::optional<std::vector<HostTensor>> outputs = forward(problem);
  ASSERT_TRUE(outputs);
  std::vector<HostTensor> adjoints = randomAdjoints(*outputs);
  mlir::OwningOpRef<mlir::ModuleOp> raised = module->clone();
  mlir::PassManager pm(&context);
  mlir::attn::buildAttentionRecognitionPipeline(pm);
  ASSERT_TRUE(mlir::succeeded(pm.run(*raised))) << diagnostics;
  mlir::attn::KernelOp kernel =
      *raised->getOps<mlir::attn::KernelOp>().begin();
  bool hasAttention = false;
  kernel.walk([&](mlir::attn::AttentionOp) { hasAttention = true; });
  expectAdjointMatchesReverseMode(problem, kernel, adjoints, diagnostics);
  if (hasAttention) {
    mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> adjointModule =
        mlir::attn::buildGradientModule(kernel);
    ASSERT_TRUE(mlir::succeeded(adjointModule));
    bool fused = false;
    (*adjointModule)->walk(
        [&](mlir::attn::AttentionBackwardOp) { fused = true; });
    EXPECT_TRUE(fused) << "a raised attention has a fused backward";
  }
}

INSTANTIATE_TEST_SUITE_P(Gradient, ExampleGradientTest,
                         ::testing::ValuesIn(listExamples()),
                         [](const auto &info) { return info.param; });

//===----------------------------------------------------------------------===//
// Small cascades
//===----------------------------------------------------------------------===//


TEST_F(GradientTest, EveryReductionKindMatchesFiniteDifferences) {
  const int64_t M = 5, N = 4;
  Problem problem{parse(kReductions), {M, N}, {}, {}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({M, N}, 3));
  // Large terms check that the logsumexp weights are taken stably.
  problem.inputs[0].setFromDouble(linearIndex(problem.inputs[0], {4, 0}),
                                  800.0);
  problem.inputs[0].setFromDouble(linearIndex(problem.inputs[0], {4, 1}),
                                  799.5);
  std::optional<Gradients> gradients = checkGradients(problem, 1);
  ASSERT_TRUE(gradients);
  const HostTensor &dx = *gradients->inputs[0];
  // Row 0 reduces over nothing (LSE = -inf, max = -inf, min = +inf): no
  // gradient, and no NaN. Entries n >= m are masked everywhere.
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = m; n < N; ++n)
      EXPECT_EQ(at(dx, {m, n}), 0.0) << m << ", " << n;
}

TEST_F(GradientTest, MaxAndMinSendTheAdjointToTheFirstExtremeTerm) {
  const int64_t M = 5, N = 4;
  mlir::attn::KernelOp kernel = parse(kReductions);
  ASSERT_TRUE(kernel);
  HostTensor x(DType::F64, {M, N});
  // Row 4 keeps all four terms: maxima tie at n = 1, 3 and minima at 0, 2.
  const double row[N] = {-3.0, 1.0, -3.0, 1.0};
  for (int64_t n = 0; n < N; ++n)
    x.setFromDouble(linearIndex(x, {4, n}), row[n]);
  // Row 3 (terms n < 3) all equal: every term ties.
  for (int64_t n = 0; n < N; ++n)
    x.setFromDouble(linearIndex(x, {3, n}), 0.5);
  HostTensor ones(DType::F64, {M});
  for (int64_t m = 0; m < M; ++m)
    ones.setFromDouble(m, 1.0);
  KernelArguments args{{M, N}, {&x}, {}};

  // Max alone, then min alone.
  for (int which : {1, 2}) {
    std::vector<const HostTensor *> adjoints(5, nullptr);
    adjoints[which] = &ones;
    mlir::FailureOr<Gradients> gradients =
        evaluateGradients(kernel, args, adjoints);
    ASSERT_TRUE(mlir::succeeded(gradients)) << diagnostics;
    const HostTensor &dx = *gradients->inputs[0];
    int64_t first4 = which == 1 ? 1 : 0;
    for (int64_t n = 0; n < N; ++n) {
      EXPECT_EQ(at(dx, {4, n}), n == first4 ? 1.0 : 0.0) << "row 4, " << n;
      EXPECT_EQ(at(dx, {3, n}), n == 0 ? 1.0 : 0.0) << "row 3, " << n;
    }
    // Row 0 has no term; row 1 one term, which gets it all.
    for (int64_t n = 0; n < N; ++n) {
      EXPECT_EQ(at(dx, {0, n}), 0.0);
      EXPECT_EQ(at(dx, {1, n}), n == 0 ? 1.0 : 0.0);
    }
  }

  // Mean: 1 / (number of kept terms), so row m gives 1/m to each of its m
  // terms, and the empty row 0 nothing.
  std::vector<const HostTensor *> adjoints(5, nullptr);
  adjoints[3] = &ones;
  mlir::FailureOr<Gradients> gradients =
      evaluateGradients(kernel, args, adjoints);
  ASSERT_TRUE(mlir::succeeded(gradients)) << diagnostics;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      EXPECT_EQ(at(*gradients->inputs[0], {m, n}),
                n < m ? 1.0 / static_cast<double>(m) : 0.0);
}

/// Softmax along n with and without a sink logit, and along m (strided
/// rows), over X kept where n < m: row 0 is fully masked. The kept tensor is
/// an output too, whose dropped entries must not pass their adjoint on.
const char *kSoftmaxes = R"mlir(
attn.kernel @softmaxes attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "Sk"], param_names = [], param_defaults = [],
    output_names = ["P", "PS", "PT", "Kept"], output_types = [f32, f32, f32, f32],
    shapes = [["M", "N"], ["M"], ["M", "N"], ["M", "N"], ["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %Sk: tensor<?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi slt, %n, %m : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(1) : tensor<?x?xf32>
  %PS = attn.softmax %kept dimension(1) sink(%Sk : tensor<?xf32>) : tensor<?x?xf32>
  %PT = attn.softmax %kept dimension(0) : tensor<?x?xf32>
  attn.return %P, %PS, %PT, %kept : tensor<?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>
}
)mlir";

TEST_F(GradientTest, SoftmaxWithAndWithoutSinkMatchesFiniteDifferences) {
  const int64_t M = 5, N = 4;
  Problem problem{parse(kSoftmaxes), {M, N}, {}, {}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({M, N}, 5));
  problem.inputs.push_back(randomF64({M}, 6));
  // A sink far above a row's logits takes almost all of it.
  problem.inputs[1].setFromDouble(2, 30.0);
  std::optional<Gradients> gradients = checkGradients(problem, 2);
  ASSERT_TRUE(gradients);
  const HostTensor &dx = *gradients->inputs[0], &dsink = *gradients->inputs[1];
  // Dropped entries, the fully masked row 0 among them, get no gradient, and
  // neither does row 0's sink; every other row's sink does.
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = m; n < N; ++n)
      EXPECT_EQ(at(dx, {m, n}), 0.0) << m << ", " << n;
  EXPECT_EQ(at(dsink, {0}), 0.0);
  for (int64_t m = 1; m < M; ++m)
    EXPECT_NE(at(dsink, {m}), 0.0) << "row " << m;
}

TEST_F(GradientTest, SinkGradientIsMinusItsWeightTimesTheWeightedAdjoint) {
  // One row of two logits and a sink: dsink = -p_sink * sum_k p_k g_k.
  const int64_t M = 2, N = 3;
  mlir::attn::KernelOp kernel = parse(kSoftmaxes);
  ASSERT_TRUE(kernel);
  HostTensor x(DType::F64, {M, N}), sink(DType::F64, {M});
  x.setFromDouble(linearIndex(x, {1, 0}), 0.3);
  sink.setFromDouble(1, -0.4);
  HostTensor g(DType::F64, {M, N});
  g.setFromDouble(linearIndex(g, {1, 0}), 2.0);
  KernelArguments args{{M, N}, {&x, &sink}, {}};
  mlir::FailureOr<Gradients> gradients =
      evaluateGradients(kernel, args, {nullptr, &g, nullptr, nullptr});
  ASSERT_TRUE(mlir::succeeded(gradients)) << diagnostics;
  double denominator = std::exp(0.3) + std::exp(-0.4);
  double p = std::exp(0.3) / denominator, pSink = std::exp(-0.4) / denominator;
  EXPECT_NEAR(at(*gradients->inputs[1], {1}), -pSink * p * 2.0, 1e-15);
  EXPECT_NEAR(at(*gradients->inputs[0], {1, 0}), p * (2.0 - p * 2.0), 1e-15);
}

/// normalize along n with each weight map, over X kept where n < m (row 0
/// fully masked); identity over 1 + X^2, which is positive.
const char *kNormalizes = R"mlir(
attn.kernel @normalizes attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["NI", "NE", "NS", "NG"], output_types = [f32, f32, f32, f32],
    shapes = [["M", "N"], ["M", "N"], ["M", "N"], ["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi slt, %n, %m : index
    attn.yield %c : i1
  }
  %E = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    %xx = arith.mulf %x, %x : f32
    %one = arith.constant 1.0 : f32
    %e = arith.addf %xx, %one : f32
    attn.yield %e : f32
  }
  %NI = attn.normalize %E dimension(1) : tensor<?x?xf32>
  %NE = attn.normalize %kept dimension(1) map(<exp>) : tensor<?x?xf32>
  %NS = attn.normalize %kept dimension(1) map(<softplus>) : tensor<?x?xf32>
  %NG = attn.normalize %kept dimension(1) map(<sigmoid>) : tensor<?x?xf32>
  attn.return %NI, %NE, %NS, %NG : tensor<?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>
}
)mlir";

TEST_F(GradientTest, NormalizeWithEachMapMatchesFiniteDifferences) {
  const int64_t M = 5, N = 4;
  Problem problem{parse(kNormalizes), {M, N}, {}, {}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({M, N}, 8));
  // Row 3 lies where softplus and sigmoid have underflowed to e^x (below
  // -40), which the forward pass computes relative to the row's max.
  for (int64_t n = 0; n < N; ++n) {
    int64_t at = linearIndex(problem.inputs[0], {3, n});
    problem.inputs[0].setFromDouble(at,
                                    problem.inputs[0].getAsDouble(at) - 50.0);
  }
  std::optional<Gradients> gradients = checkGradients(problem, 3);
  ASSERT_TRUE(gradients);
  for (int64_t n = 0; n < N; ++n)
    EXPECT_EQ(at(*gradients->inputs[0], {0, n}), 0.0);
  // Each map on its own, so that one map's error cannot hide behind
  // another's larger gradient.
  for (unsigned only = 0; only < 4; ++only) {
    SCOPED_TRACE("output " + std::to_string(only));
    std::vector<unsigned> silent;
    for (unsigned o = 0; o < 4; ++o)
      if (o != only)
        silent.push_back(o);
    EXPECT_TRUE(checkGradients(problem, 10 + only, silent));
  }
}

/// Y[m] = sum[j] X[Idx[m, j], j]^2 * W[m, j]: a gather through an integer
/// table, with rows of X read several times and one never.
const char *kGather = R"mlir(
attn.kernel @gather attributes {
    dim_names = ["M", "J", "R"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "Idx", "W"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["R", "J"], ["M", "J"], ["M", "J"], ["M"]]} {
^bb0(%M: index, %J: index, %R: index, %X: tensor<?x?xf32>, %Idx: tensor<?x?xi32>, %W: tensor<?x?xf32>):
  %Y = attn.einsum <sum> ["m"] reduce ["j"] extents(%M, %J) : tensor<?xf32> {
  ^bb0(%m: index, %j: index):
    %i = attn.read %Idx[%m, %j] : tensor<?x?xi32>
    %r = arith.index_cast %i : i32 to index
    %x = attn.read %X[%r, %j] : tensor<?x?xf32>
    %w = attn.read %W[%m, %j] : tensor<?x?xf32>
    %xx = arith.mulf %x, %x : f32
    %y = arith.mulf %xx, %w : f32
    attn.yield %y : f32
  }
  attn.return %Y : tensor<?xf32>
}
)mlir";

TEST_F(GradientTest, GatherScattersIntoTheEntryReadAndIntegersGetNone) {
  const int64_t M = 5, J = 3, R = 4;
  Problem problem{parse(kGather), {M, J, R}, {}, {}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({R, J}, 9));
  HostTensor idx(DType::I32, {M, J});
  // Rows 0..2 only, each several times; row 3 is never read.
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < J; ++j)
      idx.setFromDouble(linearIndex(idx, {m, j}), (m + 2 * j) % 3);
  problem.inputs.push_back(std::move(idx));
  problem.inputs.push_back(randomF64({M, J}, 10));
  std::optional<Gradients> gradients = checkGradients(problem, 4);
  ASSERT_TRUE(gradients);
  EXPECT_FALSE(gradients->inputs[1].has_value());
  for (int64_t j = 0; j < J; ++j)
    EXPECT_EQ(at(*gradients->inputs[0], {3, j}), 0.0);
  // X[r, j] collects 2 X[r, j] W[m, j] g[m] from every m that reads it:
  // checked by the finite differences above, and not zero.
  EXPECT_NE(at(*gradients->inputs[0], {0, 0}), 0.0);
}

/// Attention with a relative-position bias table read at n - m + M - 1,
/// kept where n <= m + 1, so that the table entries for n - m > 1 are read
/// only at dropped points.
const char *kBias = R"mlir(
attn.kernel @bias attributes {
    dim_names = ["M", "N", "D", "T"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V", "Bias"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["M", "D"], ["N", "D"], ["N", "D"], ["T"], ["M", "D"]]} {
^bb0(%M: index, %N: index, %D: index, %T: index, %Q: tensor<?x?xf32>, %K: tensor<?x?xf32>, %V: tensor<?x?xf32>, %Bias: tensor<?xf32>):
  %dot = attn.einsum <sum> ["m", "n"] reduce ["d"] extents(%M, %N, %D) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index, %d: index):
    %q = attn.read %Q[%m, %d] : tensor<?x?xf32>
    %k = attn.read %K[%n, %d] : tensor<?x?xf32>
    %p = arith.mulf %q, %k : f32
    attn.yield %p : f32
  }
  %S = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %s = attn.read %dot[%m, %n] : tensor<?x?xf32>
    %c1 = arith.constant 1 : index
    %o = arith.subi %n, %m : index
    %i = arith.addi %o, %M : index
    %j = arith.subi %i, %c1 : index
    %b = attn.read %Bias[%j] : tensor<?xf32>
    %t = arith.addf %s, %b : f32
    attn.yield %t : f32
  }
  %kept = attn.keep %S ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c1 = arith.constant 1 : index
    %l = arith.addi %m, %c1 : index
    %c = arith.cmpi sle, %n, %l : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(1) : tensor<?x?xf32>
  %O = attn.einsum <sum> ["m", "e"] reduce ["n"] extents(%M, %D, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %e: index, %n: index):
    %p = attn.read %P[%m, %n] : tensor<?x?xf32>
    %v = attn.read %V[%n, %e] : tensor<?x?xf32>
    %pv = arith.mulf %p, %v : f32
    attn.yield %pv : f32
  }
  attn.return %O : tensor<?x?xf32>
}
)mlir";

TEST_F(GradientTest, BiasTableGetsAGradient) {
  const int64_t M = 5, N = 7, D = 3, T = M + N - 1;
  Problem problem{parse(kBias), {M, N, D, T}, {}, {}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({M, D}, 11));
  problem.inputs.push_back(randomF64({N, D}, 12));
  problem.inputs.push_back(randomF64({N, D}, 13));
  problem.inputs.push_back(randomF64({T}, 14));
  std::optional<Gradients> gradients = checkGradients(problem, 5);
  ASSERT_TRUE(gradients);
  const HostTensor &dbias = *gradients->inputs[3];
  // Offsets n - m from -(M - 1) to 1 are kept somewhere; larger ones never.
  for (int64_t t = 0; t < T; ++t) {
    int64_t offset = t - (M - 1);
    if (offset <= 1)
      EXPECT_NE(at(dbias, {t}), 0.0) << "offset " << offset;
    else
      EXPECT_EQ(at(dbias, {t}), 0.0) << "offset " << offset;
  }
}

/// A bias added twice to whole softmax rows (its gradient cancels: the
/// softmax's adjoint sums to 0 over a row), a softmax with a sink straight
/// on the input X, and a keep of X returned as it is.
const char *kCancellingBias = R"mlir(
attn.kernel @cancelling_bias attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "Bias", "Sk"], param_names = [], param_defaults = [],
    output_names = ["P", "PS", "Kept"], output_types = [f32, f32, f32],
    shapes = [["M", "N"], ["M"], ["M"], ["M", "N"], ["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %Bias: tensor<?xf32>, %Sk: tensor<?xf32>):
  %S = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    %b1 = attn.read %Bias[%m] : tensor<?xf32>
    %b2 = attn.read %Bias[%m] : tensor<?xf32>
    %xb = arith.addf %x, %b1 : f32
    %s = arith.addf %xb, %b2 : f32
    attn.yield %s : f32
  }
  %P = attn.softmax %S dimension(1) : tensor<?x?xf32>
  %PS = attn.softmax %X dimension(1) sink(%Sk : tensor<?xf32>) : tensor<?x?xf32>
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi slt, %n, %m : index
    attn.yield %c : i1
  }
  attn.return %P, %PS, %kept : tensor<?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>
}
)mlir";

TEST_F(GradientTest, ScalesAreTheRootSumOfSquaresOfTheTerms) {
  const int64_t M = 4, N = 6;
  mlir::attn::KernelOp kernel = parse(kCancellingBias);
  ASSERT_TRUE(kernel);
  HostTensor x = randomF64({M, N}, 21), bias = randomF64({M}, 22),
             sink = randomF64({M}, 23);
  KernelArguments args{{M, N}, {&x, &bias, &sink}, {}};
  std::vector<HostTensor> adjoints = {randomF64({M, N}, 24, 0.0),
                                      randomF64({M, N}, 25, 0.0),
                                      randomF64({M, N}, 26, 0.0)};
  // Reverse mode with the adjoint of one output (or of all three).
  auto gradientsOf = [&](std::optional<unsigned> only) {
    std::vector<const HostTensor *> pointers;
    for (unsigned o = 0; o < adjoints.size(); ++o)
      pointers.push_back(!only || *only == o ? &adjoints[o] : nullptr);
    return evaluateGradients(kernel, args, pointers);
  };

  // P alone: X[m, n] gets one term, dS[m, n], so its scale is |dX|. Bias[m]
  // gets 2 dS[m, n] from each n (its two reads of one entry are one term):
  // the terms sum to 0 up to rounding, their scale is 2 sqrt(sum_n dS^2).
  mlir::FailureOr<Gradients> fromP = gradientsOf(0);
  ASSERT_TRUE(mlir::succeeded(fromP)) << diagnostics;
  ASSERT_EQ(fromP->scales.size(), 3u);
  ASSERT_TRUE(fromP->scales[0] && fromP->scales[1] && fromP->scales[2]);
  EXPECT_EQ(fromP->scales[0]->getShape(), x.getShape());
  for (int64_t m = 0; m < M; ++m) {
    double squares = 0;
    for (int64_t n = 0; n < N; ++n) {
      double ds = at(*fromP->inputs[0], {m, n});
      EXPECT_DOUBLE_EQ(at(*fromP->scales[0], {m, n}), std::fabs(ds));
      squares += ds * ds;
    }
    double scale = at(*fromP->scales[1], {m});
    EXPECT_NEAR(scale, 2 * std::sqrt(squares), 1e-14 * scale) << "row " << m;
    EXPECT_GT(scale, 1e-3) << "row " << m;
    EXPECT_LT(std::fabs(at(*fromP->inputs[1], {m})), 1e-14 * scale)
        << "row " << m;
    EXPECT_EQ(at(*fromP->scales[2], {m}), 0.0);
  }

  // PS alone: the softmax adds one term to each entry of X and of Sk.
  mlir::FailureOr<Gradients> fromPS = gradientsOf(1);
  ASSERT_TRUE(mlir::succeeded(fromPS)) << diagnostics;
  for (int64_t m = 0; m < M; ++m) {
    EXPECT_EQ(at(*fromPS->scales[1], {m}), 0.0);
    EXPECT_DOUBLE_EQ(at(*fromPS->scales[2], {m}),
                     std::fabs(at(*fromPS->inputs[2], {m})));
    for (int64_t n = 0; n < N; ++n)
      EXPECT_DOUBLE_EQ(at(*fromPS->scales[0], {m, n}),
                       std::fabs(at(*fromPS->inputs[0], {m, n})));
  }

  // Kept alone: the keep adds one term to each kept entry of X.
  mlir::FailureOr<Gradients> fromKept = gradientsOf(2);
  ASSERT_TRUE(mlir::succeeded(fromKept)) << diagnostics;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      EXPECT_EQ(at(*fromKept->scales[0], {m, n}),
                n < m ? std::fabs(at(adjoints[2], {m, n})) : 0.0);

  // All three: X's terms are the three above, each its own.
  mlir::FailureOr<Gradients> fromAll = gradientsOf(std::nullopt);
  ASSERT_TRUE(mlir::succeeded(fromAll)) << diagnostics;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double p = at(*fromP->scales[0], {m, n}),
             ps = at(*fromPS->scales[0], {m, n}),
             kept = at(*fromKept->scales[0], {m, n});
      EXPECT_NEAR(at(*fromAll->scales[0], {m, n}),
                  std::sqrt(p * p + ps * ps + kept * kept), 1e-14);
    }
}

/// Z[m] uses every float opcode a body can hold on X[m], Y[m].
const char *kOpcodes = R"mlir(
attn.kernel @opcodes attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X", "Y"], param_names = ["p"], param_defaults = [0.75 : f32],
    output_names = ["Z"], output_types = [f32],
    shapes = [["M"], ["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>, %Y: tensor<?xf32>, %p: f32):
  %Z = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %x = attn.read %X[%m] : tensor<?xf32>
    %y = attn.read %Y[%m] : tensor<?xf32>
    %one = arith.constant 1.0 : f32
    %xx = arith.mulf %x, %x : f32
    %a = arith.addf %xx, %one : f32
    %t1 = arith.divf %y, %a : f32
    %t2 = arith.subf %t1, %x : f32
    %t3 = arith.negf %t2 : f32
    %t4 = math.log %a : f32
    %t5 = math.log1p %a : f32
    %t6 = math.sqrt %a : f32
    %t7 = math.rsqrt %a : f32
    %t8 = math.tanh %x : f32
    %t9 = math.powf %a, %y : f32
    %t10 = arith.maximumf %x, %y : f32
    %t11 = arith.minimumf %x, %y : f32
    %t12 = math.absf %y : f32
    %c = arith.cmpf olt, %x, %y : f32
    %t13 = arith.select %c, %t4, %t8 : f32
    %t14 = math.exp2 %x : f32
    %c07 = arith.constant 0.7 : f32
    %t15 = arith.remf %y, %c07 : f32
    %t16 = math.floor %x : f32
    %t17 = math.ceil %y : f32
    %mi = arith.index_cast %m : index to i64
    %t18 = arith.sitofp %mi : i64 to f32
    %wide = arith.extf %x : f32 to f64
    %narrow = arith.truncf %wide : f64 to f32
    %t19 = math.exp %narrow : f32
    %t20 = arith.mulf %t19, %p : f32
    %s1 = arith.mulf %t3, %t5 : f32
    %s2 = arith.addf %s1, %t6 : f32
    %s3 = arith.mulf %s2, %t7 : f32
    %s4 = arith.addf %s3, %t9 : f32
    %s5 = arith.mulf %t10, %t11 : f32
    %s6 = arith.addf %s4, %s5 : f32
    %s7 = arith.mulf %t12, %t13 : f32
    %s8 = arith.addf %s6, %s7 : f32
    %s9 = arith.addf %s8, %t14 : f32
    %s10 = arith.mulf %s9, %t15 : f32
    %s11 = arith.addf %t16, %t17 : f32
    %s12 = arith.mulf %s11, %t18 : f32
    %s13 = arith.addf %s10, %s12 : f32
    %s14 = arith.addf %s13, %t20 : f32
    attn.yield %s14 : f32
  }
  attn.return %Z : tensor<?xf32>
}
)mlir";

TEST_F(GradientTest, EveryBodyOpcodeMatchesFiniteDifferences) {
  const int64_t M = 12;
  Problem problem{parse(kOpcodes), {M}, {}, {0.75}};
  ASSERT_TRUE(problem.kernel);
  problem.inputs.push_back(randomF64({M}, 15));
  problem.inputs.push_back(randomF64({M}, 16));
  EXPECT_TRUE(checkGradients(problem, 6));
}

TEST_F(GradientTest, RaisedKernelsAreRefused) {
  const char *text = R"mlir(
attn.kernel @raised attributes {
    dim_names = ["B", "H", "M", "N", "D"],
    dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xf32>, %K: tensor<?x?x?x?xf32>, %V: tensor<?x?x?x?xf32>):
  %scale = arith.constant 1.0 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  attn.return %O : tensor<?x?x?x?xf32>
}
)mlir";
  mlir::attn::KernelOp kernel = parse(text);
  ASSERT_TRUE(kernel);
  HostTensor q = randomF64({1, 1, 2, 2}, 1), k = randomF64({1, 1, 3, 2}, 2),
             v = randomF64({1, 1, 3, 2}, 3), o = randomF64({1, 1, 2, 2}, 4);
  KernelArguments args{{1, 1, 2, 3, 2}, {&q, &k, &v}, {}};
  EXPECT_TRUE(mlir::failed(evaluateGradients(kernel, args, {&o})));
  EXPECT_THAT(diagnostics, HasSubstr("reverse mode needs the cascade "
                                     "(before attn-raise)"));
}

TEST_F(GradientTest, AdjointsThatDoNotMatchTheOutputsAreReported) {
  const int64_t M = 3, N = 2;
  mlir::attn::KernelOp kernel = parse(kReductions);
  ASSERT_TRUE(kernel);
  HostTensor x = randomF64({M, N}, 1), wrong = randomF64({M + 1}, 2);
  KernelArguments args{{M, N}, {&x}, {}};
  EXPECT_TRUE(mlir::failed(evaluateGradients(kernel, args, {nullptr})));
  EXPECT_THAT(diagnostics, HasSubstr("5 outputs, but 1 output adjoints"));
  diagnostics.clear();
  EXPECT_TRUE(mlir::failed(evaluateGradients(
      kernel, args, {nullptr, &wrong, nullptr, nullptr, nullptr})));
  EXPECT_THAT(diagnostics, HasSubstr("the adjoint of output Max has shape "
                                     "[4], expected [3]"));
}

} // namespace
