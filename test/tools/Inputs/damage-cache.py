"""Damages every entry of one kind in an attnc artifact cache directory.

Usage: damage-cache.py DIR flip|truncate [EXTENSION]
  EXTENSION .o (objects, the default) or .attnpkg (GPU packages)
  flip      inverts one byte in the middle of the payload (checksum mismatch)
  truncate  drops the last 100 bytes (size mismatch)
Exits non-zero when DIR holds no entry, so a test cannot pass vacuously.
"""
import glob
import os
import sys

directory, how = sys.argv[1], sys.argv[2]
extension = sys.argv[3] if len(sys.argv) > 3 else ".o"
entries = glob.glob(os.path.join(directory, "*" + extension))
if not entries:
    sys.exit("no cache entry in " + directory)
for path in entries:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-100:]
    with open(path, "wb") as f:
        f.write(bytes(data))
