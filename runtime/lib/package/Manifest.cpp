//===- Manifest.cpp - Package manifests: JSON and validation --------------===//
//
// The manifest is strict: unknown keys, wrong types and dangling references
// are errors, so that a typo in a hand-written or generated manifest fails at
// load time with the field's path instead of misbehaving at launch.
//
//===----------------------------------------------------------------------===//

#include "attn/Runtime/Json.h"
#include "attn/Runtime/Package.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace attn {

namespace {

constexpr size_t kMaxNameLength = 128;
constexpr size_t kMaxRank = 8;
constexpr size_t kMaxSlots = 512;
constexpr int64_t kMaxParamBytes = 4096;
constexpr int64_t kMaxSharedBytes = 227 * 1024;
/// Resident CTAs an SM can hold (sm_90: 32).
constexpr int64_t kMaxPersistentCtasPerSm = 32;
/// Limits of cuTensorMapEncodeTiled.
constexpr size_t kMaxTmaRank = 5;
constexpr int64_t kMaxTmaBox = 256;

constexpr std::pair<TmaSwizzle, const char *> kTmaSwizzles[] = {
    {TmaSwizzle::None, "none"},
    {TmaSwizzle::B32, "32B"},
    {TmaSwizzle::B64, "64B"},
    {TmaSwizzle::B128, "128B"}};
constexpr std::pair<TmaOobFill, const char *> kTmaOobFills[] = {
    {TmaOobFill::Zero, "zero"}, {TmaOobFill::Nan, "nan"}};
constexpr std::pair<TmaL2Promotion, const char *> kTmaL2Promotions[] = {
    {TmaL2Promotion::None, "none"},
    {TmaL2Promotion::B64, "64B"},
    {TmaL2Promotion::B128, "128B"},
    {TmaL2Promotion::B256, "256B"}};

/// The spelling of `value` in `table`.
template <typename T, size_t N>
const char *nameIn(const std::pair<T, const char *> (&table)[N], T value) {
  for (const auto &[v, name] : table)
    if (v == value)
      return name;
  return "?";
}

/// The value spelled `name` in `table`; false if none is.
template <typename T, size_t N>
bool lookUp(const std::pair<T, const char *> (&table)[N], std::string_view name,
            T &out) {
  for (const auto &[v, spelling] : table) {
    if (name == spelling) {
      out = v;
      return true;
    }
  }
  return false;
}

/// "none, 32B, 64B or 128B": the spellings of `table`, for messages.
template <typename T, size_t N>
std::string spellingsOf(const std::pair<T, const char *> (&table)[N]) {
  std::string s;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0)
      s += i + 1 == N ? " or " : ", ";
    s += table[i].second;
  }
  return s;
}

bool isIdentifier(std::string_view s) {
  if (s.empty() || s.size() > kMaxNameLength)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && (digit || c == '$' || c == '.'))))
      return false;
  }
  return true;
}

bool isTarget(std::string_view s) {
  if (s.size() < 4 || s.size() > 8 || s.substr(0, 3) != "sm_")
    return false;
  size_t i = 3;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9')
    ++i;
  if (i == 3)
    return false;
  return i == s.size() || (i + 1 == s.size() && s[i] == 'a');
}

const char *kindName(ArgKind k) {
  switch (k) {
  case ArgKind::Input:
    return "input";
  case ArgKind::Param:
    return "param";
  case ArgKind::Output:
    return "output";
  }
  return "?";
}

const char *layoutName(Layout l) {
  switch (l) {
  case Layout::Contiguous:
    return "contiguous";
  case Layout::InnerContiguous:
    return "inner_contiguous";
  case Layout::Strided:
    return "strided";
  }
  return "?";
}

const char *slotKindName(ParamSlot::Kind k) {
  switch (k) {
  case ParamSlot::Kind::Ptr:
    return "ptr";
  case ParamSlot::Kind::Stride:
    return "stride";
  case ParamSlot::Kind::Size:
    return "size";
  case ParamSlot::Kind::Dim:
    return "dim";
  case ParamSlot::Kind::Param:
    return "param";
  case ParamSlot::Kind::Const:
    return "const";
  case ParamSlot::Kind::Workspace:
    return "workspace";
  case ParamSlot::Kind::Expr:
    return "expr";
  case ParamSlot::Kind::Tma:
    return "tma";
  }
  return "?";
}

/// The dtypes a tensor map can load (cuTensorMapEncodeTiled has no 1-bit
/// type).
bool isTmaDType(DType t) { return t != DType::I1; }

/// The bytes of a swizzle pattern's row (0: no swizzle), which bounds the
/// inner extent of the box it arranges.
int64_t swizzleSpan(TmaSwizzle swizzle) {
  switch (swizzle) {
  case TmaSwizzle::None:
    return 0;
  case TmaSwizzle::B32:
    return 32;
  case TmaSwizzle::B64:
    return 64;
  case TmaSwizzle::B128:
    return 128;
  }
  return 0;
}

bool hasTmaSlots(const EntrySpec &e) {
  return std::any_of(e.params.begin(), e.params.end(), [](const ParamSlot &p) {
    return p.kind == ParamSlot::Kind::Tma;
  });
}

//===-- JSON -> manifest --------------------------------------------------===//

/// Reads fields of one JSON object and reports unknown keys afterwards; all
/// errors carry the field path ("entries[0].grid[1]").
class ObjectReader {
public:
  ObjectReader(const json::Value &v, std::string path)
      : v(v), path(std::move(path)) {}

  Status checkIsObject() const {
    if (!v.isObject())
      return invalidPackage("manifest: " + path + " must be an object");
    return Status::ok();
  }

  const json::Value *field(const char *key) {
    seen.insert(key);
    return v.get(key);
  }

  Status string(const char *key, std::string &out, bool required = true) {
    const json::Value *f = field(key);
    if (!f)
      return required ? missing(key) : Status::ok();
    if (!f->isString())
      return wrongType(key, "a string");
    out = f->getString();
    return Status::ok();
  }

  /// A string, or an array of strings (one string: a list of one).
  Status strings(const char *key, std::vector<std::string> &out,
                 bool required = true) {
    const json::Value *f = field(key);
    if (!f)
      return required ? missing(key) : Status::ok();
    if (f->isString()) {
      out = {f->getString()};
      return Status::ok();
    }
    if (!f->isArray() || f->getArray().empty())
      return wrongType(key, "a string or a non-empty array of strings");
    for (const json::Value &item : f->getArray()) {
      if (!item.isString())
        return wrongType(key, "a string or a non-empty array of strings");
      out.push_back(item.getString());
    }
    return Status::ok();
  }

  Status integer(const char *key, int64_t &out, bool required = true) {
    const json::Value *f = field(key);
    if (!f)
      return required ? missing(key) : Status::ok();
    if (!f->isInteger())
      return wrongType(key, "an integer");
    out = static_cast<int64_t>(f->getNumber());
    return Status::ok();
  }

  Status boolean(const char *key, bool &out, bool required = true) {
    const json::Value *f = field(key);
    if (!f)
      return required ? missing(key) : Status::ok();
    if (!f->isBool())
      return wrongType(key, "true or false");
    out = f->getBool();
    return Status::ok();
  }

  Status array(const char *key, const json::Value *&out, bool required = true) {
    out = field(key);
    if (!out)
      return required ? missing(key) : Status::ok();
    if (!out->isArray())
      return wrongType(key, "an array");
    return Status::ok();
  }

  Status finish() const {
    for (const json::Value::Member &m : v.getObject())
      if (!seen.count(m.first) && m.first.rfind("x-", 0) != 0)
        return invalidPackage("manifest: unknown field " + path + "." +
                              m.first);
    return Status::ok();
  }

  Status missing(const char *key) const {
    return invalidPackage("manifest: missing field " + path + "." + key);
  }
  Status wrongType(const char *key, const char *what) const {
    return invalidPackage("manifest: " + path + "." + key + " must be " + what);
  }
  const std::string &getPath() const { return path; }

private:
  const json::Value &v;
  std::string path;
  std::set<std::string> seen;
};

Status readDType(ObjectReader &r, DType &out) {
  std::string s;
  if (Status st = r.string("dtype", s))
    return st;
  std::optional<DType> t = parseDType(s);
  if (!t)
    return invalidPackage("manifest: " + r.getPath() +
                          ".dtype: unknown dtype '" + s + "'");
  out = *t;
  return Status::ok();
}

Status readSlotType(std::string_view s, SlotType &out) {
  if (s == "ptr")
    out = SlotType::Ptr;
  else if (s == "i32")
    out = SlotType::I32;
  else if (s == "i64")
    out = SlotType::I64;
  else if (s == "f32")
    out = SlotType::F32;
  else if (s == "f64")
    out = SlotType::F64;
  else if (s == "tmap")
    out = SlotType::TensorMap;
  else
    return invalidPackage("unknown slot type '" + std::string(s) + "'");
  return Status::ok();
}

Status readArg(const json::Value &v, const std::string &path, ArgSpec &out) {
  ObjectReader r(v, path);
  if (Status s = r.checkIsObject())
    return s;
  std::string kind;
  if (Status s = r.string("name", out.name))
    return s;
  if (Status s = r.string("kind", kind))
    return s;
  if (kind == "input")
    out.kind = ArgKind::Input;
  else if (kind == "output")
    out.kind = ArgKind::Output;
  else if (kind == "param")
    out.kind = ArgKind::Param;
  else
    return invalidPackage("manifest: " + path +
                          ".kind must be input, output or param, got '" + kind +
                          "'");
  if (Status s = readDType(r, out.dtype))
    return s;
  if (out.kind == ArgKind::Param) {
    const json::Value *d = r.field("default");
    if (d && d->isNumber()) {
      out.defaultValue = d->getNumber();
    } else if (d && d->isString() &&
               (d->getString() == "inf" || d->getString() == "-inf" ||
                d->getString() == "nan")) {
      out.defaultValue = d->getString() == "nan"
                             ? std::nan("")
                             : (d->getString() == "inf" ? INFINITY : -INFINITY);
    } else if (d && !d->isNull()) {
      return r.wrongType("default", "a number, \"inf\", \"-inf\" or \"nan\"");
    }
    return r.finish();
  }
  const json::Value *axes;
  if (Status s = r.array("axes", axes))
    return s;
  for (size_t i = 0; i < axes->getArray().size(); ++i) {
    const json::Value &a = axes->getArray()[i];
    if (a.isString())
      out.axes.push_back(AxisSpec::ofDim(a.getString()));
    else if (a.isInteger())
      out.axes.push_back(AxisSpec::ofSize(static_cast<int64_t>(a.getNumber())));
    else
      return invalidPackage("manifest: " + path + ".axes[" + std::to_string(i) +
                            "] must be a dim name or an integer");
  }
  std::string layout = "contiguous";
  if (Status s = r.string("layout", layout, /*required=*/false))
    return s;
  if (layout == "contiguous")
    out.layout = Layout::Contiguous;
  else if (layout == "inner_contiguous")
    out.layout = Layout::InnerContiguous;
  else if (layout == "strided")
    out.layout = Layout::Strided;
  else
    return invalidPackage("manifest: " + path +
                          ".layout must be contiguous, inner_contiguous or "
                          "strided, got '" +
                          layout + "'");
  if (Status s = r.integer("alignment", out.alignment, /*required=*/false))
    return s;
  return r.finish();
}

Status readSlot(const json::Value &v, const std::string &path, ParamSlot &out) {
  ObjectReader r(v, path);
  if (Status s = r.checkIsObject())
    return s;
  static const std::pair<const char *, ParamSlot::Kind> kinds[] = {
      {"ptr", ParamSlot::Kind::Ptr},
      {"stride", ParamSlot::Kind::Stride},
      {"size", ParamSlot::Kind::Size},
      {"dim", ParamSlot::Kind::Dim},
      {"param", ParamSlot::Kind::Param},
      {"const", ParamSlot::Kind::Const},
      {"workspace", ParamSlot::Kind::Workspace},
      {"expr", ParamSlot::Kind::Expr},
      {"tma", ParamSlot::Kind::Tma}};
  int found = 0;
  for (const auto &[key, kind] : kinds) {
    const json::Value *f = r.field(key);
    if (!f)
      continue;
    ++found;
    out.kind = kind;
    if (kind == ParamSlot::Kind::Const) {
      if (!f->isNumber())
        return r.wrongType(key, "a number");
      out.value = f->getNumber();
    } else {
      if (!f->isString())
        return r.wrongType(key, kind == ParamSlot::Kind::Expr ? "a formula"
                                                              : "a name");
      out.arg = f->getString();
    }
  }
  if (found != 1)
    return invalidPackage("manifest: " + path +
                          " must have exactly one of ptr, stride, size, dim, "
                          "param, const, workspace, expr, tma");
  if (out.kind == ParamSlot::Kind::Stride ||
      out.kind == ParamSlot::Kind::Size) {
    if (Status s = r.integer("axis", out.axis))
      return s;
  }
  if (out.kind == ParamSlot::Kind::Tma) {
    const json::Value *box;
    if (Status s = r.array("box", box))
      return s;
    for (size_t i = 0; i < box->getArray().size(); ++i) {
      if (!box->getArray()[i].isInteger())
        return invalidPackage("manifest: " + path + ".box[" +
                              std::to_string(i) + "] must be an integer");
      out.tile.box.push_back(
          static_cast<int64_t>(box->getArray()[i].getNumber()));
    }
    const json::Value *axes;
    if (Status s = r.array("axes", axes, /*required=*/false))
      return s;
    for (size_t i = 0; axes && i < axes->getArray().size(); ++i) {
      if (!axes->getArray()[i].isInteger())
        return invalidPackage("manifest: " + path + ".axes[" +
                              std::to_string(i) + "] must be an integer");
      out.tile.axes.push_back(
          static_cast<int64_t>(axes->getArray()[i].getNumber()));
    }
    std::string swizzle = "none", oobFill = "zero", l2Promotion = "128B";
    if (Status s = r.string("swizzle", swizzle, /*required=*/false))
      return s;
    if (!lookUp(kTmaSwizzles, swizzle, out.tile.swizzle))
      return invalidPackage("manifest: " + path + ".swizzle must be " +
                            spellingsOf(kTmaSwizzles) + ", got '" + swizzle +
                            "'");
    if (Status s = r.string("oob_fill", oobFill, /*required=*/false))
      return s;
    if (!lookUp(kTmaOobFills, oobFill, out.tile.oobFill))
      return invalidPackage("manifest: " + path + ".oob_fill must be " +
                            spellingsOf(kTmaOobFills) + ", got '" + oobFill +
                            "'");
    if (Status s = r.string("l2_promotion", l2Promotion, /*required=*/false))
      return s;
    if (!lookUp(kTmaL2Promotions, l2Promotion, out.tile.l2Promotion))
      return invalidPackage("manifest: " + path + ".l2_promotion must be " +
                            spellingsOf(kTmaL2Promotions) + ", got '" +
                            l2Promotion + "'");
    if (Status s = r.boolean("optional", out.tile.optional, /*required=*/false))
      return s;
  }
  // Default slot types: pointers for ptr and workspace, i64 for integers; a
  // param's own type is resolved during validation (it needs the arg list).
  std::string type;
  if (Status s = r.string("type", type, /*required=*/false))
    return s;
  if (!type.empty()) {
    if (Status s = readSlotType(type, out.type))
      return invalidPackage("manifest: " + path + ".type: " + s.getMessage());
  } else if (out.kind == ParamSlot::Kind::Ptr ||
             out.kind == ParamSlot::Kind::Workspace) {
    out.type = SlotType::Ptr;
  } else if (out.kind == ParamSlot::Kind::Tma) {
    out.type = SlotType::TensorMap;
  } else if (out.kind == ParamSlot::Kind::Param) {
    out.type = SlotType::Ptr; // Placeholder: "the param's own type".
  } else {
    out.type = SlotType::I64;
  }
  return r.finish();
}

Status readEntry(const json::Value &v, const std::string &path,
                 EntrySpec &out) {
  ObjectReader r(v, path);
  if (Status s = r.checkIsObject())
    return s;
  if (Status s = r.string("name", out.name))
    return s;
  if (Status s = r.string("function", out.function))
    return s;
  if (Status s = r.string("module", out.module))
    return s;
  if (Status s = r.string("when", out.when, /*required=*/false))
    return s;
  if (Status s = r.strings("fallback", out.fallback, /*required=*/false))
    return s;
  const json::Value *grid, *block, *params;
  if (Status s = r.array("grid", grid))
    return s;
  for (size_t i = 0; i < grid->getArray().size(); ++i) {
    const json::Value &g = grid->getArray()[i];
    if (g.isString())
      out.grid.push_back(g.getString());
    else if (g.isInteger())
      out.grid.push_back(std::to_string(static_cast<int64_t>(g.getNumber())));
    else
      return invalidPackage("manifest: " + path + ".grid[" + std::to_string(i) +
                            "] must be a formula string or an integer");
  }
  if (Status s = r.array("block", block))
    return s;
  if (block->getArray().empty() || block->getArray().size() > 3)
    return invalidPackage("manifest: " + path +
                          ".block must have 1 to 3 sizes");
  for (size_t i = 0; i < block->getArray().size(); ++i) {
    if (!block->getArray()[i].isInteger())
      return invalidPackage("manifest: " + path + ".block[" +
                            std::to_string(i) + "] must be an integer");
    out.block[i] = static_cast<int64_t>(block->getArray()[i].getNumber());
  }
  if (Status s = r.integer("shared_bytes", out.sharedBytes, false))
    return s;
  if (Status s = r.integer("persistent", out.persistentCtasPerSm, false))
    return s;
  if (Status s = r.array("params", params))
    return s;
  if (params->getArray().size() > kMaxSlots)
    return invalidPackage("manifest: " + path + ".params: more than " +
                          std::to_string(kMaxSlots) + " slots");
  for (size_t i = 0; i < params->getArray().size(); ++i) {
    ParamSlot slot;
    if (Status s = readSlot(params->getArray()[i],
                            path + ".params[" + std::to_string(i) + "]", slot))
      return s;
    out.params.push_back(std::move(slot));
  }
  return r.finish();
}

//===-- manifest -> JSON --------------------------------------------------===//

json::Value numberOrSpelling(double d) {
  if (std::isnan(d))
    return json::Value::string("nan");
  if (std::isinf(d))
    return json::Value::string(d > 0 ? "inf" : "-inf");
  return json::Value::number(d);
}

} // namespace

std::string_view slotTypeName(SlotType type) {
  switch (type) {
  case SlotType::Ptr:
    return "ptr";
  case SlotType::I32:
    return "i32";
  case SlotType::I64:
    return "i64";
  case SlotType::F32:
    return "f32";
  case SlotType::F64:
    return "f64";
  case SlotType::TensorMap:
    return "tmap";
  }
  return "?";
}

std::string_view tmaSwizzleName(TmaSwizzle swizzle) {
  return nameIn(kTmaSwizzles, swizzle);
}

std::string_view tmaOobFillName(TmaOobFill fill) {
  return nameIn(kTmaOobFills, fill);
}

std::string_view tmaL2PromotionName(TmaL2Promotion promotion) {
  return nameIn(kTmaL2Promotions, promotion);
}

std::string manifestToJson(const PackageManifest &m) {
  using json::Value;
  Value root = Value::object();
  root.set("format", Value::number(m.formatVersion));
  root.set("name", Value::string(m.name));
  root.set("target", Value::string(m.target));
  if (!m.producer.empty())
    root.set("producer", Value::string(m.producer));
  Value dims = Value::array();
  for (const DimSpec &d : m.dims) {
    Value o = Value::object();
    o.set("name", Value::string(d.name));
    if (d.size)
      o.set("size", Value::number(static_cast<double>(*d.size)));
    dims.push(std::move(o));
  }
  root.set("dims", std::move(dims));
  Value args = Value::array();
  for (const ArgSpec &a : m.args) {
    Value o = Value::object();
    o.set("name", Value::string(a.name));
    o.set("kind", Value::string(kindName(a.kind)));
    o.set("dtype", Value::string(std::string(dtypeName(a.dtype))));
    if (a.kind == ArgKind::Param) {
      if (a.defaultValue)
        o.set("default", numberOrSpelling(*a.defaultValue));
    } else {
      Value axes = Value::array();
      for (const AxisSpec &ax : a.axes)
        axes.push(ax.isDim() ? Value::string(ax.dim)
                             : Value::number(static_cast<double>(ax.size)));
      o.set("axes", std::move(axes));
      o.set("layout", Value::string(layoutName(a.layout)));
      if (a.alignment)
        o.set("alignment", Value::number(static_cast<double>(a.alignment)));
    }
    args.push(std::move(o));
  }
  root.set("args", std::move(args));
  if (!m.constraints.empty()) {
    Value cs = Value::array();
    for (const std::string &c : m.constraints)
      cs.push(Value::string(c));
    root.set("constraints", std::move(cs));
  }
  if (!m.workspaces.empty()) {
    Value ws = Value::array();
    for (const WorkspaceSpec &w : m.workspaces) {
      Value o = Value::object();
      o.set("name", Value::string(w.name));
      o.set("bytes", Value::string(w.bytes));
      if (w.zeroed)
        o.set("zeroed", Value::boolean(true));
      if (w.tensor) {
        Value tensor = Value::object();
        tensor.set("dtype",
                   Value::string(std::string(dtypeName(w.tensor->dtype))));
        Value shape = Value::array();
        for (const std::string &axis : w.tensor->shape)
          shape.push(Value::string(axis));
        tensor.set("shape", std::move(shape));
        o.set("tensor", std::move(tensor));
      }
      ws.push(std::move(o));
    }
    root.set("workspaces", std::move(ws));
  }
  Value entries = Value::array();
  for (const EntrySpec &e : m.entries) {
    Value o = Value::object();
    o.set("name", Value::string(e.name));
    o.set("function", Value::string(e.function));
    o.set("module", Value::string(e.module));
    if (!e.when.empty())
      o.set("when", Value::string(e.when));
    if (e.fallback.size() == 1) {
      o.set("fallback", Value::string(e.fallback.front()));
    } else if (!e.fallback.empty()) {
      Value fallback = Value::array();
      for (const std::string &name : e.fallback)
        fallback.push(Value::string(name));
      o.set("fallback", std::move(fallback));
    }
    Value grid = Value::array();
    for (const std::string &g : e.grid)
      grid.push(Value::string(g));
    o.set("grid", std::move(grid));
    o.set("block", Value::array({Value::number(double(e.block[0])),
                                 Value::number(double(e.block[1])),
                                 Value::number(double(e.block[2]))}));
    o.set("shared_bytes", Value::number(static_cast<double>(e.sharedBytes)));
    if (e.persistentCtasPerSm)
      o.set("persistent",
            Value::number(static_cast<double>(e.persistentCtasPerSm)));
    Value params = Value::array();
    for (const ParamSlot &p : e.params) {
      Value s = Value::object();
      if (p.kind == ParamSlot::Kind::Const)
        s.set("const", Value::number(p.value));
      else
        s.set(slotKindName(p.kind), Value::string(p.arg));
      if (p.kind == ParamSlot::Kind::Stride || p.kind == ParamSlot::Kind::Size)
        s.set("axis", Value::number(static_cast<double>(p.axis)));
      if (p.kind == ParamSlot::Kind::Tma) {
        Value box = Value::array();
        for (int64_t b : p.tile.box)
          box.push(Value::number(static_cast<double>(b)));
        s.set("box", std::move(box));
        if (!p.tile.axes.empty()) {
          Value axes = Value::array();
          for (int64_t axis : p.tile.axes)
            axes.push(Value::number(static_cast<double>(axis)));
          s.set("axes", std::move(axes));
        }
        s.set("swizzle", Value::string(nameIn(kTmaSwizzles, p.tile.swizzle)));
        s.set("oob_fill", Value::string(nameIn(kTmaOobFills, p.tile.oobFill)));
        s.set("l2_promotion",
              Value::string(nameIn(kTmaL2Promotions, p.tile.l2Promotion)));
        if (p.tile.optional)
          s.set("optional", Value::boolean(true));
      }
      if (p.kind != ParamSlot::Kind::Ptr &&
          p.kind != ParamSlot::Kind::Workspace &&
          p.kind != ParamSlot::Kind::Tma)
        s.set("type", Value::string(std::string(slotTypeName(p.type))));
      params.push(std::move(s));
    }
    o.set("params", std::move(params));
    entries.push(std::move(o));
  }
  root.set("entries", std::move(entries));
  return json::write(root);
}

Status manifestFromJson(std::string_view text, PackageManifest &out) {
  out = PackageManifest();
  json::Value root;
  if (Status s = json::parse(text, root))
    return s.withContext("manifest");
  ObjectReader r(root, "manifest");
  if (Status s = r.checkIsObject())
    return s;
  int64_t format;
  if (Status s = r.integer("format", format))
    return s;
  if (format != kPackageFormatVersion)
    return invalidPackage("manifest: unsupported format " +
                          std::to_string(format) + " (this runtime reads " +
                          std::to_string(kPackageFormatVersion) + ")");
  out.formatVersion = static_cast<int>(format);
  if (Status s = r.string("name", out.name))
    return s;
  if (Status s = r.string("target", out.target))
    return s;
  if (Status s = r.string("producer", out.producer, false))
    return s;
  const json::Value *dims, *args, *entries, *constraints, *workspaces;
  if (Status s = r.array("dims", dims))
    return s;
  for (size_t i = 0; i < dims->getArray().size(); ++i) {
    std::string path = "dims[" + std::to_string(i) + "]";
    ObjectReader d(dims->getArray()[i], path);
    if (Status s = d.checkIsObject())
      return s;
    DimSpec dim;
    if (Status s = d.string("name", dim.name))
      return s;
    if (d.field("size")) {
      int64_t size;
      if (Status s = d.integer("size", size))
        return s;
      dim.size = size;
    }
    if (Status s = d.finish())
      return s;
    out.dims.push_back(std::move(dim));
  }
  if (Status s = r.array("args", args))
    return s;
  for (size_t i = 0; i < args->getArray().size(); ++i) {
    ArgSpec arg;
    if (Status s = readArg(args->getArray()[i],
                           "args[" + std::to_string(i) + "]", arg))
      return s;
    out.args.push_back(std::move(arg));
  }
  if (Status s = r.array("constraints", constraints, false))
    return s;
  if (constraints) {
    for (size_t i = 0; i < constraints->getArray().size(); ++i) {
      if (!constraints->getArray()[i].isString())
        return invalidPackage("manifest: constraints[" + std::to_string(i) +
                              "] must be a string");
      out.constraints.push_back(constraints->getArray()[i].getString());
    }
  }
  if (Status s = r.array("workspaces", workspaces, false))
    return s;
  if (workspaces) {
    for (size_t i = 0; i < workspaces->getArray().size(); ++i) {
      ObjectReader w(workspaces->getArray()[i],
                     "workspaces[" + std::to_string(i) + "]");
      if (Status s = w.checkIsObject())
        return s;
      WorkspaceSpec ws;
      if (Status s = w.string("name", ws.name))
        return s;
      if (Status s = w.string("bytes", ws.bytes))
        return s;
      if (Status s = w.boolean("zeroed", ws.zeroed, /*required=*/false))
        return s;
      if (const json::Value *tensor = w.field("tensor")) {
        ObjectReader t(*tensor, w.getPath() + ".tensor");
        if (Status s = t.checkIsObject())
          return s;
        ws.tensor.emplace();
        if (Status s = readDType(t, ws.tensor->dtype))
          return s;
        const json::Value *shape;
        if (Status s = t.array("shape", shape))
          return s;
        for (size_t k = 0; k < shape->getArray().size(); ++k) {
          if (!shape->getArray()[k].isString())
            return invalidPackage("manifest: " + t.getPath() + ".shape[" +
                                  std::to_string(k) + "] must be a formula");
          ws.tensor->shape.push_back(shape->getArray()[k].getString());
        }
        if (Status s = t.finish())
          return s;
      }
      if (Status s = w.finish())
        return s;
      out.workspaces.push_back(std::move(ws));
    }
  }
  if (Status s = r.array("entries", entries))
    return s;
  for (size_t i = 0; i < entries->getArray().size(); ++i) {
    EntrySpec e;
    if (Status s = readEntry(entries->getArray()[i],
                             "entries[" + std::to_string(i) + "]", e))
      return s;
    out.entries.push_back(std::move(e));
  }
  return r.finish();
}

//===-- Validation --------------------------------------------------------===//

int Package::findDim(std::string_view name) const {
  for (size_t i = 0; i < manifest.dims.size(); ++i)
    if (manifest.dims[i].name == name)
      return static_cast<int>(i);
  return -1;
}

int Package::findArg(std::string_view name) const {
  for (size_t i = 0; i < manifest.args.size(); ++i)
    if (manifest.args[i].name == name)
      return static_cast<int>(i);
  return -1;
}

int Package::findWorkspace(std::string_view name) const {
  for (size_t i = 0; i < manifest.workspaces.size(); ++i)
    if (manifest.workspaces[i].name == name)
      return static_cast<int>(i);
  return -1;
}

const ModuleBlob *Package::findModule(std::string_view name) const {
  for (const ModuleBlob &m : modules)
    if (m.name == name)
      return &m;
  return nullptr;
}

bool Package::usesTma(size_t e) const {
  return hasTmaSlots(manifest.entries[e]);
}

int Package::tmaWorkspace(const ParamSlot &slot) const {
  return findArg(slot.arg) >= 0 ? -1 : findWorkspace(slot.arg);
}

/// What cuTensorMapEncodeTiled demands of a tile that is known before
/// launch: the tensor's rank and dtype, the box, and the swizzle that must
/// hold the box's inner extent. What depends on the launch's tensors is
/// checked at launch (cuda/TensorMap.h).
static std::string checkTmaTile(const ParamSlot &p, const ArgSpec *arg) {
  if (!arg || arg->kind == ArgKind::Param)
    return "'" + p.arg + "' is not a tensor argument";
  if (p.type != SlotType::TensorMap)
    return "a tma slot must have type tmap";
  size_t rank = arg->axes.size();
  if (!p.tile.axes.empty()) {
    // Every axis of the tensor once, in order, the innermost last.
    int64_t next = 0;
    for (int64_t axis : p.tile.axes) {
      if (axis == -1)
        continue;
      if (axis != next)
        return "axes must name each axis of '" + arg->name +
               "' once, in order (-1: an axis of extent 1)";
      ++next;
    }
    if (next != static_cast<int64_t>(rank) || p.tile.axes.back() == -1)
      return "axes must name each axis of '" + arg->name +
             "' once, in order, its innermost last";
    rank = p.tile.axes.size();
  }
  if (rank < 1 || rank > kMaxTmaRank)
    return "TMA loads tensors of rank 1 to " + std::to_string(kMaxTmaRank) +
           ", '" + arg->name + "' has rank " + std::to_string(rank);
  std::string dtype(dtypeName(arg->dtype));
  if (!isTmaDType(arg->dtype))
    return "TMA does not load " + dtype + " tensors ('" + arg->name + "')";
  const std::vector<int64_t> &box = p.tile.box;
  if (box.size() != rank)
    return "box has " + std::to_string(box.size()) + " sizes, but '" +
           arg->name + "' has rank " + std::to_string(rank) +
           (p.tile.axes.empty() ? "" : " as its axes map it");
  for (size_t k = 0; k < rank; ++k)
    if (box[k] < 1 || box[k] > kMaxTmaBox)
      return "box[" + std::to_string(k) + "] = " + std::to_string(box[k]) +
             " is outside [1, " + std::to_string(kMaxTmaBox) + "]";
  int64_t innerBytes = box.back() * static_cast<int64_t>(dtypeSize(arg->dtype));
  std::string inner = "the box's inner extent, " + std::to_string(box.back()) +
                      " " + dtype + " = " + std::to_string(innerBytes) +
                      " bytes,";
  if (innerBytes % 16 != 0)
    return inner + " is not a multiple of 16 bytes";
  int64_t span = swizzleSpan(p.tile.swizzle);
  if (span && innerBytes > span)
    return inner + " exceeds the " + tmaSwizzleName(p.tile.swizzle).data() +
           " swizzle span";
  if (p.tile.oobFill == TmaOobFill::Nan && !isFloatDType(arg->dtype))
    return "oob_fill nan needs a floating-point tensor, '" + arg->name +
           "' is " + dtype;
  return "";
}

/// Whether PTX text declares `.entry name` (followed by '(' or space).
static bool ptxHasEntry(const std::string &ptx, const std::string &name) {
  std::string needle = ".entry " + name;
  for (size_t pos = ptx.find(needle); pos != std::string::npos;
       pos = ptx.find(needle, pos + 1)) {
    size_t end = pos + needle.size();
    if (end == ptx.size() || ptx[end] == '(' || ptx[end] == ' ' ||
        ptx[end] == '\n' || ptx[end] == '\t' || ptx[end] == '\r')
      return true;
  }
  return false;
}

Status validatePackage(const PackageManifest &m,
                       std::vector<ModuleBlob> modules, Package &out) {
  out = Package();
  auto fail = [](const std::string &msg) {
    return invalidPackage("package: " + msg);
  };
  if (m.formatVersion != kPackageFormatVersion)
    return fail("unsupported format " + std::to_string(m.formatVersion));
  if (!isIdentifier(m.name))
    return fail("kernel name '" + m.name + "' is not an identifier");
  if (!isTarget(m.target))
    return fail("target '" + m.target + "' is not of the form sm_NN or sm_NNa");

  std::set<std::string> names;
  std::vector<std::string> dimNames;
  for (const DimSpec &d : m.dims) {
    if (!isIdentifier(d.name))
      return fail("dim name '" + d.name + "' is not an identifier");
    if (!names.insert(d.name).second)
      return fail("duplicate name '" + d.name + "'");
    if (d.size && *d.size < 0)
      return fail("dim '" + d.name + "' has negative size");
    dimNames.push_back(d.name);
  }
  std::set<std::string> boundDims;
  for (const ArgSpec &a : m.args) {
    if (!isIdentifier(a.name))
      return fail("argument name '" + a.name + "' is not an identifier");
    if (!names.insert(a.name).second)
      return fail("duplicate name '" + a.name + "'");
    if (a.kind == ArgKind::Param) {
      if (!a.axes.empty())
        return fail("param '" + a.name + "' has axes");
      if (a.defaultValue && isIntegerDType(a.dtype) &&
          !fitsIntegerDType(*a.defaultValue, a.dtype))
        return fail("param '" + a.name + "': default is not a valid " +
                    std::string(dtypeName(a.dtype)));
      continue;
    }
    if (a.axes.size() > kMaxRank)
      return fail("tensor '" + a.name + "' has rank over 8");
    for (const AxisSpec &ax : a.axes) {
      if (ax.isDim()) {
        bool known = false;
        for (const std::string &d : dimNames)
          known |= d == ax.dim;
        if (!known)
          return fail("tensor '" + a.name + "': unknown dim '" + ax.dim + "'");
        boundDims.insert(ax.dim);
      } else if (ax.size < 0) {
        return fail("tensor '" + a.name + "' has a negative axis size");
      }
    }
    if (a.alignment < 0 || a.alignment > 4096 ||
        (a.alignment & (a.alignment - 1)) != 0)
      return fail("tensor '" + a.name +
                  "': alignment must be 0 or a power of two up to 4096");
  }
  for (const DimSpec &d : m.dims)
    if (!d.size && !boundDims.count(d.name))
      return fail("dim '" + d.name +
                  "' is symbolic but no tensor has it, so it cannot be bound");

  for (const std::string &c : m.constraints) {
    DimExpr e;
    if (Status s = DimExpr::parse(c, dimNames, e))
      return s.withContext("package: constraint");
    out.constraintExprs.push_back(std::move(e));
  }

  std::set<std::string> workspaceNames;
  for (const WorkspaceSpec &w : m.workspaces) {
    if (!isIdentifier(w.name))
      return fail("workspace name '" + w.name + "' is not an identifier");
    if (!workspaceNames.insert(w.name).second)
      return fail("duplicate workspace '" + w.name + "'");
    if (names.count(w.name))
      return fail("workspace '" + w.name +
                  "' has the name of a dim or argument");
    DimExpr e;
    if (Status s = DimExpr::parse(w.bytes, dimNames, e))
      return s.withContext("package: workspace '" + w.name + "': bytes");
    out.workspaceExprs.push_back(std::move(e));
    std::optional<ArgSpec> tensor;
    std::vector<DimExpr> shape;
    if (w.tensor) {
      tensor.emplace();
      tensor->name = w.name;
      tensor->dtype = w.tensor->dtype;
      for (const std::string &axis : w.tensor->shape) {
        tensor->axes.push_back(AxisSpec::ofDim(axis));
        if (Status s = DimExpr::parse(axis, dimNames, shape.emplace_back()))
          return s.withContext("package: workspace '" + w.name +
                               "': tensor shape");
      }
    }
    out.workspaceTensors.push_back(std::move(tensor));
    out.workspaceShapeExprs.push_back(std::move(shape));
  }

  std::set<std::string> moduleNames;
  for (const ModuleBlob &mod : modules) {
    if (!isIdentifier(mod.name))
      return fail("module name '" + mod.name + "' is not an identifier");
    if (!moduleNames.insert(mod.name).second)
      return fail("duplicate module '" + mod.name + "'");
    if (mod.bytes.empty())
      return fail("module '" + mod.name + "' is empty");
    if (mod.format == ModuleFormat::Ptx &&
        mod.bytes.find('\0') != std::string::npos)
      return fail("PTX module '" + mod.name + "' contains a NUL byte");
  }

  if (m.entries.empty())
    return fail("no entries");
  std::set<std::string> entryNames;
  for (const EntrySpec &e : m.entries) {
    std::string where = "entry '" + e.name + "'";
    if (!isIdentifier(e.name))
      return fail("entry name '" + e.name + "' is not an identifier");
    if (!entryNames.insert(e.name).second)
      return fail("duplicate entry '" + e.name + "'");
    if (!isIdentifier(e.function))
      return fail(where + ": function '" + e.function +
                  "' is not an identifier");
    const ModuleBlob *mod = nullptr;
    for (const ModuleBlob &b : modules)
      if (b.name == e.module)
        mod = &b;
    if (!mod)
      return fail(where + ": no module '" + e.module + "'");
    if (mod->format == ModuleFormat::Ptx &&
        !ptxHasEntry(mod->bytes, e.function))
      return fail(where + ": PTX module '" + e.module + "' has no .entry " +
                  e.function);
    if (e.grid.empty() || e.grid.size() > 3)
      return fail(where + ": grid must have 1 to 3 formulas");
    std::vector<DimExpr> grid;
    for (const std::string &g : e.grid) {
      DimExpr expr;
      if (Status s = DimExpr::parse(g, dimNames, expr))
        return s.withContext("package: " + where + ": grid");
      grid.push_back(std::move(expr));
    }
    out.gridExprs.push_back(std::move(grid));
    std::optional<DimExpr> when;
    if (!e.when.empty()) {
      when.emplace();
      if (Status s = DimExpr::parse(e.when, dimNames, *when))
        return s.withContext("package: " + where + ": when");
    }
    out.whenExprs.push_back(std::move(when));
    int64_t threads = 1;
    for (int64_t b : e.block) {
      if (b < 1 || b > 1024)
        return fail(where + ": block sizes must be in [1, 1024]");
      threads *= b;
    }
    if (threads > 1024)
      return fail(where + ": block has more than 1024 threads");
    if (e.sharedBytes < 0 || e.sharedBytes > kMaxSharedBytes)
      return fail(where + ": shared_bytes must be in [0, " +
                  std::to_string(kMaxSharedBytes) + "]");
    if (e.persistentCtasPerSm < 0 ||
        e.persistentCtasPerSm > kMaxPersistentCtasPerSm)
      return fail(where + ": persistent must be in [0, " +
                  std::to_string(kMaxPersistentCtasPerSm) + "] CTAs per SM");
    int64_t paramBytes = 0;
    std::vector<std::optional<DimExpr>> slotExprs(e.params.size());
    for (size_t i = 0; i < e.params.size(); ++i) {
      const ParamSlot &p = e.params[i];
      std::string slot = where + ": params[" + std::to_string(i) + "]";
      const ArgSpec *arg = nullptr;
      for (const ArgSpec &a : m.args)
        if (a.name == p.arg)
          arg = &a;
      switch (p.kind) {
      case ParamSlot::Kind::Ptr:
      case ParamSlot::Kind::Stride:
      case ParamSlot::Kind::Size:
        if (!arg || arg->kind == ArgKind::Param)
          return fail(slot + ": '" + p.arg + "' is not a tensor argument");
        if (p.kind == ParamSlot::Kind::Ptr && p.type != SlotType::Ptr)
          return fail(slot + ": a ptr slot must have type ptr");
        if (p.kind != ParamSlot::Kind::Ptr &&
            (p.axis < 0 || p.axis >= static_cast<int64_t>(arg->axes.size())))
          return fail(slot + ": axis " + std::to_string(p.axis) +
                      " out of range for '" + p.arg + "'");
        break;
      case ParamSlot::Kind::Dim:
        if (std::find(dimNames.begin(), dimNames.end(), p.arg) ==
            dimNames.end())
          return fail(slot + ": unknown dim '" + p.arg + "'");
        break;
      case ParamSlot::Kind::Param:
        if (!arg || arg->kind != ArgKind::Param)
          return fail(slot + ": '" + p.arg + "' is not a param");
        break;
      case ParamSlot::Kind::Const:
        if (!std::isfinite(p.value) &&
            (p.type != SlotType::F32 && p.type != SlotType::F64))
          return fail(slot + ": non-finite integer constant");
        break;
      case ParamSlot::Kind::Workspace:
        if (!workspaceNames.count(p.arg))
          return fail(slot + ": unknown workspace '" + p.arg + "'");
        if (p.type != SlotType::Ptr)
          return fail(slot + ": a workspace slot must have type ptr");
        break;
      case ParamSlot::Kind::Expr:
        slotExprs[i].emplace();
        if (Status s = DimExpr::parse(p.arg, dimNames, *slotExprs[i]))
          return s.withContext("package: " + slot + ": expr");
        break;
      case ParamSlot::Kind::Tma: {
        // A tensor argument, or else a workspace's tensor.
        for (size_t w = 0; !arg && w < m.workspaces.size(); ++w) {
          if (m.workspaces[w].name != p.arg)
            continue;
          if (!out.workspaceTensors[w])
            return fail(slot + ": workspace '" + p.arg +
                        "' declares no tensor for a tensor map");
          arg = &*out.workspaceTensors[w];
        }
        std::string error = checkTmaTile(p, arg);
        if (!error.empty())
          return fail(slot + ": " + error);
        break;
      }
      }
      if (p.kind != ParamSlot::Kind::Ptr && p.kind != ParamSlot::Kind::Param &&
          p.kind != ParamSlot::Kind::Workspace && p.type == SlotType::Ptr)
        return fail(slot + ": only ptr and workspace slots may have type ptr");
      if (p.kind != ParamSlot::Kind::Tma && p.type == SlotType::TensorMap)
        return fail(slot + ": only tma slots may have type tmap");
      // Upper bounds including alignment padding: 8 bytes for a scalar, a
      // tensor map 64-aligned.
      if (p.type == SlotType::TensorMap)
        paramBytes = (paramBytes + 63) / 64 * 64 + 128;
      else
        paramBytes += 8;
    }
    if (paramBytes > kMaxParamBytes)
      return fail(where + ": kernel parameters exceed 4096 bytes");
    out.slotExprs.push_back(std::move(slotExprs));
  }

  // A fallback is a sequence of plain stand-ins for one entry: they run,
  // in order, where that entry would, when that entry does.
  out.fallbackOf.assign(m.entries.size(), {});
  out.standsInFor.assign(m.entries.size(), -1);
  for (size_t e = 0; e < m.entries.size(); ++e) {
    const EntrySpec &entry = m.entries[e];
    std::string where = "entry '" + entry.name + "'";
    for (const std::string &name : entry.fallback) {
      int f = -1;
      for (size_t k = 0; k < m.entries.size(); ++k)
        if (m.entries[k].name == name)
          f = static_cast<int>(k);
      if (f < 0)
        return fail(where + ": no fallback entry '" + name + "'");
      if (static_cast<size_t>(f) == e)
        return fail(where + " is its own fallback");
      const EntrySpec &stand = m.entries[static_cast<size_t>(f)];
      std::string fallback = where + ": fallback '" + stand.name + "'";
      if (!stand.fallback.empty())
        return fail(fallback + " has a fallback of its own");
      if (hasTmaSlots(stand))
        return fail(fallback + " has tma slots");
      if (!stand.when.empty())
        return fail(fallback + " has a when of its own (it runs when '" +
                    entry.name + "' does)");
      if (out.standsInFor[static_cast<size_t>(f)] == static_cast<int>(e))
        return fail(where + " names its fallback '" + stand.name + "' twice");
      if (int other = out.standsInFor[static_cast<size_t>(f)]; other >= 0)
        return fail("entry '" + stand.name + "' is the fallback of both '" +
                    m.entries[static_cast<size_t>(other)].name + "' and '" +
                    entry.name + "'");
      out.fallbackOf[e].push_back(static_cast<size_t>(f));
      out.standsInFor[static_cast<size_t>(f)] = static_cast<int>(e);
    }
  }
  out.manifest = m;
  // A param slot without an explicit type takes the param's own type.
  for (EntrySpec &e : out.manifest.entries) {
    for (ParamSlot &p : e.params) {
      if (p.kind != ParamSlot::Kind::Param || p.type != SlotType::Ptr)
        continue;
      DType t = out.manifest.args[out.findArg(p.arg)].dtype;
      p.type = t == DType::F64     ? SlotType::F64
               : t == DType::I64   ? SlotType::I64
               : isIntegerDType(t) ? SlotType::I32
                                   : SlotType::F32;
    }
  }
  out.modules = std::move(modules);
  return Status::ok();
}

} // namespace attn
