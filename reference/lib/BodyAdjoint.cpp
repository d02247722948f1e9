//===- BodyAdjoint.cpp - Reverse mode through a cascade body --------------===//
//
// One derivative rule per opcode, next to nothing else, so that the rules can
// be read against BodyProgram::run. The switch names every opcode (no
// default), so a new opcode does not compile until it has a rule.
//
//===----------------------------------------------------------------------===//

#include "BodyAdjoint.h"

#include "llvm/ADT/STLExtras.h"

#include <algorithm>
#include <cmath>

using namespace ::attn::ref;

static constexpr double kLn2 = 0.693147180559945309417232121458;

BodyAdjoint::BodyAdjoint(const BodyProgram &program)
    : program(program), adjoints(program.getNumRegisters(), 0.0),
      readAdjoints(program.getReadSites().size(), nullptr),
      readSquares(program.getReadSites().size(), nullptr) {}

double BodyAdjoint::getReadSiteAdjoint(size_t site) const {
  for (const Instr &in : program.getCode())
    if (in.op == Opcode::Read && in.a == site)
      return program.getReadSites()[site].integer ? 0.0 : adjoints[in.dst];
  return 0.0;
}

void BodyAdjoint::propagate(const Reg *r, double seed) {
  if (program.isIntegerResult())
    return;
  std::fill(adjoints.begin(), adjoints.end(), 0.0);
  terms.clear();
  double *adj = adjoints.data();
  adj[program.getResultRegister()] = seed;

  // Adjoints only ever flow into float registers: every rule below sends
  // them to operands of the same kind as the result, and the conversions
  // from integers (IToF, UIToF) stop them. Integer registers keep adjoint 0.
  for (const Instr &in : llvm::reverse(program.getCode())) {
    double g = adj[in.dst];
    if (g == 0.0)
      continue;
    switch (in.op) {
    case Opcode::AddF:
      adj[in.a] += g;
      adj[in.b] += g;
      break;
    case Opcode::SubF:
      adj[in.a] += g;
      adj[in.b] -= g;
      break;
    case Opcode::MulF:
      adj[in.a] += g * r[in.b].f;
      adj[in.b] += g * r[in.a].f;
      break;
    case Opcode::DivF:
      // d(a/b)/db = -a/b^2 = -(a/b)/b.
      adj[in.a] += g / r[in.b].f;
      adj[in.b] -= g * r[in.dst].f / r[in.b].f;
      break;
    case Opcode::RemF:
      // fmod(a, b) = a - trunc(a/b) * b, and trunc is locally constant.
      adj[in.a] += g;
      adj[in.b] -= g * std::trunc(r[in.a].f / r[in.b].f);
      break;
    case Opcode::MaxF:
    case Opcode::MinF: {
      // To the operand arith.maximumf / minimumf selected (see maximumF in
      // BodyProgram.cpp: on equal values the sign of zero decides, else a);
      // a NaN result has no derivative.
      double a = r[in.a].f, b = r[in.b].f;
      if (std::isnan(a) || std::isnan(b))
        break;
      bool first = in.op == Opcode::MaxF ? a > b || (a == b && !std::signbit(a))
                                         : a < b || (a == b && std::signbit(a));
      adj[first ? in.a : in.b] += g;
      break;
    }
    case Opcode::PowF: {
      // a^b: b a^(b-1) and a^b log a. The exponent's derivative exists only
      // for a > 0 (for a = 0 and b > 0 it is 0); b = 0 is constant in a.
      double a = r[in.a].f, b = r[in.b].f;
      if (b != 0.0)
        adj[in.a] += g * b * std::pow(a, b - 1.0);
      if (a > 0.0)
        adj[in.b] += g * r[in.dst].f * std::log(a);
      break;
    }
    case Opcode::NegF:
      adj[in.a] -= g;
      break;
    case Opcode::Exp:
      adj[in.a] += g * r[in.dst].f;
      break;
    case Opcode::Exp2:
      adj[in.a] += g * r[in.dst].f * kLn2;
      break;
    case Opcode::Log:
      adj[in.a] += g / r[in.a].f;
      break;
    case Opcode::Log1p:
      adj[in.a] += g / (1.0 + r[in.a].f);
      break;
    case Opcode::Sqrt:
      adj[in.a] += g * 0.5 / r[in.dst].f;
      break;
    case Opcode::Rsqrt:
      // d(a^-1/2)/da = -a^-3/2 / 2 = -rsqrt(a) / (2a).
      adj[in.a] -= g * 0.5 * r[in.dst].f / r[in.a].f;
      break;
    case Opcode::Tanh:
      adj[in.a] += g * (1.0 - r[in.dst].f * r[in.dst].f);
      break;
    case Opcode::AbsF: {
      // The kink at 0 gets the subgradient 0.
      double a = r[in.a].f;
      adj[in.a] += a > 0.0 ? g : a < 0.0 ? -g : 0.0;
      break;
    }
    case Opcode::Select:
      // To the branch taken; the condition is an i1.
      adj[r[in.a].i ? in.b : in.c] += g;
      break;
    case Opcode::Copy:
      // index_cast, extf, truncf: the reference does not round.
      adj[in.a] += g;
      break;
    case Opcode::Read: {
      const ReadSite &site = program.getReadSites()[in.a];
      double *buffer = readAdjoints[in.a];
      if (!buffer || site.integer)
        break;
      int64_t offset = site.getOffset(r);
      buffer[offset] += g;
      if (double *squares = readSquares[in.a]) {
        auto term = llvm::find_if(terms, [&](const Term &t) {
          return t.squares == squares && t.offset == offset;
        });
        if (term == terms.end())
          terms.push_back({squares, offset, g});
        else
          term->value += g;
      }
      break;
    }
    // Piecewise constant in their float operands, or integer valued: no
    // adjoint flows through them.
    case Opcode::Floor:
    case Opcode::Ceil:
    case Opcode::CmpF:
    case Opcode::AddI:
    case Opcode::SubI:
    case Opcode::MulI:
    case Opcode::DivSI:
    case Opcode::FloorDivSI:
    case Opcode::RemSI:
    case Opcode::MaxSI:
    case Opcode::MinSI:
    case Opcode::AndI:
    case Opcode::OrI:
    case Opcode::XorI:
    case Opcode::CmpI:
    case Opcode::IToF:
    case Opcode::UIToF:
    case Opcode::FToI:
    case Opcode::ExtUI:
      break;
    }
  }
  for (const Term &term : terms)
    term.squares[term.offset] += term.value * term.value;
}
