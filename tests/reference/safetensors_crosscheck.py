"""Cross-checks dsv3's safetensors reader and writer against an independent implementation of the
format written here from its description (the `safetensors` package is not installed): json +
struct + numpy, with torch 1.13 for the BF16/F16 reference conversions.

  safetensors_crosscheck.py DIR check FILE CRC32C
      Reads FILE (written by dsv3's SafetensorsWriter, see safetensors_test.cc) with the reader
      below, checks the layout rules and every tensor's bytes and values against the formulas the
      C++ test used, and the file's CRC32C (computed bit by bit here) against CRC32C (8 hex digits).
  safetensors_crosscheck.py DIR write
      Writes DIR/python.safetensors the way the reference implementation lays files out (tensors
      sorted by element size, largest first, then by name; header padded with spaces), holding the
      tensors listed in write_file() below, for dsv3's reader.
Exit code 0 on success; a failed check raises (exit 1) with a message.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

DTYPES = ["BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16", "BF16", "I32", "U32",
          "F32", "I64", "U64", "F64"]
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
NUMPY = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "F8_E4M3": np.uint8,
         "F8_E5M2": np.uint8, "I16": np.int16, "U16": np.uint16, "F16": np.uint16,
         "BF16": np.uint16, "I32": np.int32, "U32": np.uint32, "F32": np.float32,
         "I64": np.int64, "U64": np.uint64, "F64": np.float64}


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def read_file(path):
    """Returns (metadata, {name: (dtype, shape, bytes)}), checking the format's rules."""
    with open(path, "rb") as f:
        blob = f.read()
    assert len(blob) >= 8, "shorter than the header length"
    (n,) = struct.unpack("<Q", blob[:8])
    assert 8 + n <= len(blob), f"header length {n} runs past the end ({len(blob)} bytes)"
    header_bytes = blob[8:8 + n]
    assert header_bytes[:1] == b"{", "header does not start with '{'"
    text = header_bytes.decode("utf-8")
    pairs_seen = []

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
        pairs_seen.append(keys)
        return dict(pairs)

    header = json.loads(text, object_pairs_hook=no_duplicates)
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()), metadata
    tensors = {}
    spans = []
    for name, entry in header.items():
        assert set(entry) == {"dtype", "shape", "data_offsets"}, (name, entry)
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        assert dtype in SIZES, (name, dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        assert end - begin == count * SIZES[dtype], (name, dtype, shape, begin, end)
        spans.append((begin, end, name))
        tensors[name] = (dtype, list(shape), data[begin:end])
    spans.sort()
    position = 0
    for begin, end, name in spans:
        assert begin == position, f"tensor {name} begins at {begin}, expected {position}"
        position = end
    assert position == len(data), f"data section has {len(data)} bytes, tensors cover {position}"
    return metadata, tensors, n


def as_array(dtype, shape, raw):
    return np.frombuffer(raw, dtype=np.dtype(NUMPY[dtype]).newbyteorder("<")).reshape(shape)


def check(path, want_crc):
    with open(path, "rb") as f:
        blob = f.read()
    got_crc = "%08x" % crc32c(blob)
    assert got_crc == want_crc, f"CRC32C of {path}: python {got_crc}, dsv3 {want_crc}"
    metadata, tensors, n = read_file(path)
    # dsv3 pads the header with spaces to a multiple of 8 bytes.
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    stripped = blob[8:8 + n].rstrip(b" ")
    assert stripped.endswith(b"}"), "header padding is not spaces after the JSON"
    assert metadata == {"step": "42", "note": "\u00fc \"quoted\""}, metadata
    # Data ordered by element size, largest first, so every tensor is aligned to its size.
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    by_offset = sorted(header.items(), key=lambda item: item[1]["data_offsets"])
    sizes = [SIZES[entry["dtype"]] for _, entry in by_offset]
    assert sizes == sorted(sizes, reverse=True), f"data not ordered largest element first: {sizes}"
    for name, entry in by_offset:
        begin = entry["data_offsets"][0]
        assert (8 + n + begin) % SIZES[entry["dtype"]] == 0, f"{name} is misaligned"
    # t.<DTYPE>: [3, 5], byte j = (j*131 + 17*index + 7) & 0xFF (BOOL: j % 3 == 0).
    for index, dtype in enumerate(DTYPES):
        got_dtype, shape, raw = tensors["t." + dtype]
        assert (got_dtype, shape) == (dtype, [3, 5]), ("t." + dtype, got_dtype, shape)
        size = 15 * SIZES[dtype]
        if dtype == "BOOL":
            want = bytes(1 if j % 3 == 0 else 0 for j in range(size))
        else:
            want = bytes((j * 131 + 17 * index + 7) & 0xFF for j in range(size))
        assert raw == want, f"t.{dtype}: bytes differ"
    # Values, interpreted little-endian.
    dtype, shape, raw = tensors["values.f32"]
    assert (dtype, shape) == ("F32", [2, 4])
    assert np.array_equal(as_array(dtype, shape, raw),
                          (np.arange(8, dtype=np.float32) * 0.25 - 1).reshape(2, 4))
    dtype, shape, raw = tensors["values.i64"]
    assert (dtype, shape) == ("I64", [3])
    k = np.arange(3, dtype=np.int64)
    assert np.array_equal(as_array(dtype, shape, raw), -(k * k) * 1000000007 + 3)
    dtype, shape, raw = tensors["values.bf16"]
    assert (dtype, shape) == ("BF16", [4])
    bits = torch.from_numpy(as_array(dtype, shape, raw).astype(np.int16).copy())
    assert torch.equal(bits.view(torch.bfloat16).float(), torch.tensor([1.0, -2.5, 0.0, 65280.0]))
    dtype, shape, raw = tensors["scalar"]
    assert (dtype, shape) == ("F64", []) and struct.unpack("<d", raw)[0] == 3.5, (dtype, shape)
    dtype, shape, raw = tensors["empty"]
    assert (dtype, shape, raw) == ("I32", [0, 7], b""), (dtype, shape, raw)
    dtype, shape, raw = tensors["\u00fcnicode.weight"]
    assert (dtype, shape) == ("U8", [1]) and raw == b"\x2a"
    assert len(tensors) == len(DTYPES) + 6, sorted(tensors)
    print(f"checked {len(tensors)} tensors, header {n} bytes, crc32c {got_crc}")


def decode_fp8(code, exponent_bits, mantissa_bits):
    bias = (1 << (exponent_bits - 1)) - 1
    sign = -1.0 if code & 0x80 else 1.0
    e = (code >> mantissa_bits) & ((1 << exponent_bits) - 1)
    m = code & ((1 << mantissa_bits) - 1)
    if exponent_bits == 4 and e == 15 and m == 7:
        return float("nan")
    if exponent_bits == 5 and e == 31:
        return float("nan") if m else sign * float("inf")
    if e == 0:
        return sign * (m / (1 << mantissa_bits)) * 2.0 ** (1 - bias)
    return sign * (1 + m / (1 << mantissa_bits)) * 2.0 ** (e - bias)


def write_file(path):
    g = torch.Generator().manual_seed(1234)
    specials = torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), float("nan"),
                             1e-40, -3e-39, 65504.0, 6e-8, 1e-5, 3.0e38, 1.0 / 3])
    base = torch.cat([specials, torch.randn(50, generator=g) * 10])
    bf16 = base.to(torch.bfloat16)
    f16 = base.to(torch.float16)
    codes = np.arange(256, dtype=np.uint8)
    k = np.arange(6)
    tensors = {
        # name: (dtype, shape, numpy array with the stored elements)
        "bf16": ("BF16", [64], bf16.view(torch.int16).numpy().view(np.uint16)),
        "bf16.as_f32": ("F32", [64], bf16.float().numpy()),
        "f16": ("F16", [64], f16.view(torch.int16).numpy().view(np.uint16)),
        "f16.as_f32": ("F32", [64], f16.float().numpy()),
        "e4m3": ("F8_E4M3", [16, 16], codes),
        "e4m3.as_f32": ("F32", [16, 16], np.array([decode_fp8(c, 4, 3) for c in codes], np.float32)),
        "e5m2": ("F8_E5M2", [256], codes),
        "e5m2.as_f32": ("F32", [256], np.array([decode_fp8(c, 5, 2) for c in codes], np.float32)),
        "f64": ("F64", [2, 3], (k * 0.125 - 0.5).astype(np.float64)),
        "f64.as_f32": ("F32", [2, 3], (k * 0.125 - 0.5).astype(np.float32)),
        "f32": ("F32", [2, 3], torch.arange(6, dtype=torch.float32).numpy() * 0.5 - 2),
        "i64": ("I64", [2, 3], torch.arange(6, dtype=torch.int64).numpy() * -3 - (1 << 40)),
        "i32": ("I32", [6], torch.arange(6, dtype=torch.int32).numpy() * -7),
        "i16": ("I16", [6], torch.arange(6, dtype=torch.int16).numpy() * -300),
        "i8": ("I8", [6], torch.arange(6, dtype=torch.int8).numpy() * -20),
        "u8": ("U8", [6], torch.arange(6, dtype=torch.uint8).numpy() * 40),
        "u16": ("U16", [6], (k * 10000).astype(np.uint16)),
        "u32": ("U32", [6], (k * 700000000).astype(np.uint32)),
        "u64": ("U64", [6], (k.astype(np.uint64) * np.uint64(3000000000000000000))),
        "bool": ("BOOL", [6], torch.tensor([True, False, False, True, True, False]).numpy()),
        "scalar": ("F32", [], np.array(3.5, np.float32)),
        "empty": ("F32", [0, 3], np.zeros((0, 3), np.float32)),
    }
    order = sorted(tensors, key=lambda name: (-SIZES[tensors[name][0]], name))
    header = {"__metadata__": {"format": "pt", "writer": "safetensors_crosscheck.py"}}
    chunks = []
    offset = 0
    for name in order:
        dtype, shape, array = tensors[name]
        raw = np.ascontiguousarray(array).astype(np.dtype(NUMPY[dtype]).newbyteorder("<"),
                                                 copy=False).tobytes()
        assert len(raw) == (int(np.prod(shape)) if shape else 1) * SIZES[dtype], name
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    print(f"wrote {len(tensors)} tensors to {path}")


def main():
    directory, mode = sys.argv[1], sys.argv[2]
    if mode == "check":
        check(os.path.join(directory, sys.argv[3]), sys.argv[4])
    elif mode == "write":
        write_file(os.path.join(directory, "python.safetensors"))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
