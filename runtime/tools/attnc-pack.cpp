//===- attnc-pack.cpp - Build a .attnpkg from a manifest and PTX ----------===//
//
// Packages normally come from `attnc compile`; this tool builds one from a
// hand-written JSON manifest and PTX or cubin files, for tests and for
// kernels written outside the compiler. It validates exactly as the loader
// does, so a package it writes always loads.
//
//===----------------------------------------------------------------------===//

#include "attn/Runtime/Package.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

using namespace attn;

static bool readFile(const std::string &path, std::string &out) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return false;
  std::stringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

static int fail(const std::string &msg) {
  std::fprintf(stderr, "attnc-pack: error: %s\n", msg.c_str());
  return 1;
}

int main(int argc, char **argv) {
  std::string manifestPath, outPath;
  std::vector<std::pair<std::string, std::string>> ptx, cubin;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc)
      return fail("option '" + a + "' needs a value");
    std::string v = argv[++i];
    if (a == "--manifest") {
      manifestPath = v;
    } else if (a == "-o") {
      outPath = v;
    } else if (a == "--ptx" || a == "--cubin") {
      size_t eq = v.find('=');
      if (eq == std::string::npos)
        return fail(a + " wants MODULE=FILE");
      (a == "--ptx" ? ptx : cubin)
          .push_back({v.substr(0, eq), v.substr(eq + 1)});
    } else {
      return fail("unknown option '" + a +
                  "'\nusage: attnc-pack --manifest M.json --ptx NAME=FILE.ptx "
                  "[--cubin NAME=FILE.cubin] -o OUT.attnpkg");
    }
  }
  if (manifestPath.empty() || outPath.empty())
    return fail("--manifest and -o are required");
  std::string text;
  if (!readFile(manifestPath, text))
    return fail("cannot read '" + manifestPath + "'");
  PackageManifest manifest;
  if (Status s = manifestFromJson(text, manifest))
    return fail(manifestPath + ": " + s.getMessage());
  PackageWriter writer(manifest);
  for (auto *list : {&ptx, &cubin}) {
    for (const auto &[name, path] : *list) {
      std::string bytes;
      if (!readFile(path, bytes))
        return fail("cannot read '" + path + "'");
      writer.addModule(
          name, list == &ptx ? ModuleFormat::Ptx : ModuleFormat::Cubin, bytes);
    }
  }
  if (Status s = writer.writeFile(outPath))
    return fail(s.getMessage());
  return 0;
}
