//===- Parser.h - Parser of the .attn language ------------------*- C++ -*-===//
//
// A recursive-descent parser from tokens to the AST of AST.h. Syntax errors
// are reported through the SourceMgr; the parser then skips to the next line
// and goes on, so one run reports several independent mistakes. Expression
// nesting is capped (kMaxExprDepth) so that hostile inputs cannot exhaust the
// stack of the parser or of the later recursive walks.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_PARSER_H
#define ATTN_FRONTEND_PARSER_H

#include "attn/Frontend/AST.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/LogicalResult.h"

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace attn::dsl {

/// The deepest expression (in nodes or in parentheses) the parser accepts.
constexpr unsigned kMaxExprDepth = 256;

/// Parses the main buffer of `sourceMgr` into `spec`. Returns failure if any
/// lexical or syntax error was reported.
llvm::LogicalResult parseSpec(llvm::SourceMgr &sourceMgr, Spec &spec);

} // namespace attn::dsl

#endif // ATTN_FRONTEND_PARSER_H
