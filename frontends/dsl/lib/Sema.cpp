//===- Sema.cpp - Semantic checks of the .attn language -------------------===//

#include "attn/Frontend/Sema.h"
#include "attn/Frontend/Parser.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

using namespace attn::dsl;
using llvm::failure;
using llvm::LogicalResult;
using llvm::SMLoc;
using llvm::SMRange;
using llvm::SourceMgr;
using llvm::StringRef;
using llvm::success;

namespace {

/// The most errors one run reports.
constexpr unsigned kMaxErrors = 20;

enum class SymbolKind { Dim, Input, Output, Param, Let, Computed };

/// A global name: dims, tensors, params and lets share one namespace.
struct Symbol {
  SymbolKind kind;
  unsigned id = 0;
  SMRange range;
};

/// What Sema knows about a tensor at the current point of the program.
struct TensorState {
  std::vector<Extent> extents;
  /// Index names (computed tensors and defined outputs).
  std::vector<std::string> indices;
  ScalarKind kind = ScalarKind::Float;
  bool isInput = false;
  bool defined = false;
  /// Set when the defining statement had an error: uses stay silent.
  bool poisoned = false;
  SMRange defRange;
};

/// Where an index got its range, for conflict messages.
struct RangeEntry {
  Extent extent;
  SMRange where;
  std::string what;
  bool reported = false;
};

/// The state of the statement being checked.
struct Scope {
  StmtInfo *info = nullptr;
  llvm::StringMap<RangeEntry> ranges;
  llvm::StringMap<SMRange> firstUse;
  /// Indices bound for the whole statement (left-hand side, kept tensor's
  /// indices, or, in implicit mode, every index used).
  llvm::StringSet<> statementIndices;
  /// Indices bound by the enclosing reductions.
  llvm::SmallVector<std::string> reductionStack;
  /// Every index a reduction binds, to check that each has a range.
  std::vector<std::pair<std::string, SMRange>> reducedIndices;
  /// `T = expr`: unbound names become indices of T.
  bool implicit = false;
  /// What the statement binds, for "unknown index" hints.
  std::string bindingHint;
  unsigned expandedNodes = 0;
  bool reportedTooLarge = false;
};

class Checker {
public:
  Checker(SourceMgr &sourceMgr, Spec &spec, SemaResult &result)
      : sourceMgr(sourceMgr), spec(spec), result(result) {}

  LogicalResult check();

private:
  //===--------------------------------------------------------------------===//
  // Diagnostics
  //===--------------------------------------------------------------------===//

  void emitError(SMRange range, const llvm::Twine &message) {
    ++numErrors;
    if (numErrors > kMaxErrors)
      return;
    if (numErrors == kMaxErrors) {
      sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Error,
                             "too many errors; stopping here");
      return;
    }
    sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Error, message, {range});
  }
  void emitNote(SMRange range, const llvm::Twine &message) {
    if (numErrors >= kMaxErrors)
      return;
    sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Note, message, {range});
  }

  static StringRef describe(SymbolKind kind) {
    switch (kind) {
    case SymbolKind::Dim:
      return "a dim";
    case SymbolKind::Input:
      return "an input";
    case SymbolKind::Output:
      return "an output";
    case SymbolKind::Param:
      return "a param";
    case SymbolKind::Let:
      return "a let";
    case SymbolKind::Computed:
      return "a tensor";
    }
    return "a name";
  }

  /// Declares a global name; reports a redefinition.
  bool declare(StringRef name, SymbolKind kind, unsigned id, SMRange range) {
    auto [it, inserted] = symbols.try_emplace(name, Symbol{kind, id, range});
    if (inserted)
      return true;
    emitError(range, "redefinition of '" + name + "'");
    emitNote(it->second.range, "'" + name + "' was first defined here as " +
                                   describe(it->second.kind));
    return false;
  }

  const Symbol *lookup(StringRef name) const {
    auto it = symbols.find(name);
    return it == symbols.end() ? nullptr : &it->second;
  }

  //===--------------------------------------------------------------------===//
  // Declarations
  //===--------------------------------------------------------------------===//

  Extent dimExtent(unsigned dim) {
    Extent extent;
    extent.kind = Extent::Kind::Dim;
    extent.dim = dim;
    extent.text = spec.dims[dim].name;
    if (spec.dims[dim].size) {
      extent.value = *spec.dims[dim].size;
      extent.key = std::to_string(extent.value);
    } else {
      extent.key = "dim:" + spec.dims[dim].name;
    }
    return extent;
  }
  static Extent constExtent(int64_t value) {
    Extent extent;
    extent.kind = Extent::Kind::Const;
    extent.value = value;
    extent.key = std::to_string(value);
    extent.text = extent.key;
    return extent;
  }

  bool checkTensorDecl(TensorDecl &decl, TensorState &state);

  //===--------------------------------------------------------------------===//
  // Statements
  //===--------------------------------------------------------------------===//

  void checkLet(Stmt &stmt, unsigned index);
  void checkAssign(Stmt &stmt, StmtInfo &info);
  void checkKeep(Stmt &stmt, StmtInfo &info);
  bool checkNormalizer(Stmt &stmt, Scope &scope, Expr &norm);
  bool bindLhsIndex(Stmt &stmt, IndexDecl &decl, Scope &scope,
                    llvm::StringSet<> &seen);
  bool finishRanges(Scope &scope, llvm::ArrayRef<std::string> indices);
  void defineTarget(Stmt &stmt, StmtInfo *info, bool ok);

  //===--------------------------------------------------------------------===//
  // Expressions
  //===--------------------------------------------------------------------===//

  std::optional<ScalarKind> analyze(Expr &expr, Scope &scope,
                                    std::vector<std::string> &used);
  std::optional<ScalarKind> analyzeName(Expr &expr, Scope &scope,
                                        std::vector<std::string> &used);
  std::optional<ScalarKind> analyzeAccess(Expr &expr, Scope &scope,
                                          std::vector<std::string> &used);
  std::optional<ScalarKind> analyzeReduce(Expr &expr, Scope &scope,
                                          std::vector<std::string> &used);
  bool useIndex(StringRef name, SMRange range, Scope &scope,
                std::vector<std::string> &used);
  void constrain(Scope &scope, StringRef index, const Extent &extent,
                 SMRange where, const std::string &what);
  std::optional<Extent> evaluateBound(Expr &bound);
  bool checkBoundExpr(Expr &bound, bool &isConst, int64_t &value);
  void resolveLetNames(Expr &expr);
  std::optional<std::string> wholeIndexName(const Expr &expr);
  bool usesPoisonedLet(const Expr &expr) {
    if (expr.kind == ExprKind::Name && expr.ref == NameRef::Let)
      return poisonedLets.count(expr.refId);
    return llvm::any_of(
        expr.operands, [&](const ExprPtr &op) { return usesPoisonedLet(*op); });
  }
  bool checkIndexName(StringRef name, SMRange range);
  std::optional<ScalarKind> tensorKind(StringRef name, SMRange range,
                                       TensorState *&state);

  SourceMgr &sourceMgr;
  Spec &spec;
  SemaResult &result;
  unsigned numErrors = 0;
  llvm::StringMap<Symbol> symbols;
  llvm::StringMap<TensorState> tensors;
  /// Expanded node counts and heights of lets, by statement number.
  llvm::DenseMap<unsigned, std::pair<unsigned, unsigned>> letSizes;
  /// Lets whose definition had an error.
  llvm::DenseSet<unsigned> poisonedLets;
};

} // namespace

//===----------------------------------------------------------------------===//
// Declarations
//===----------------------------------------------------------------------===//

bool Checker::checkTensorDecl(TensorDecl &decl, TensorState &state) {
  bool ok = true;
  for (AxisDecl &axis : decl.shape) {
    if (axis.dim.empty()) {
      state.extents.push_back(constExtent(axis.size));
      continue;
    }
    const Symbol *symbol = lookup(axis.dim);
    if (!symbol || symbol->kind != SymbolKind::Dim) {
      if (symbol)
        emitError(axis.range, "'" + axis.dim + "' is " +
                                  describe(symbol->kind) + ", not a dim");
      else
        emitError(axis.range, "unknown dim '" + axis.dim + "'");
      ok = false;
      state.extents.push_back(constExtent(1));
      continue;
    }
    state.extents.push_back(dimExtent(symbol->id));
  }
  if (isFloatElemType(decl.elemType))
    state.kind = ScalarKind::Float;
  else if (decl.elemType == ElemType::I1)
    state.kind = ScalarKind::Bool;
  else
    state.kind = ScalarKind::Int;
  return ok;
}

LogicalResult Checker::check() {
  for (auto [i, dim] : llvm::enumerate(spec.dims))
    declare(dim.name, SymbolKind::Dim, i, dim.range);
  for (auto [i, param] : llvm::enumerate(spec.params))
    declare(param.name, SymbolKind::Param, i, param.range);
  // A name in an input shape that nothing declares is a symbolic dim bound
  // by that input's shape at launch (`in Pages: i32[B, NP]`); outputs and
  // range bounds cannot introduce dims.
  for (TensorDecl &decl : spec.inputs) {
    for (AxisDecl &axis : decl.shape) {
      if (axis.dim.empty() || lookup(axis.dim))
        continue;
      DimDecl dim;
      dim.name = axis.dim;
      dim.range = axis.range;
      spec.dims.push_back(dim);
      declare(dim.name, SymbolKind::Dim, spec.dims.size() - 1, dim.range);
    }
  }
  for (auto [i, decl] : llvm::enumerate(spec.inputs)) {
    if (!declare(decl.name, SymbolKind::Input, i, decl.range))
      continue;
    TensorState &state = tensors[decl.name];
    state.isInput = true;
    state.defined = true;
    state.defRange = decl.range;
    checkTensorDecl(decl, state);
  }
  for (auto [i, decl] : llvm::enumerate(spec.outputs)) {
    if (!declare(decl.name, SymbolKind::Output, i, decl.range))
      continue;
    TensorState &state = tensors[decl.name];
    state.defRange = decl.range;
    checkTensorDecl(decl, state);
  }

  result.stmts.resize(spec.stmts.size());
  for (auto [i, stmt] : llvm::enumerate(spec.stmts)) {
    switch (stmt.kind) {
    case StmtKind::Let:
      checkLet(stmt, i);
      break;
    case StmtKind::Assign:
      checkAssign(stmt, result.stmts[i]);
      break;
    case StmtKind::Keep:
      checkKeep(stmt, result.stmts[i]);
      break;
    }
  }

  for (TensorDecl &decl : spec.outputs) {
    auto it = tensors.find(decl.name);
    const Symbol *symbol = lookup(decl.name);
    if (it == tensors.end() || !symbol || symbol->kind != SymbolKind::Output)
      continue;
    if (!it->second.defined)
      emitError(decl.range, "out '" + decl.name + "' is never defined");
  }
  return numErrors ? failure() : success();
}

//===----------------------------------------------------------------------===//
// Lets
//===----------------------------------------------------------------------===//

/// Resolves the global names of a let body once, at its definition, so that
/// a let can only refer to what is defined before it (no cycles). Other
/// names are indices of whatever statement uses the let.
void Checker::resolveLetNames(Expr &expr) {
  if (expr.kind == ExprKind::Name && expr.ref == NameRef::Unresolved) {
    const Symbol *symbol = lookup(expr.name);
    if (!symbol) {
      expr.ref = NameRef::Index;
    } else {
      switch (symbol->kind) {
      case SymbolKind::Dim:
        expr.ref = NameRef::Dim;
        break;
      case SymbolKind::Param:
        expr.ref = NameRef::Param;
        break;
      case SymbolKind::Let:
        expr.ref = NameRef::Let;
        break;
      default:
        expr.ref = NameRef::Tensor;
        break;
      }
      expr.refId = symbol->id;
    }
  }
  for (ExprPtr &operand : expr.operands)
    resolveLetNames(*operand);
}

/// Counts the nodes and the height of a let body with lets expanded.
static std::pair<unsigned, unsigned>
measure(const Expr &expr,
        const llvm::DenseMap<unsigned, std::pair<unsigned, unsigned>> &lets) {
  if (expr.kind == ExprKind::Name && expr.ref == NameRef::Let) {
    auto it = lets.find(expr.refId);
    return it == lets.end() ? std::make_pair(1u, 1u) : it->second;
  }
  unsigned size = 1, height = 0;
  for (const ExprPtr &operand : expr.operands) {
    auto [s, h] = measure(*operand, lets);
    size = std::min<uint64_t>(uint64_t(size) + s, kMaxExpandedNodes + 1);
    height = std::max(height, h);
  }
  return {size, height + 1};
}

static const Expr *findNormalizerOrReduce(const Expr &expr) {
  if (expr.kind == ExprKind::Reduce || expr.kind == ExprKind::Normalizer)
    return &expr;
  for (const ExprPtr &operand : expr.operands)
    if (const Expr *found = findNormalizerOrReduce(*operand))
      return found;
  return nullptr;
}

void Checker::checkLet(Stmt &stmt, unsigned index) {
  // Resolve the body before declaring the name: a let cannot use itself.
  bool broken = false;
  std::pair<unsigned, unsigned> size = {1, 1};
  if (const Expr *bad = findNormalizerOrReduce(*stmt.value)) {
    emitError(bad->range, "a let is an index alias; it cannot hold a "
                          "reduction or a normalizer (define a tensor "
                          "instead)");
    broken = true;
  } else {
    resolveLetNames(*stmt.value);
    size = measure(*stmt.value, letSizes);
    if (usesPoisonedLet(*stmt.value)) {
      // Already reported where the used let is defined.
      broken = true;
    } else if (size.first > kMaxExpandedNodes || size.second > kMaxExprDepth) {
      emitError(stmt.range, "let '" + stmt.target +
                                "' is too large once the lets it uses are "
                                "expanded");
      broken = true;
    }
  }
  if (!declare(stmt.target, SymbolKind::Let, index, stmt.targetRange))
    return;
  // A broken let stays declared but poisoned, so that its uses do not
  // cascade into more errors.
  if (broken)
    poisonedLets.insert(index);
  else
    letSizes[index] = size;
}

//===----------------------------------------------------------------------===//
// Ranges
//===----------------------------------------------------------------------===//

void Checker::constrain(Scope &scope, StringRef index, const Extent &extent,
                        SMRange where, const std::string &what) {
  auto [it, inserted] =
      scope.ranges.try_emplace(index, RangeEntry{extent, where, what, false});
  if (inserted || it->second.extent.key == extent.key || it->second.reported)
    return;
  it->second.reported = true;
  emitError(where, "conflicting ranges for index '" + index +
                       "': " + extent.text + " from " + what + ", but " +
                       it->second.extent.text + " from " + it->second.what);
  emitNote(it->second.where, "index '" + index + "' gets range " +
                                 it->second.extent.text + " here");
}

/// Checks that a range bound uses only dims and integer literals, and folds
/// it when it is constant.
bool Checker::checkBoundExpr(Expr &bound, bool &isConst, int64_t &value) {
  switch (bound.kind) {
  case ExprKind::IntLit:
    isConst = true;
    value = bound.intValue;
    return true;
  case ExprKind::Name: {
    const Symbol *symbol = lookup(bound.name);
    if (!symbol || symbol->kind != SymbolKind::Dim) {
      if (symbol)
        emitError(bound.range, "a range bound may use only dims and integer "
                               "literals, but '" +
                                   bound.name + "' is " +
                                   describe(symbol->kind));
      else
        emitError(bound.range, "unknown dim '" + bound.name + "'");
      return false;
    }
    bound.ref = NameRef::Dim;
    bound.refId = symbol->id;
    bound.type = ScalarKind::Int;
    isConst = spec.dims[symbol->id].size.has_value();
    value = isConst ? *spec.dims[symbol->id].size : 0;
    return true;
  }
  case ExprKind::Unary:
    if (bound.unaryOp == UnaryOp::Neg) {
      bool ok = checkBoundExpr(*bound.operands[0], isConst, value);
      bound.type = ScalarKind::Int;
      if (ok && isConst) {
        if (value == std::numeric_limits<int64_t>::min()) {
          emitError(bound.range, "the range bound overflows");
          return false;
        }
        value = -value;
      }
      return ok;
    }
    break;
  case ExprKind::Binary: {
    BinaryOp op = bound.binaryOp;
    if (op != BinaryOp::Add && op != BinaryOp::Sub && op != BinaryOp::Mul &&
        op != BinaryOp::Div && op != BinaryOp::Mod)
      break;
    bool lhsConst = false, rhsConst = false;
    int64_t lhs = 0, rhs = 0;
    if (!checkBoundExpr(*bound.operands[0], lhsConst, lhs) ||
        !checkBoundExpr(*bound.operands[1], rhsConst, rhs))
      return false;
    bound.type = ScalarKind::Int;
    isConst = lhsConst && rhsConst;
    if (!isConst)
      return true;
    bool overflow = false;
    switch (op) {
    case BinaryOp::Add:
      overflow = llvm::AddOverflow(lhs, rhs, value);
      break;
    case BinaryOp::Sub:
      overflow = llvm::SubOverflow(lhs, rhs, value);
      break;
    case BinaryOp::Mul:
      overflow = llvm::MulOverflow(lhs, rhs, value);
      break;
    case BinaryOp::Div:
    case BinaryOp::Mod:
      if (rhs == 0) {
        emitError(bound.range, "division by zero in a range bound");
        return false;
      }
      if (lhs == std::numeric_limits<int64_t>::min() && rhs == -1) {
        overflow = true;
        break;
      }
      value = op == BinaryOp::Div
                  ? llvm::divideFloorSigned(lhs, rhs)
                  : lhs - llvm::divideFloorSigned(lhs, rhs) * rhs;
      break;
    default:
      break;
    }
    if (overflow) {
      emitError(bound.range, "the range bound overflows");
      return false;
    }
    return true;
  }
  default:
    break;
  }
  emitError(bound.range, "a range bound must be an integer expression of "
                         "dims and integer literals");
  return false;
}

/// Prints a bound with fixed dims folded, fully parenthesized, as the key
/// that decides whether two bounds are the same size.
static void printBoundKey(const Expr &expr, const Spec &spec,
                          llvm::raw_ostream &os) {
  switch (expr.kind) {
  case ExprKind::IntLit:
    os << expr.intValue;
    return;
  case ExprKind::Name:
    if (expr.refId < spec.dims.size() && spec.dims[expr.refId].size)
      os << *spec.dims[expr.refId].size;
    else
      os << "dim:" << expr.name;
    return;
  case ExprKind::Unary:
    os << "(-";
    printBoundKey(*expr.operands[0], spec, os);
    os << ")";
    return;
  case ExprKind::Binary: {
    static const char *const names[] = {"+", "-", "*", "/", "%"};
    unsigned op = static_cast<unsigned>(expr.binaryOp);
    os << "(";
    printBoundKey(*expr.operands[0], spec, os);
    os << " " << (op < 5 ? names[op] : "?") << " ";
    printBoundKey(*expr.operands[1], spec, os);
    os << ")";
    return;
  }
  default:
    os << "?";
    return;
  }
}

std::optional<Extent> Checker::evaluateBound(Expr &bound) {
  bool isConst = false;
  int64_t value = 0;
  if (!checkBoundExpr(bound, isConst, value))
    return std::nullopt;
  if (isConst) {
    if (value <= 0) {
      emitError(bound.range,
                "a range must be positive, but this is " + llvm::Twine(value));
      return std::nullopt;
    }
    return constExtent(value);
  }
  if (bound.kind == ExprKind::Name)
    return dimExtent(bound.refId);
  Extent extent;
  extent.kind = Extent::Kind::Expr;
  extent.expr = &bound;
  llvm::raw_string_ostream os(extent.key);
  printBoundKey(bound, spec, os);
  extent.text =
      StringRef(bound.range.Start.getPointer(),
                bound.range.End.getPointer() - bound.range.Start.getPointer())
          .str();
  return extent;
}

/// Checks that `name` may be an index (it is no global name).
bool Checker::checkIndexName(StringRef name, SMRange range) {
  if (const Symbol *symbol = lookup(name)) {
    emitError(range, "'" + name + "' is " + describe(symbol->kind) +
                         ", not an index name");
    emitNote(symbol->range, "'" + name + "' is defined here");
    return false;
  }
  return true;
}

/// Reports every index of the statement, or bound by one of its
/// reductions, that got no range; copies the ranges into the StmtInfo.
bool Checker::finishRanges(Scope &scope, llvm::ArrayRef<std::string> indices) {
  bool ok = true;
  auto checkOne = [&](StringRef name, SMRange where) {
    if (scope.ranges.count(name))
      return;
    ok = false;
    emitError(where, "cannot infer the range of index '" + name +
                         "': use it as a whole subscript of a tensor or give "
                         "it a range ('" +
                         name + " < SIZE')");
  };
  for (const std::string &name : indices) {
    auto it = scope.firstUse.find(name);
    checkOne(name, it == scope.firstUse.end() ? SMRange() : it->second);
  }
  for (auto &[name, where] : scope.reducedIndices)
    checkOne(name, where);
  for (auto &entry : scope.ranges)
    scope.info->ranges[entry.getKey()] = entry.getValue().extent;
  return ok;
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

bool Checker::useIndex(StringRef name, SMRange range, Scope &scope,
                       std::vector<std::string> &used) {
  bool bound = scope.statementIndices.count(name) ||
               llvm::is_contained(scope.reductionStack, name);
  if (!bound) {
    if (!scope.implicit) {
      emitError(range,
                "unknown index '" + name + "' (" + scope.bindingHint + ")");
      return false;
    }
    scope.statementIndices.insert(name);
  }
  scope.firstUse.try_emplace(name, range);
  if (!llvm::is_contained(used, name))
    used.push_back(name.str());
  return true;
}

/// Returns the index a subscript names as a whole (`n`, or a let that is
/// just `n`), if any.
std::optional<std::string> Checker::wholeIndexName(const Expr &expr) {
  const Expr *current = &expr;
  for (unsigned steps = 0; steps < spec.stmts.size() + 1; ++steps) {
    if (current->kind != ExprKind::Name)
      return std::nullopt;
    if (current->ref == NameRef::Index)
      return current->name;
    if (current->ref != NameRef::Let || current->refId >= spec.stmts.size())
      return std::nullopt;
    current = spec.stmts[current->refId].value.get();
    if (!current)
      return std::nullopt;
  }
  return std::nullopt;
}

std::optional<ScalarKind> Checker::tensorKind(StringRef name, SMRange range,
                                              TensorState *&state) {
  const Symbol *symbol = lookup(name);
  state = nullptr;
  if (!symbol) {
    emitError(range, "unknown tensor '" + name + "'");
    return std::nullopt;
  }
  if (symbol->kind != SymbolKind::Input && symbol->kind != SymbolKind::Output &&
      symbol->kind != SymbolKind::Computed) {
    emitError(range,
              "'" + name + "' is " + describe(symbol->kind) + ", not a tensor");
    emitNote(symbol->range, "'" + name + "' is defined here");
    return std::nullopt;
  }
  auto it = tensors.find(name);
  if (it == tensors.end())
    return std::nullopt;
  state = &it->second;
  if (state->poisoned)
    return std::nullopt;
  if (!state->defined) {
    emitError(range, "out '" + name + "' is used before it is defined");
    return std::nullopt;
  }
  return state->kind;
}

std::optional<ScalarKind> Checker::analyzeName(Expr &expr, Scope &scope,
                                               std::vector<std::string> &used) {
  if (expr.ref == NameRef::Unresolved) {
    const Symbol *symbol = lookup(expr.name);
    if (!symbol) {
      expr.ref = NameRef::Index;
    } else {
      expr.refId = symbol->id;
      switch (symbol->kind) {
      case SymbolKind::Dim:
        expr.ref = NameRef::Dim;
        break;
      case SymbolKind::Param:
        expr.ref = NameRef::Param;
        break;
      case SymbolKind::Let:
        expr.ref = NameRef::Let;
        break;
      default:
        expr.ref = NameRef::Tensor;
        break;
      }
    }
  }
  switch (expr.ref) {
  case NameRef::Unresolved:
  case NameRef::Index:
    if (!useIndex(expr.name, expr.range, scope, used))
      return std::nullopt;
    return expr.type = ScalarKind::Int;
  case NameRef::Dim:
    return expr.type = ScalarKind::Int;
  case NameRef::Param:
    if (expr.refId >= spec.params.size())
      return std::nullopt;
    return expr.type = spec.params[expr.refId].type == ElemType::F32
                           ? ScalarKind::Float
                           : ScalarKind::Int;
  case NameRef::Let: {
    if (expr.refId >= spec.stmts.size() || !spec.stmts[expr.refId].value ||
        poisonedLets.count(expr.refId))
      return std::nullopt;
    std::optional<ScalarKind> kind =
        analyze(*spec.stmts[expr.refId].value, scope, used);
    if (!kind)
      return std::nullopt;
    return expr.type = *kind;
  }
  case NameRef::Tensor: {
    TensorState *state;
    std::optional<ScalarKind> kind = tensorKind(expr.name, expr.range, state);
    if (!kind)
      return std::nullopt;
    if (state->isInput) {
      if (!state->extents.empty()) {
        emitError(expr.range, "input '" + expr.name + "' has rank " +
                                  llvm::Twine(state->extents.size()) +
                                  " and needs subscripts");
        return std::nullopt;
      }
      expr.freeIndices.clear();
      return expr.type = *kind;
    }
    // A computed tensor stands for itself at its own indices.
    expr.freeIndices = state->indices;
    bool ok = true;
    for (auto [axis, index] : llvm::enumerate(state->indices)) {
      if (!useIndex(index, expr.range, scope, used)) {
        ok = false;
        continue;
      }
      if (axis < state->extents.size())
        constrain(scope, index, state->extents[axis], expr.range,
                  "axis " + std::to_string(axis) + " of '" + expr.name + "'");
    }
    if (!ok)
      return std::nullopt;
    return expr.type = *kind;
  }
  }
  return std::nullopt;
}

std::optional<ScalarKind>
Checker::analyzeAccess(Expr &expr, Scope &scope,
                       std::vector<std::string> &used) {
  TensorState *state;
  std::optional<ScalarKind> kind = tensorKind(expr.name, expr.nameRange, state);
  bool ok = kind.has_value();
  if (ok && expr.operands.size() != state->extents.size()) {
    emitError(
        expr.range,
        "'" + expr.name + "' has rank " + llvm::Twine(state->extents.size()) +
            " but is subscripted with " + llvm::Twine(expr.operands.size()) +
            (expr.operands.size() == 1 ? " index" : " indices"));
    emitNote(state->defRange, "'" + expr.name + "' is defined here");
    ok = false;
  }
  for (auto [axis, sub] : llvm::enumerate(expr.operands)) {
    std::optional<ScalarKind> subKind = analyze(*sub, scope, used);
    if (!subKind) {
      ok = false;
      continue;
    }
    if (*subKind != ScalarKind::Int) {
      emitError(sub->range,
                llvm::Twine("a subscript must be an integer, but "
                            "this is a ") +
                    (*subKind == ScalarKind::Float ? "float" : "boolean") +
                    " expression");
      ok = false;
      continue;
    }
    if (!ok)
      continue;
    if (std::optional<std::string> index = wholeIndexName(*sub))
      constrain(scope, *index, state->extents[axis], sub->range,
                "axis " + std::to_string(axis) + " of '" + expr.name + "'");
  }
  if (!ok)
    return std::nullopt;
  return expr.type = *kind;
}

std::optional<ScalarKind>
Checker::analyzeReduce(Expr &expr, Scope &scope,
                       std::vector<std::string> &used) {
  bool ok = true;
  llvm::StringSet<> seen;
  size_t stackSize = scope.reductionStack.size();
  for (IndexDecl &decl : expr.indices) {
    if (!checkIndexName(decl.name, decl.range)) {
      ok = false;
      continue;
    }
    if (!seen.insert(decl.name).second) {
      emitError(decl.range, "index '" + decl.name +
                                "' is reduced twice by the same reduction");
      ok = false;
      continue;
    }
    if (scope.statementIndices.count(decl.name) ||
        llvm::is_contained(scope.reductionStack, decl.name)) {
      emitError(decl.range, "index '" + decl.name +
                                "' is already bound; a reduction needs a "
                                "fresh index name");
      ok = false;
      continue;
    }
    if (decl.bound) {
      if (std::optional<Extent> extent = evaluateBound(*decl.bound))
        constrain(scope, decl.name, *extent, decl.range, "its explicit range");
      else
        ok = false;
    }
    scope.reductionStack.push_back(decl.name);
    scope.reducedIndices.emplace_back(decl.name, decl.range);
  }
  std::vector<std::string> inner;
  std::optional<ScalarKind> kind = analyze(*expr.operands[0], scope, inner);
  scope.reductionStack.resize(stackSize);
  if (!kind || !ok)
    return std::nullopt;
  for (IndexDecl &decl : expr.indices) {
    if (!llvm::is_contained(inner, decl.name)) {
      emitError(decl.range, "reduction over index '" + decl.name +
                                "' that the reduced expression does not use");
      ok = false;
    }
  }
  if (!ok)
    return std::nullopt;
  expr.freeIndices.clear();
  for (const std::string &name : inner) {
    if (llvm::any_of(expr.indices,
                     [&](const IndexDecl &d) { return d.name == name; }))
      continue;
    expr.freeIndices.push_back(name);
    if (!llvm::is_contained(used, name))
      used.push_back(name);
  }
  return expr.type = ScalarKind::Float;
}

static StringRef kindName(ScalarKind kind) {
  switch (kind) {
  case ScalarKind::Int:
    return "integer";
  case ScalarKind::Float:
    return "float";
  case ScalarKind::Bool:
    return "boolean";
  }
  return "?";
}

std::optional<ScalarKind> Checker::analyze(Expr &expr, Scope &scope,
                                           std::vector<std::string> &used) {
  if (++scope.expandedNodes > kMaxExpandedNodes) {
    if (!scope.reportedTooLarge)
      emitError(expr.range, "statement is too large once lets are expanded");
    scope.reportedTooLarge = true;
    return std::nullopt;
  }
  switch (expr.kind) {
  case ExprKind::IntLit:
    return expr.type = ScalarKind::Int;
  case ExprKind::FloatLit:
    return expr.type = ScalarKind::Float;
  case ExprKind::Name:
    return analyzeName(expr, scope, used);
  case ExprKind::Access:
    return analyzeAccess(expr, scope, used);
  case ExprKind::Reduce:
    return analyzeReduce(expr, scope, used);
  case ExprKind::Normalizer:
    emitError(expr.range,
              llvm::Twine("'") +
                  (expr.normalizerOp == NormalizerOp::Softmax ? "softmax"
                                                              : "normalize") +
                  "' must be the whole right-hand side of a statement");
    return std::nullopt;
  case ExprKind::Unary: {
    std::optional<ScalarKind> kind = analyze(*expr.operands[0], scope, used);
    if (!kind)
      return std::nullopt;
    if (expr.unaryOp == UnaryOp::Not) {
      if (*kind != ScalarKind::Bool) {
        emitError(expr.operands[0]->range,
                  "'not' needs a boolean operand, but this is " +
                      llvm::Twine(*kind == ScalarKind::Int ? "an " : "a ") +
                      kindName(*kind) + " expression");
        return std::nullopt;
      }
      return expr.type = ScalarKind::Bool;
    }
    return expr.type =
               *kind == ScalarKind::Float ? ScalarKind::Float : ScalarKind::Int;
  }
  case ExprKind::Binary: {
    std::optional<ScalarKind> lhs = analyze(*expr.operands[0], scope, used);
    std::optional<ScalarKind> rhs = analyze(*expr.operands[1], scope, used);
    if (!lhs || !rhs)
      return std::nullopt;
    switch (expr.binaryOp) {
    case BinaryOp::And:
    case BinaryOp::Or: {
      bool ok = true;
      for (auto [kind, operand] :
           {std::make_pair(*lhs, expr.operands[0].get()),
            std::make_pair(*rhs, expr.operands[1].get())}) {
        if (kind == ScalarKind::Bool)
          continue;
        emitError(operand->range,
                  llvm::Twine("'") +
                      (expr.binaryOp == BinaryOp::And ? "and" : "or") +
                      "' needs boolean operands, but this is " +
                      (kind == ScalarKind::Int ? "an " : "a ") +
                      kindName(kind) + " expression");
        ok = false;
      }
      if (!ok)
        return std::nullopt;
      return expr.type = ScalarKind::Bool;
    }
    case BinaryOp::Lt:
    case BinaryOp::Le:
    case BinaryOp::Gt:
    case BinaryOp::Ge:
    case BinaryOp::Eq:
    case BinaryOp::Ne:
      return expr.type = ScalarKind::Bool;
    case BinaryOp::Pow:
      return expr.type = ScalarKind::Float;
    default: {
      ScalarKind kind = *lhs == ScalarKind::Float || *rhs == ScalarKind::Float
                            ? ScalarKind::Float
                            : ScalarKind::Int;
      // An integer division or remainder by a literal 0 would trap at run
      // time wherever the expression is evaluated.
      const Expr &divisor = *expr.operands[1];
      if (kind == ScalarKind::Int &&
          (expr.binaryOp == BinaryOp::Div || expr.binaryOp == BinaryOp::Mod) &&
          divisor.kind == ExprKind::IntLit && divisor.intValue == 0) {
        emitError(divisor.range,
                  expr.binaryOp == BinaryOp::Div
                      ? "integer division by zero"
                      : "integer remainder by zero");
        return std::nullopt;
      }
      return expr.type = kind;
    }
    }
  }
  case ExprKind::Call: {
    std::vector<ScalarKind> kinds;
    bool ok = true;
    for (ExprPtr &operand : expr.operands) {
      std::optional<ScalarKind> kind = analyze(*operand, scope, used);
      if (!kind)
        ok = false;
      else
        kinds.push_back(*kind);
    }
    if (!ok)
      return std::nullopt;
    auto unify = [](ScalarKind a, ScalarKind b) {
      if (a == ScalarKind::Float || b == ScalarKind::Float)
        return ScalarKind::Float;
      return ScalarKind::Int;
    };
    switch (expr.builtin) {
    case Builtin::Select:
      if (kinds[0] != ScalarKind::Bool) {
        emitError(expr.operands[0]->range,
                  "the condition of 'select' must be a boolean, but this is " +
                      llvm::Twine(kinds[0] == ScalarKind::Int ? "an " : "a ") +
                      kindName(kinds[0]) + " expression");
        return std::nullopt;
      }
      if (kinds[1] == ScalarKind::Bool && kinds[2] == ScalarKind::Bool)
        return expr.type = ScalarKind::Bool;
      return expr.type = unify(kinds[1], kinds[2]);
    case Builtin::Min:
    case Builtin::Max:
      return expr.type = unify(kinds[0], kinds[1]);
    case Builtin::Relu:
    case Builtin::Abs:
      return expr.type = unify(kinds[0], ScalarKind::Int);
    default:
      return expr.type = ScalarKind::Float;
    }
  }
  }
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Statements
//===----------------------------------------------------------------------===//

bool Checker::bindLhsIndex(Stmt &stmt, IndexDecl &decl, Scope &scope,
                           llvm::StringSet<> &seen) {
  if (!checkIndexName(decl.name, decl.range))
    return false;
  if (!seen.insert(decl.name).second) {
    emitError(decl.range, "index '" + decl.name +
                              "' appears twice on the left of the statement");
    return false;
  }
  scope.statementIndices.insert(decl.name);
  if (decl.bound) {
    std::optional<Extent> extent = evaluateBound(*decl.bound);
    if (!extent)
      return false;
    constrain(scope, decl.name, *extent, decl.range, "its explicit range");
  }
  return true;
}

/// Records the tensor a statement defines (even a broken one, marked
/// poisoned, so that later uses do not cascade into more errors).
void Checker::defineTarget(Stmt &stmt, StmtInfo *info, bool ok) {
  TensorState &state = tensors[stmt.target];
  state.defined = true;
  state.poisoned = !ok;
  state.defRange = stmt.targetRange;
  if (!ok || !info)
    return;
  state.indices = info->outIndices;
  state.kind = info->valueType;
  state.extents.clear();
  for (const std::string &index : info->outIndices)
    state.extents.push_back(info->ranges.lookup(index));
}

void Checker::checkAssign(Stmt &stmt, StmtInfo &info) {
  // The target: a new tensor or a declared, not yet defined output.
  const Symbol *symbol = lookup(stmt.target);
  TensorDecl *outDecl = nullptr;
  if (symbol) {
    if (symbol->kind == SymbolKind::Output && !tensors[stmt.target].defined) {
      outDecl = &spec.outputs[symbol->id];
    } else {
      if (symbol->kind == SymbolKind::Computed ||
          symbol->kind == SymbolKind::Output)
        emitError(stmt.targetRange,
                  "redefinition of '" + stmt.target +
                      "' (a tensor is defined once; use a new name)");
      else
        emitError(stmt.targetRange, "cannot assign to '" + stmt.target +
                                        "', which is " +
                                        describe(symbol->kind));
      auto it = tensors.find(stmt.target);
      emitNote(it != tensors.end() && symbol->kind != SymbolKind::Param &&
                       symbol->kind != SymbolKind::Dim &&
                       symbol->kind != SymbolKind::Let
                   ? it->second.defRange
                   : symbol->range,
               "'" + stmt.target + "' is defined here");
      return;
    }
  } else {
    symbols.try_emplace(stmt.target,
                        Symbol{SymbolKind::Computed, 0, stmt.targetRange});
  }

  Scope scope;
  scope.info = &info;
  bool ok = true;
  if (stmt.hasIndexList) {
    llvm::StringSet<> seen;
    for (IndexDecl &decl : stmt.lhsIndices)
      ok &= bindLhsIndex(stmt, decl, scope, seen);
    scope.bindingHint = "it is not on the left of the statement nor bound by "
                        "a reduction";
    // Declared outputs give the left-hand indices their ranges.
    if (ok && outDecl) {
      TensorState &state = tensors[stmt.target];
      if (stmt.lhsIndices.size() != state.extents.size()) {
        emitError(stmt.targetRange,
                  "out '" + stmt.target + "' is declared with rank " +
                      llvm::Twine(state.extents.size()) + " but defined with " +
                      llvm::Twine(stmt.lhsIndices.size()) +
                      (stmt.lhsIndices.size() == 1 ? " index" : " indices"));
        emitNote(outDecl->range, "'" + stmt.target + "' is declared here");
        ok = false;
      } else {
        for (auto [axis, decl] : llvm::enumerate(stmt.lhsIndices))
          constrain(scope, decl.name, state.extents[axis], outDecl->range,
                    "axis " + std::to_string(axis) + " of out '" + stmt.target +
                        "'");
      }
    }
  } else {
    scope.implicit = true;
  }
  if (!ok) {
    defineTarget(stmt, nullptr, false);
    return;
  }

  Expr &rhs = *stmt.value;
  std::vector<std::string> used;
  if (rhs.kind == ExprKind::Normalizer) {
    ok = checkNormalizer(stmt, scope, rhs);
  } else {
    std::optional<ScalarKind> kind = analyze(rhs, scope, used);
    ok = kind.has_value();
    if (ok) {
      info.valueType = *kind;
      if (stmt.hasIndexList) {
        for (IndexDecl &decl : stmt.lhsIndices) {
          info.outIndices.push_back(decl.name);
          if (!llvm::is_contained(used, decl.name) &&
              !scope.ranges.count(decl.name)) {
            emitError(decl.range,
                      "index '" + decl.name +
                          "' on the left does not appear on the right, so "
                          "its range is unknown (give it one: '" +
                          decl.name + " < SIZE')");
            ok = false;
          }
        }
      } else {
        info.outIndices = used;
      }
    }
  }
  if (!ok) {
    defineTarget(stmt, nullptr, false);
    return;
  }

  // Outputs: the rank and sizes of the declaration, and a compatible type.
  if (outDecl) {
    TensorState &state = tensors[stmt.target];
    if (!stmt.hasIndexList) {
      if (info.outIndices.size() != state.extents.size()) {
        emitError(stmt.targetRange,
                  "out '" + stmt.target + "' is declared with rank " +
                      llvm::Twine(state.extents.size()) +
                      " but its value has " +
                      llvm::Twine(info.outIndices.size()) +
                      (info.outIndices.size() == 1 ? " index" : " indices"));
        emitNote(outDecl->range, "'" + stmt.target + "' is declared here");
        ok = false;
      } else {
        for (auto [axis, index] : llvm::enumerate(info.outIndices))
          constrain(scope, index, state.extents[axis], outDecl->range,
                    "axis " + std::to_string(axis) + " of out '" + stmt.target +
                        "'");
      }
    }
    ElemType declared = outDecl->elemType;
    if (isFloatElemType(declared)) {
      info.valueType = ScalarKind::Float;
    } else if (declared == ElemType::I1 ? info.valueType != ScalarKind::Bool
                                        : info.valueType == ScalarKind::Float) {
      emitError(stmt.value->range,
                "out '" + stmt.target + "' is declared " +
                    stringifyElemType(declared) + " but its value is " +
                    (info.valueType == ScalarKind::Int ? "an " : "a ") +
                    kindName(info.valueType));
      ok = false;
    } else {
      info.declaredResultType = declared;
    }
  }
  ok &= finishRanges(scope, info.outIndices);
  defineTarget(stmt, &info, ok);
}

bool Checker::checkNormalizer(Stmt &stmt, Scope &scope, Expr &norm) {
  StringRef name =
      norm.normalizerOp == NormalizerOp::Softmax ? "softmax" : "normalize";
  StmtInfo &info = *scope.info;
  std::vector<std::string> used;
  std::optional<ScalarKind> kind = analyze(*norm.operands[0], scope, used);
  if (!kind)
    return false;
  if (stmt.hasIndexList) {
    for (IndexDecl &decl : stmt.lhsIndices)
      info.outIndices.push_back(decl.name);
    if (info.outIndices != used) {
      emitError(stmt.targetRange,
                "the indices on the left of '" + name +
                    "' must be those of its operand, in order of appearance");
      return false;
    }
  } else {
    info.outIndices = used;
  }
  const IndexDecl &axis = norm.indices[0];
  if (!llvm::is_contained(info.outIndices, axis.name)) {
    emitError(axis.range, "'" + name + "' over index '" + axis.name +
                              "' that its operand does not have");
    return false;
  }
  info.valueType = ScalarKind::Float;
  if (norm.sink) {
    Scope sinkScope;
    sinkScope.info = &info;
    for (const std::string &index : info.outIndices)
      if (index != axis.name)
        sinkScope.statementIndices.insert(index);
    for (auto &entry : scope.ranges)
      sinkScope.ranges.try_emplace(entry.getKey(), entry.getValue());
    sinkScope.bindingHint = "a sink may use the indices of the softmax "
                            "operand except '" +
                            axis.name + "'";
    std::vector<std::string> sinkUsed;
    if (!analyze(*norm.sink, sinkScope, sinkUsed))
      return false;
    for (auto &entry : sinkScope.ranges)
      scope.ranges.try_emplace(entry.getKey(), entry.getValue());
    for (auto &entry : sinkScope.reducedIndices)
      scope.reducedIndices.push_back(entry);
  }
  return true;
}

void Checker::checkKeep(Stmt &stmt, StmtInfo &info) {
  bool ok = true;
  // Annotations: known names, right arguments, each at most once.
  llvm::StringSet<> seen;
  for (Annotation &annotation : stmt.annotations) {
    if (!seen.insert(annotation.name).second) {
      emitError(annotation.range,
                "duplicate annotation '@" + annotation.name + "'");
      ok = false;
      continue;
    }
    if (annotation.name == "sinks") {
      if (annotation.args.size() != 1 || annotation.args[0] < 0) {
        emitError(annotation.range, "'@sinks' takes one non-negative integer "
                                    "(the number of always-kept keys)");
        ok = false;
      }
    } else if (annotation.name == "block") {
      if (annotation.args.size() != 2 || annotation.args[0] <= 0 ||
          annotation.args[1] <= 0) {
        emitError(annotation.range,
                  "'@block' takes two positive integers (the block sizes)");
        ok = false;
      }
    } else if (annotation.name == "per_head") {
      if (!annotation.args.empty()) {
        emitError(annotation.range, "'@per_head' takes no arguments");
        ok = false;
      }
    } else {
      emitError(annotation.range,
                "unknown annotation '@" + annotation.name +
                    "' (expected @sinks, @block or @per_head)");
      ok = false;
    }
  }

  const Symbol *symbol = lookup(stmt.target);
  if (!symbol) {
    emitError(stmt.targetRange, "unknown tensor '" + stmt.target + "'");
    return;
  }
  if (symbol->kind != SymbolKind::Computed &&
      symbol->kind != SymbolKind::Output) {
    emitError(stmt.targetRange,
              "'keep' applies to tensors defined by statements, but '" +
                  stmt.target + "' is " + describe(symbol->kind));
    return;
  }
  TensorState &state = tensors[stmt.target];
  if (state.poisoned)
    return;
  if (!state.defined) {
    emitError(stmt.targetRange,
              "out '" + stmt.target + "' is used before it is defined");
    return;
  }

  Scope scope;
  scope.info = &info;
  info.outIndices = state.indices;
  for (auto [axis, index] : llvm::enumerate(state.indices)) {
    scope.statementIndices.insert(index);
    if (axis < state.extents.size())
      scope.ranges.try_emplace(index,
                               RangeEntry{state.extents[axis], state.defRange,
                                          "'" + stmt.target + "'", false});
  }
  std::string names;
  for (const std::string &index : state.indices)
    names += (names.empty() ? "" : ", ") + index;
  scope.bindingHint = "the predicate of 'keep " + stmt.target +
                      "' may use its indices: " + names;
  std::vector<std::string> used;
  std::optional<ScalarKind> kind = analyze(*stmt.value, scope, used);
  if (!kind)
    return;
  if (*kind != ScalarKind::Bool) {
    emitError(stmt.value->range,
              "the predicate of 'keep' must be a boolean (a comparison), but "
              "this is " +
                  llvm::Twine(*kind == ScalarKind::Int ? "an " : "a ") +
                  kindName(*kind) + " expression");
    return;
  }
  info.valueType = state.kind;
  if (!ok || !finishRanges(scope, {}))
    return;
}

LogicalResult attn::dsl::checkSpec(SourceMgr &sourceMgr, Spec &spec,
                                   SemaResult &result) {
  Checker checker(sourceMgr, spec, result);
  return checker.check();
}
