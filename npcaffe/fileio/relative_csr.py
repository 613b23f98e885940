"""Deep Compression's sparse storage: CSR with relative indices and filler zeros.

Han, Mao & Dally (ICLR 2016), Sec. 2: the pruned weights are stored in CSR
(or CSC), "2a + n + 1 numbers" for a nonzeros and n rows; "to compress
further, we store the index difference instead of the absolute position,
and encode this difference in 8 bits for conv layer and 5 bits for fc
layer.  When we need an index difference larger than the bound, we [use]
the zero padding solution shown in Figure 2".  Here, for one layer's weight
as a matrix (rows: the outputs; columns: C/group x kh x kw for a
convolution, the inputs for an inner product):

    values    float32, one per entry (an entry: a nonzero, or a filler zero)
    gaps      `bits` bits each: the zeros skipped since the previous entry of
              the row (since the row's start for its first entry), 0 .. 2^bits - 1
    row_ptr   rows + 1 numbers, 32 bits each: row r's entries are
              row_ptr[r] .. row_ptr[r + 1] - 1

A gap of 2^bits zeros or more does not fit: a filler entry (value 0, gap
2^bits - 1) stands on the zero 2^bits positions after the previous entry,
and the count goes on from there, so a gap g costs floor(g / 2^bits)
fillers.  Zeros after a row's last entry cost nothing (the row's length is
known).  The paper's "index difference" is gap + 1, from 1 to 2^bits, so
its 3-bit example overflows when "the difference exceeds 8", as here; its
Figure 2 counts the first entry from position 0, which would leave no code
for an entry at position 0, so we count it from -1 (EIE's "number of zeros
before" an entry, the same thing).

Size of a layer, in bytes, with e entries (nonzeros + fillers):

    4 e  +  ceil(e x bits / 8)  +  4 (rows + 1)

(the gaps bit-packed, padded to a whole byte once per layer).  `encode`,
`to_bytes` and `decode` are the format itself (tests round-trip them);
`size_bytes` computes the size without encoding.  This is the storage of
pruning alone: the paper's later stages (weight sharing to 5-8 bit codebook
indices, Huffman coding) are not modelled.
"""
import math
from typing import NamedTuple

import numpy as np

from ..errors import NpcaffeError

VALUE_BYTES = 4  # float32 values
POINTER_BYTES = 4  # row pointers as 32-bit numbers
# The paper's widths of the index difference.
CONV_BITS = 8
FC_BITS = 5


class RelativeCSR(NamedTuple):
    """One matrix in Deep Compression's relative-index CSR (see the module docstring)."""
    shape: tuple
    bits: int
    values: np.ndarray   # float32 (entries,), fillers 0
    gaps: np.ndarray     # int64 (entries,), each < 2**bits
    row_ptr: np.ndarray  # int64 (rows + 1,)


def _check_bits(bits):
    if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= 32):
        raise NpcaffeError(f"relative index width must be 1 to 32 bits, got {bits}")
    return int(bits)


def _as_matrix(weight):
    weight = np.asarray(weight, np.float32)
    if weight.ndim == 0:
        weight = weight.reshape(1, 1)
    return weight.reshape(weight.shape[0], -1)


def _row_gaps(matrix):
    """(rows of the nonzeros, their gaps): zeros skipped since the previous nonzero of the row."""
    rows, cols = np.nonzero(matrix)
    previous = np.empty_like(cols)
    previous[1:] = cols[:-1]
    starts = np.ones(rows.size, bool)
    starts[1:] = rows[1:] != rows[:-1]
    previous[starts] = -1
    return rows, cols, cols - previous - 1


def encode(weight, bits):
    """The RelativeCSR of a weight array (its first axis the rows, the rest flattened into columns)."""
    bits = _check_bits(bits)
    matrix = _as_matrix(weight)
    rows, cols, gaps = _row_gaps(matrix)
    span = 1 << bits
    fillers = gaps // span
    # Each nonzero becomes its fillers (gap 2^bits - 1, value 0) followed by itself (the gap left).
    per_nonzero = fillers + 1
    entries = int(per_nonzero.sum())
    last = np.cumsum(per_nonzero) - 1  # where each nonzero lands among the entries
    out_gaps = np.full(entries, span - 1, np.int64)
    out_values = np.zeros(entries, np.float32)
    out_gaps[last] = gaps - fillers * span
    out_values[last] = matrix[rows, cols]
    row_ptr = np.zeros(matrix.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, weights=per_nonzero, minlength=matrix.shape[0]).astype(np.int64), out=row_ptr[1:])
    return RelativeCSR(tuple(matrix.shape), bits, out_values, out_gaps, row_ptr)


def decode(csr):
    """The dense float32 matrix of a RelativeCSR."""
    rows_count, cols_count = csr.shape
    dense = np.zeros(csr.shape, np.float32)
    lengths = np.diff(csr.row_ptr)
    rows = np.repeat(np.arange(rows_count), lengths)
    # An entry's column: the running sum of (gap + 1) since its row's start, minus one.
    running = np.concatenate(([0], np.cumsum(np.asarray(csr.gaps, np.int64) + 1)))
    cols = running[1:] - np.repeat(running[csr.row_ptr[:-1]], lengths) - 1
    if cols.size and (cols.max() >= cols_count):
        raise NpcaffeError(f"relative CSR: an entry lands at column {int(cols.max())} of a {cols_count}-column "
                           "matrix; the data is damaged")
    dense[rows, cols] = csr.values
    return dense


def pack_gaps(gaps, bits):
    """The gaps as a bit stream, `bits` bits each, least significant bit first, padded to whole bytes."""
    bits = _check_bits(bits)
    gaps = np.asarray(gaps, np.uint64)
    planes = ((gaps[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_gaps(data, bits, count):
    """`count` gaps of `bits` bits from a stream written by pack_gaps."""
    bits = _check_bits(bits)
    flat = np.unpackbits(np.frombuffer(data, np.uint8), count=count * bits, bitorder="little")
    planes = flat.reshape(count, bits).astype(np.uint64)
    return (planes << np.arange(bits, dtype=np.uint64)).sum(axis=1).astype(np.int64)


def to_bytes(csr):
    """The stored bytes: float32 values, the packed gaps, uint32 row pointers (little-endian)."""
    return (np.asarray(csr.values, "<f4").tobytes() + pack_gaps(csr.gaps, csr.bits)
            + np.asarray(csr.row_ptr, "<u4").tobytes())


def from_bytes(data, shape, bits):
    """A RelativeCSR from to_bytes' output, given the matrix shape and the gap width."""
    bits = _check_bits(bits)
    rows = int(shape[0])
    pointer_bytes = POINTER_BYTES * (rows + 1)
    row_ptr = np.frombuffer(data[len(data) - pointer_bytes:], "<u4").astype(np.int64)
    entries = int(row_ptr[-1])
    if len(data) != entries_bytes(entries, bits) + pointer_bytes:
        raise NpcaffeError(f"relative CSR: {len(data)} bytes do not hold {entries} entries of {bits}-bit gaps "
                           f"and {rows + 1} row pointers")
    values = np.frombuffer(data[:VALUE_BYTES * entries], "<f4").astype(np.float32)
    gaps = unpack_gaps(data[VALUE_BYTES * entries:len(data) - pointer_bytes], bits, entries)
    return RelativeCSR(tuple(int(d) for d in shape), bits, values, gaps, row_ptr)


def entries_bytes(entries, bits):
    """Bytes of `entries` values and their bit-packed gaps."""
    return VALUE_BYTES * entries + math.ceil(entries * bits / 8)


def count_entries(weight, bits):
    """(nonzeros, fillers) of a weight array's relative CSR, without building it."""
    bits = _check_bits(bits)
    _, _, gaps = _row_gaps(_as_matrix(weight))
    return int(gaps.size), int((gaps >> bits).sum())


def size_bytes(weight, bits):
    """Bytes of a weight array in relative CSR: 4 e + ceil(e bits / 8) + 4 (rows + 1), e = nonzeros + fillers."""
    nonzeros, fillers = count_entries(weight, bits)
    return entries_bytes(nonzeros + fillers, bits) + POINTER_BYTES * (_as_matrix(weight).shape[0] + 1)


def plain_csr_bytes(weight):
    """Bytes of the same weight in plain CSR, the paper's 2a + n + 1 numbers of 4 bytes (int32 column indices)."""
    matrix = _as_matrix(weight)
    return 4 * (2 * int(np.count_nonzero(matrix)) + matrix.shape[0] + 1)
