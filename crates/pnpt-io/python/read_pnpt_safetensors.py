"""Reads a pnpt artefact (a safetensors file) with the Python standard library alone.

Usage: python3 read_pnpt_safetensors.py FILE  -> JSON on stdout:
  {"digest_ok": bool, "metadata": {...}, "tensors": {name: {"dtype", "shape", "values"}}}

Layout (safetensors): 8-byte little-endian header length n, n bytes of JSON, then the data.
`pnpt.sha256` in `__metadata__` is the SHA-256 of the file with its own 64 hex digits set to "0".
"""
import hashlib
import json
import struct
import sys

raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__")
digest = meta["pnpt.sha256"]
at = raw.index(('"%s"' % digest).encode(), 8, 8 + n) + 1
zeroed = raw[:at] + b"0" * 64 + raw[at + 64:]
tensors = {}
for name, info in header.items():
    start, end = info["data_offsets"]
    data = raw[8 + n + start:8 + n + end]
    if info["dtype"] == "F32":
        values = list(struct.unpack("<%df" % (len(data) // 4), data))
    else:
        values = list(data)
    tensors[name] = {"shape": info["shape"], "dtype": info["dtype"], "values": values}
print(json.dumps({
    "digest_ok": hashlib.sha256(zeroed).hexdigest() == digest,
    "metadata": meta,
    "tensors": tensors,
}))
