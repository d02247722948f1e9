//===- CompileRemarks.cpp - A compile's remarks, cached ------------------===//
//
// Serialized as one line per remark, "<anchor>\t<message>", with the
// message's backslashes, tabs and newlines escaped; anchor -1 means none.
//
//===----------------------------------------------------------------------===//

#include "CompileRemarks.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;

namespace attn {
namespace {

/// The module's ops in the order both sides of the cache walk them.
std::vector<Operation *> walkInOrder(ModuleOp module) {
  std::vector<Operation *> ops;
  module->walk<WalkOrder::PreOrder>([&](Operation *op) { ops.push_back(op); });
  return ops;
}

std::string escape(llvm::StringRef text) {
  std::string out;
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string unescape(llvm::StringRef text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    char next = text[++i];
    out += next == 't' ? '\t' : next == 'n' ? '\n' : next;
  }
  return out;
}

} // namespace

RemarkRecorder::RemarkRecorder(ModuleOp module)
    : handler(module->getContext(), [this](Diagnostic &diagnostic) {
        if (diagnostic.getSeverity() == DiagnosticSeverity::Remark) {
          std::optional<unsigned> anchor = findAnchor(diagnostic.getLocation());
          std::lock_guard<std::mutex> lock(mutex);
          remarks.emplace_back(anchor ? static_cast<int64_t>(*anchor) : -1,
                               diagnostic.str());
        }
        // Not handled here: the caller's handlers report it as before.
        return failure();
      }) {
  for (auto [ordinal, op] : llvm::enumerate(walkInOrder(module)))
    anchors.try_emplace(op->getLoc(), static_cast<unsigned>(ordinal));
}

std::optional<unsigned> RemarkRecorder::findAnchor(Location loc) const {
  if (auto it = anchors.find(loc); it != anchors.end())
    return it->second;
  // A remark on an op a pass built keeps the location of what it replaced,
  // maybe inside a fused or named location.
  if (auto fused = dyn_cast<FusedLoc>(loc))
    for (Location inner : fused.getLocations())
      if (std::optional<unsigned> anchor = findAnchor(inner))
        return anchor;
  if (auto name = dyn_cast<NameLoc>(loc))
    return findAnchor(name.getChildLoc());
  if (auto call = dyn_cast<CallSiteLoc>(loc))
    return findAnchor(call.getCallee());
  return std::nullopt;
}

std::string RemarkRecorder::serialize() const {
  std::lock_guard<std::mutex> lock(mutex);
  std::string text;
  for (const auto &[anchor, message] : remarks)
    text += std::to_string(anchor) + "\t" + escape(message) + "\n";
  return text;
}

void replayRemarks(ModuleOp module, llvm::StringRef notes) {
  if (notes.empty())
    return;
  std::vector<Operation *> ops = walkInOrder(module);
  llvm::SmallVector<llvm::StringRef> lines;
  notes.split(lines, '\n', /*MaxSplit=*/-1, /*KeepEmpty=*/false);
  for (llvm::StringRef line : lines) {
    auto [anchorText, message] = line.split('\t');
    int64_t anchor = -1;
    if (anchorText.getAsInteger(10, anchor))
      continue;
    Location loc = anchor >= 0 && static_cast<size_t>(anchor) < ops.size()
                       ? ops[anchor]->getLoc()
                       : module.getLoc();
    emitRemark(loc) << unescape(message);
  }
}

} // namespace attn
