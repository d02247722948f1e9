//===- Registration.cpp - Anchors the attn transformation library ---------===//
//
// The pass registration functions are generated inline in Passes.h; this
// file gives the library a translation unit of its own.
//
//===----------------------------------------------------------------------===//

#include "attn/Transforms/Passes.h"
