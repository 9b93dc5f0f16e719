"""TensorFlow V2 checkpoint bundles (``name.index`` + ``name.data-0000k-of-0000n``) without TensorFlow.

The ``.index`` is a LevelDB-format table (no compression) mapping each variable name to a
``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c); the key ``""`` holds the
``BundleHeaderProto``. Tensors are raw little-endian C-order bytes in the data shards. Only the
parts of the public formats needed for float/int variables are implemented; every CRC is checked.
``write_bundle`` produces the same on-disk format (used by the tests and for round trips).
"""
from __future__ import annotations

import os
import struct
from typing import Dict, List, Tuple

import numpy as np

from ..errors import CheckpointError

TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
FOOTER_SIZE = 48
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 19: np.float16}
DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


# --------------------------------------------------------------------------- CRC32C (Castagnoli)
def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _crc_table()
_CHUNK = 4096


def _shift_matrix(nbytes: int) -> List[int]:
    """Columns of the GF(2) map 'state -> state after nbytes zero bytes' (the CRC is linear)."""
    cols = []
    for bit in range(32):
        s = 1 << bit
        for _ in range(nbytes):
            s = int(_TABLE[s & 0xFF]) ^ (s >> 8)
        cols.append(s)
    return cols


_SHIFT_CHUNK = None


def _apply(cols: List[int], s: int) -> int:
    out, bit = 0, 0
    while s:
        if s & 1:
            out ^= cols[bit]
        s >>= 1
        bit += 1
    return out


def _update_serial(state: int, data: bytes) -> int:
    table = _TABLE
    for b in data:
        state = int(table[(state ^ b) & 0xFF]) ^ (state >> 8)
    return state


def crc32c(data) -> int:
    """CRC-32C of ``data``. Large buffers are split into 4 KiB chunks processed in parallel with
    NumPy and combined through the CRC's linearity, so a 15 MB shard takes well under a second."""
    global _SHIFT_CHUNK
    buf = np.frombuffer(memoryview(data), dtype=np.uint8)
    n_full = len(buf) // _CHUNK
    state = 0xFFFFFFFF
    if n_full >= 4:
        if _SHIFT_CHUNK is None:
            _SHIFT_CHUNK = _shift_matrix(_CHUNK)
        chunks = buf[: n_full * _CHUNK].reshape(n_full, _CHUNK)
        regs = np.zeros(n_full, dtype=np.uint32)
        for j in range(_CHUNK):
            regs = _TABLE[(regs ^ chunks[:, j]) & 0xFF] ^ (regs >> 8)
        for r in regs.tolist():
            state = _apply(_SHIFT_CHUNK, state) ^ r
        buf = buf[n_full * _CHUNK:]
    return _update_serial(state, buf.tobytes()) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masked CRC (stored in block trailers and, by TF, in bundle entries)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints and protobuf
def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _put_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _proto_fields(buf: bytes) -> List[Tuple[int, object]]:
    """(field number, value) pairs: ints for varint/fixed fields, bytes for length-delimited ones."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire == 5:
            val, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((num, val))
    return fields


def _parse_entry(buf: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for num, val in _proto_fields(buf):
        if num == 1:
            entry["dtype"] = val
        elif num == 2:
            for dnum, dim in _proto_fields(val):
                if dnum == 2:
                    entry["shape"].append(next((v for n, v in _proto_fields(dim) if n == 1), 0))
        elif num in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[num]] = val
        elif num == 6:
            entry["crc32c"] = val
        elif num == 7:
            raise ValueError("partitioned (sliced) variables are not supported")
    return entry


def _entry_bytes(dtype: int, shape, offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(b"\x12" + _put_varint(len(d)) + d for d in (b"\x08" + _put_varint(s) for s in shape))
    out = b"\x08" + _put_varint(dtype) + b"\x12" + _put_varint(len(dims)) + dims
    if offset:
        out += b"\x20" + _put_varint(offset)
    return out + b"\x28" + _put_varint(size) + b"\x35" + struct.pack("<I", crc)


# --------------------------------------------------------------------------- LevelDB table
def _read_block(data: bytes, offset: int, size: int, path: str) -> List[Tuple[bytes, bytes]]:
    if offset + size + 5 > len(data):
        raise CheckpointError(f"'{path}': block at {offset} (+{size} B) runs past the end of the file")
    contents, trailer = data[offset:offset + size], data[offset + size:offset + size + 5]
    if trailer[0] != 0:
        raise CheckpointError(f"'{path}': compressed index blocks are not supported (type {trailer[0]})")
    stored = struct.unpack("<I", trailer[1:])[0]
    if stored != mask_crc(crc32c(contents + trailer[:1])):
        raise CheckpointError(f"'{path}': index block at offset {offset} fails its CRC32C check (corrupted file)")
    num_restarts = struct.unpack_from("<I", contents, len(contents) - 4)[0]
    end = len(contents) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(contents, pos)
        unshared, pos = _varint(contents, pos)
        vlen, pos = _varint(contents, pos)
        key = key[:shared] + contents[pos:pos + unshared]
        pos += unshared
        entries.append((key, contents[pos:pos + vlen]))
        pos += vlen
    return entries


def _block(entries: List[Tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", mask_crc(crc32c(block + b"\x00")))


def read_index(index_path: str) -> Dict[str, dict]:
    """{variable name: entry} from a ``.index`` file (the header entry ``""`` included)."""
    try:
        with open(index_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read TF checkpoint index '{index_path}': {e.strerror}") from None
    if len(data) < FOOTER_SIZE or data[-8:] != TABLE_MAGIC:
        raise CheckpointError(f"'{index_path}' is not a TensorFlow checkpoint index (no table magic in its last 8 bytes)")
    footer = data[-FOOTER_SIZE:]
    try:
        _, pos = _varint(footer, 0)
        _, pos = _varint(footer, pos)  # metaindex handle (unused)
        idx_off, pos = _varint(footer, pos)
        idx_size, _ = _varint(footer, pos)
        entries = {}
        for _, handle in _read_block(data, idx_off, idx_size, index_path):
            off, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            for key, value in _read_block(data, off, size, index_path):
                entries[key.decode("utf-8")] = value
    except (ValueError, struct.error, IndexError) as e:
        raise CheckpointError(f"'{index_path}': malformed checkpoint index ({e})") from None
    out = {}
    for name, value in entries.items():
        if name == "":
            fields = dict(_proto_fields(value))
            out[""] = {"num_shards": fields.get(1, 1), "endianness": fields.get(2, 0)}
        else:
            try:
                out[name] = _parse_entry(value)
            except ValueError as e:
                raise CheckpointError(f"'{index_path}': variable '{name}': {e}") from None
    return out


def bundle_prefix(path: str) -> str:
    """Accept the prefix (``model.ckpt``) or any of its files (``model.ckpt.index``, ``.data-*``)."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    if ".data-" in os.path.basename(path):
        return path[: path.rindex(".data-")]
    return path


def is_bundle(path: str) -> bool:
    return os.path.isfile(bundle_prefix(path) + ".index")


def read_bundle(path: str) -> Dict[str, np.ndarray]:
    """{variable name: array}; checks shard presence and length and every tensor's CRC32C (masked
    or unmasked, since TF versions differ)."""
    prefix = bundle_prefix(path)
    index_path = prefix + ".index"
    if not os.path.isfile(index_path):
        raise CheckpointError(f"TF checkpoint index '{index_path}' not found (give the checkpoint prefix, e.g. "
                              f"'pretrained/CBSN_SIDDtrain.ckpt')")
    entries = read_index(index_path)
    header = entries.pop("", {"num_shards": 1, "endianness": 0})
    if header["endianness"] != 0:
        raise CheckpointError(f"'{index_path}': big-endian checkpoints are not supported")
    n = header["num_shards"]
    shards: Dict[int, memoryview] = {}
    for shard in sorted({e["shard_id"] for e in entries.values()}):
        shard_path = f"{prefix}.data-{shard:05d}-of-{n:05d}"
        try:
            with open(shard_path, "rb") as f:
                shards[shard] = memoryview(f.read())
        except OSError:
            raise CheckpointError(f"TF checkpoint data shard '{shard_path}' is missing (listed in '{index_path}')") \
                from None
    out = {}
    for name, e in sorted(entries.items()):
        if e["dtype"] not in DTYPES:
            raise CheckpointError(f"'{index_path}': variable '{name}' has unsupported TF dtype code {e['dtype']}")
        shard = shards[e["shard_id"]]
        end = e["offset"] + e["size"]
        if end > len(shard):
            raise CheckpointError(
                f"TF data shard of '{prefix}' is too short: variable '{name}' needs bytes {e['offset']}..{end}, the "
                f"file has {len(shard)} (incomplete download?)")
        raw = shard[e["offset"]:end]
        if e["crc32c"] is not None:
            crc = crc32c(raw)
            if e["crc32c"] not in (crc, mask_crc(crc)):
                raise CheckpointError(f"checksum mismatch for variable '{name}' in '{prefix}' (stored "
                                      f"{e['crc32c']:#010x}, computed {crc:#010x}): the data file is corrupted")
        dtype = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
        expected = int(np.prod(e["shape"], dtype=np.int64)) * dtype.itemsize
        if expected != e["size"]:
            raise CheckpointError(f"'{index_path}': variable '{name}' of shape {e['shape']} has {e['size']} B, "
                                  f"expected {expected}")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(dtype.newbyteorder("="))
    return out


def write_bundle(prefix: str, variables: Dict[str, np.ndarray], masked_crc: bool = True) -> None:
    """Write a single-shard bundle exactly as TF lays it out: tensors back to back in bytewise key
    order, the index as an uncompressed LevelDB table with the header under key ``""``."""
    names = sorted(variables, key=lambda s: s.encode("utf-8"))
    data, entries = bytearray(), [(b"", b"\x08\x01\x1a\x02\x08\x01")]  # num_shards 1, version producer 1
    for name in names:
        arr = np.ascontiguousarray(variables[name])
        code = DTYPE_CODES.get(arr.dtype)
        if code is None:
            raise ValueError(f"cannot write dtype {arr.dtype} for '{name}'")
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        crc = crc32c(raw)
        entries.append((name.encode("utf-8"),
                        _entry_bytes(code, arr.shape, len(data), len(raw), mask_crc(crc) if masked_crc else crc)))
        data += raw
    data_block = _with_trailer(_block(entries))
    meta_block = _with_trailer(_block([]))
    last_key = entries[-1][0]
    index_entries = [(last_key + b"\x00" if last_key else b"\x00", _put_varint(0) + _put_varint(len(data_block) - 5))]
    index_block = _with_trailer(_block(index_entries, 1))
    meta_off = len(data_block)
    idx_off = meta_off + len(meta_block)
    handles = (_put_varint(meta_off) + _put_varint(len(meta_block) - 5)
               + _put_varint(idx_off) + _put_varint(len(index_block) - 5))
    footer = handles + b"\x00" * (40 - len(handles)) + TABLE_MAGIC
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".index", "wb") as f:
        f.write(data_block + meta_block + index_block + footer)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(data))
