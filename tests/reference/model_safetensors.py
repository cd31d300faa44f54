"""A small, self-contained reader and writer of the safetensors format (numpy arrays in and out).

The Debian interpreter (/usr/bin/python3) has no `safetensors` package, so the reference model uses
this. Format: 8-byte little-endian header length N, then N bytes of UTF-8 JSON
{name: {"dtype": D, "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the raw little-endian data; offsets are relative to the end of the header. Not here: memory
mapping, lazy loading, torch tensors (callers convert).
"""
import json
import struct

import numpy as np

# safetensors dtype name -> numpy dtype (little-endian). BF16 is handled apart (numpy has none).
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {(v.kind, v.itemsize): k for k, v in _DTYPES.items()}


def bf16_bits_to_float32(bits):
    """uint16 BF16 bit patterns -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def load(path):
    """Returns (tensors, metadata): an insertion-ordered dict name -> numpy array (BF16 tensors come
    back as float32, exactly) and the __metadata__ dict (empty if absent). Raises ValueError on a
    malformed file (bad header, overlapping or out-of-range offsets, size mismatch)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    # Sorted by offset so that overlap is easy to detect.
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    end_prev = 0
    for name, info in entries:
        dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        if begin < end_prev or end < begin or end > len(body):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets [{begin}, {end}]")
        end_prev = end
        count = int(np.prod(shape)) if shape else 1
        if dtype == "BF16":
            itemsize = 2
        elif dtype in _DTYPES:
            itemsize = _DTYPES[dtype].itemsize
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        if end - begin != count * itemsize:
            raise ValueError(f"{path}: tensor {name} of shape {shape} and dtype {dtype} needs "
                             f"{count * itemsize} bytes, has {end - begin}")
        raw = body[begin:end]
        if dtype == "BF16":
            arr = bf16_bits_to_float32(np.frombuffer(raw, dtype="<u2"))
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype]).copy()
        tensors[name] = arr.reshape(shape)
    # Restore the header's own order (json keeps it) for readability of callers' listings.
    ordered = {name: tensors[name] for name in header}
    return ordered, metadata


def save(path, tensors, metadata=None):
    """Writes a dict name -> numpy array (dtypes of _DTYPES) in the given order, each tensor
    C-contiguous little-endian, with an optional __metadata__ dict of str -> str."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        key = (arr.dtype.kind, arr.dtype.itemsize)
        if key not in _NAMES:
            raise ValueError(f"tensor {name}: dtype {arr.dtype} is not supported")
        dtype = _NAMES[key]
        blob = np.ascontiguousarray(arr, dtype=_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)  # align the data start to 8 bytes, as the library does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
