//===- ReferenceTestSupport.h - Helpers for the evaluator tests -*- C++ -*-===//
//
// Parsing kernels from text, random tensors, captured diagnostics, and the
// plain-loop attention the evaluator is compared with.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_TEST_UNIT_REFERENCE_REFERENCETESTSUPPORT_H
#define ATTN_TEST_UNIT_REFERENCE_REFERENCETESTSUPPORT_H

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace attn::ref::test {

/// Every reduction kind over X[m, n] kept where n < m (so row 0 is empty).
inline constexpr const char *kReductions = R"mlir(
attn.kernel @reductions attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Sum", "Max", "Min", "Mean", "LSE"], output_types = [f32, f32, f32, f32, f32],
    shapes = [["M", "N"], ["M"], ["M"], ["M"], ["M"], ["M"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi slt, %n, %m : index
    attn.yield %c : i1
  }
  %sum = attn.einsum <sum> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %max = attn.einsum <max> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %min = attn.einsum <min> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %mean = attn.einsum <mean> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %lse = attn.einsum <logsumexp> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  attn.return %sum, %max, %min, %mean, %lse : tensor<?xf32>, tensor<?xf32>, tensor<?xf32>, tensor<?xf32>, tensor<?xf32>
}
)mlir";

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// A tensor of N(0, 1) samples rounded to `type`.
inline HostTensor randomTensor(DType type, std::vector<int64_t> shape,
                               unsigned seed) {
  HostTensor tensor(type, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < tensor.getNumElements(); ++i)
    tensor.setFromDouble(i, normal(rng));
  return tensor;
}

/// Row-major linear index of `index` in `tensor`.
inline int64_t linearIndex(const HostTensor &tensor,
                           std::vector<int64_t> index) {
  int64_t linear = 0;
  for (size_t i = 0; i < index.size(); ++i)
    linear = linear * tensor.getShape()[i] + index[i];
  return linear;
}

inline double at(const HostTensor &tensor, std::vector<int64_t> index) {
  return tensor.getAsDouble(linearIndex(tensor, std::move(index)));
}

/// Replaces every `{key}` in `text`.
inline std::string substitute(std::string text, const std::string &key,
                              const std::string &value) {
  std::string pattern = "{" + key + "}";
  for (size_t pos = text.find(pattern); pos != std::string::npos;
       pos = text.find(pattern, pos + value.size()))
    text.replace(pos, pattern.size(), value);
  return text;
}

/// A context with the dialects kernels use, a parsed module and every
/// diagnostic the evaluator reports.
class ReferenceTest : public ::testing::Test {
protected:
  ReferenceTest()
      : handler(&context, [this](mlir::Diagnostic &diag) {
          llvm::raw_string_ostream os(diagnostics);
          os << diag.getLocation() << ": " << diag.str() << "\n";
          for (mlir::Diagnostic &note : diag.getNotes())
            os << note.getLocation() << ": note: " << note.str() << "\n";
          return mlir::success();
        }) {
    context.loadDialect<mlir::attn::AttnDialect, mlir::arith::ArithDialect,
                        mlir::math::MathDialect, mlir::tensor::TensorDialect>();
  }

  /// Parses `text` and returns its kernel, or a null op (with a test
  /// failure) if it does not parse and verify.
  mlir::attn::KernelOp parse(const std::string &text) {
    module = mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (!module) {
      ADD_FAILURE() << "kernel does not parse:\n" << diagnostics;
      return {};
    }
    for (auto kernel : module->getOps<mlir::attn::KernelOp>())
      return kernel;
    ADD_FAILURE() << "no attn.kernel";
    return {};
  }

  /// Evaluates and expects success.
  std::vector<HostTensor> run(mlir::attn::KernelOp kernel,
                              const KernelArguments &args) {
    if (!kernel)
      return {};
    mlir::FailureOr<std::vector<HostTensor>> outputs = evaluate(kernel, args);
    if (mlir::failed(outputs)) {
      ADD_FAILURE() << "evaluation failed:\n" << diagnostics;
      return {};
    }
    return std::move(*outputs);
  }

  mlir::MLIRContext context;
  mlir::ScopedDiagnosticHandler handler;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string diagnostics;
};

/// How the plain-loop attention turns scores into weights.
enum class Normalizer { Softmax, SoftplusNormalize, Sigmoid };

/// Plain-loop attention over Q[B,H,M,D], K/V[B,H,N,D]: S = scale * Q·K,
/// entries where `keep` is false are skipped (not -inf), weights by
/// `normalizer`, O = weights·V, LSE = logsumexp of kept scores.
struct AttentionOracle {
  int64_t B, H, M, N, D;
  double scale = 1.0;
  Normalizer normalizer = Normalizer::Softmax;
  std::function<bool(int64_t b, int64_t h, int64_t m, int64_t n)> keep =
      [](int64_t, int64_t, int64_t, int64_t) { return true; };
  /// A learnable sink logit per head (softmax only).
  std::function<std::optional<double>(int64_t h)> sink = [](int64_t) {
    return std::nullopt;
  };
  double sigmoidBias = 0.0;

  void compute(const HostTensor &q, const HostTensor &k, const HostTensor &v,
               std::vector<double> &out, std::vector<double> &lse) const {
    out.assign(B * H * M * D, 0.0);
    lse.assign(B * H * M, kNegInf);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t m = 0; m < M; ++m) {
          std::vector<double> s(N, 0.0), w(N, 0.0);
          std::vector<bool> kept(N);
          double max = kNegInf;
          bool any = false;
          for (int64_t n = 0; n < N; ++n) {
            double dot = 0.0;
            for (int64_t d = 0; d < D; ++d)
              dot += at(q, {b, h, m, d}) * at(k, {b, h, n, d});
            s[n] = dot * scale;
            kept[n] = keep(b, h, m, n);
            if (kept[n]) {
              any = true;
              max = std::max(max, s[n]);
            }
          }
          if (any) {
            double sum = 0.0;
            for (int64_t n = 0; n < N; ++n)
              if (kept[n])
                sum += std::exp(s[n] - max);
            lse[(b * H + h) * M + m] = max + std::log(sum);
          }
          if (!any)
            continue;
          if (normalizer == Normalizer::Softmax) {
            std::optional<double> sk = sink(h);
            double rowMax = sk ? std::max(max, *sk) : max;
            double sum = sk ? std::exp(*sk - rowMax) : 0.0;
            for (int64_t n = 0; n < N; ++n)
              if (kept[n])
                sum += std::exp(s[n] - rowMax);
            for (int64_t n = 0; n < N; ++n)
              w[n] = kept[n] ? std::exp(s[n] - rowMax) / sum : 0.0;
          } else if (normalizer == Normalizer::SoftplusNormalize) {
            double sum = 0.0;
            for (int64_t n = 0; n < N; ++n)
              if (kept[n]) {
                w[n] = std::log1p(std::exp(s[n]));
                sum += w[n];
              }
            for (int64_t n = 0; n < N; ++n)
              w[n] = kept[n] ? w[n] / sum : 0.0;
          } else {
            for (int64_t n = 0; n < N; ++n)
              w[n] =
                  kept[n] ? 1.0 / (1.0 + std::exp(-(s[n] + sigmoidBias))) : 0.0;
          }
          for (int64_t e = 0; e < D; ++e) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; ++n)
              acc += w[n] * at(v, {b, h, n, e});
            out[((b * H + h) * M + m) * D + e] = acc;
          }
        }
  }
};

/// Largest |a - b| over all elements, treating matching infinities as 0 and
/// any NaN as infinite.
inline double maxAbsDiff(const HostTensor &actual,
                         const std::vector<double> &expected) {
  if (actual.getNumElements() != static_cast<int64_t>(expected.size()))
    return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (int64_t i = 0; i < actual.getNumElements(); ++i) {
    double a = actual.getAsDouble(i), e = expected[i];
    if (std::isnan(a) || std::isnan(e))
      return std::numeric_limits<double>::infinity();
    if (a == e)
      continue;
    worst = std::max(worst, std::fabs(a - e));
  }
  return worst;
}

} // namespace attn::ref::test

#endif // ATTN_TEST_UNIT_REFERENCE_REFERENCETESTSUPPORT_H
