"""Damages every entry of an attnc object cache directory.

Usage: damage-cache.py DIR flip|truncate
  flip      inverts one byte in the middle of the object (checksum mismatch)
  truncate  drops the last 100 bytes (size mismatch)
Exits non-zero when DIR holds no entry, so a test cannot pass vacuously.
"""
import glob
import os
import sys

directory, how = sys.argv[1], sys.argv[2]
entries = glob.glob(os.path.join(directory, "*.o"))
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
