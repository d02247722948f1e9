//===- PackageFile.cpp - The .attnpkg container ---------------------------===//
//
// Layout (see runtime/README.md):
//
//   attnpkg 1\n
//   manifest <N>\n <N bytes of JSON>\n
//   module <name> ptx|cubin <N>\n <N bytes>\n      (any number)
//   end <16 lowercase hex digits: FNV-1a 64 of every byte before "end">\n
//
// Sections are length-prefixed so that binary cubins fit, and the checksum
// turns any truncation or flipped byte into a clear error.
//
//===----------------------------------------------------------------------===//

#include "attn/Runtime/Package.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace attn {

namespace {

constexpr uint64_t kMaxSectionBytes = uint64_t(1) << 31;
constexpr size_t kMaxModules = 64;

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(v));
  return buf;
}

/// A cursor over the file bytes; every read is bounds checked.
class Reader {
public:
  explicit Reader(std::string_view bytes) : bytes(bytes) {}

  size_t offset() const { return pos; }
  bool atEnd() const { return pos >= bytes.size(); }

  /// Reads up to (not including) the next '\n' and consumes it. Lines are
  /// limited to 256 bytes: a header line never needs more.
  Status line(std::string_view &out) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string_view::npos)
      return error("truncated (no end of line)");
    if (end - pos > 256)
      return error("header line too long");
    out = bytes.substr(pos, end - pos);
    pos = end + 1;
    return Status::ok();
  }

  Status take(uint64_t n, std::string_view &out) {
    if (n > bytes.size() - pos)
      return error("truncated: section declares " + std::to_string(n) +
                   " bytes, " + std::to_string(bytes.size() - pos) + " remain");
    out = bytes.substr(pos, n);
    pos += n;
    if (pos >= bytes.size() || bytes[pos] != '\n')
      return error("section not followed by a newline");
    ++pos;
    return Status::ok();
  }

  Status error(const std::string &what) const {
    return invalidPackage("package at byte " + std::to_string(pos) + ": " +
                          what);
  }

  std::string_view prefix(size_t end) const { return bytes.substr(0, end); }

private:
  std::string_view bytes;
  size_t pos = 0;
};

/// Splits a header line into space-separated words.
std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < line.size()) {
    size_t end = line.find(' ', pos);
    if (end == std::string_view::npos)
      end = line.size();
    out.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

/// A decimal size without sign or leading zeros (so each size has one
/// spelling and the checksum covers a canonical form).
bool parseSize(std::string_view s, uint64_t &out) {
  if (s.empty() || s.size() > 12 || (s.size() > 1 && s[0] == '0'))
    return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9')
      return false;
    out = out * 10 + static_cast<uint64_t>(c - '0');
  }
  return out <= kMaxSectionBytes;
}

} // namespace

Status PackageWriter::serialize(std::string &out) const {
  Package validated;
  if (Status s = validatePackage(manifest, modules, validated))
    return s;
  std::string manifestText = manifestToJson(validated.manifest);
  out = "attnpkg " + std::to_string(kPackageFormatVersion) + "\n";
  out += "manifest " + std::to_string(manifestText.size()) + "\n";
  out += manifestText + "\n";
  for (const ModuleBlob &m : validated.modules) {
    out += "module " + m.name +
           (m.format == ModuleFormat::Ptx ? " ptx " : " cubin ") +
           std::to_string(m.bytes.size()) + "\n";
    out += m.bytes;
    out += "\n";
  }
  out += "end " + hex64(fnv1a64(out)) + "\n";
  return Status::ok();
}

Status PackageWriter::writeFile(const std::string &path) const {
  std::string bytes;
  if (Status s = serialize(bytes))
    return s;
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f)
      return Status(ATTNC_ERROR_IO, "cannot write '" + tmp + "'");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f)
      return Status(ATTNC_ERROR_IO, "error writing '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status(ATTNC_ERROR_IO,
                  "cannot rename '" + tmp + "' to '" + path + "'");
  }
  return Status::ok();
}

Status readPackage(std::string_view bytes, Package &out) {
  Reader r(bytes);
  std::string_view line;
  if (bytes.substr(0, 8) != "attnpkg ")
    return invalidPackage("not an attnc package (it does not start with "
                          "'attnpkg')");
  if (Status s = r.line(line))
    return s;
  std::string_view version = line.substr(8);
  if (version != std::to_string(kPackageFormatVersion))
    return invalidPackage("unsupported package version '" +
                          std::string(version) + "' (this runtime reads " +
                          std::to_string(kPackageFormatVersion) + ")");

  std::string_view manifestText;
  bool haveManifest = false;
  std::vector<ModuleBlob> modules;
  while (true) {
    size_t lineStart = r.offset();
    if (r.atEnd())
      return r.error("truncated (no 'end' line)");
    if (Status s = r.line(line))
      return s;
    std::vector<std::string_view> w = words(line);
    if (w.empty())
      return r.error("empty header line");
    if (w[0] == "end") {
      if (w.size() != 2 || w[1].size() != 16)
        return r.error("malformed 'end' line");
      if (!r.atEnd())
        return r.error("bytes after the 'end' line");
      std::string expected = hex64(fnv1a64(r.prefix(lineStart)));
      if (w[1] != expected)
        return invalidPackage("package checksum mismatch: the file is "
                              "corrupt (expected " +
                              expected + ", file says " + std::string(w[1]) +
                              ")");
      break;
    }
    if (w[0] == "manifest") {
      uint64_t n;
      if (w.size() != 2 || !parseSize(w[1], n))
        return r.error("malformed 'manifest' line");
      if (haveManifest)
        return r.error("second manifest section");
      if (Status s = r.take(n, manifestText))
        return s;
      haveManifest = true;
      continue;
    }
    if (w[0] == "module") {
      uint64_t n;
      if (w.size() != 4 || (w[2] != "ptx" && w[2] != "cubin") ||
          !parseSize(w[3], n))
        return r.error("malformed 'module' line");
      if (modules.size() >= kMaxModules)
        return r.error("too many modules");
      std::string_view body;
      if (Status s = r.take(n, body))
        return s;
      modules.push_back(
          {std::string(w[1]),
           w[2] == "ptx" ? ModuleFormat::Ptx : ModuleFormat::Cubin,
           std::string(body)});
      continue;
    }
    return r.error("unknown section '" + std::string(w[0]) + "'");
  }
  if (!haveManifest)
    return invalidPackage("package has no manifest section");
  PackageManifest manifest;
  if (Status s = manifestFromJson(manifestText, manifest))
    return s;
  return validatePackage(manifest, std::move(modules), out);
}

Status readPackageFile(const std::string &path, Package &out) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return Status(ATTNC_ERROR_IO, "cannot open package '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad())
    return Status(ATTNC_ERROR_IO, "error reading package '" + path + "'");
  return readPackage(ss.str(), out).withContext(path);
}

} // namespace attn
