"""Deep Compression's relative-index CSR (npcaffe.fileio.relative_csr): hand counts, the paper's Figure 2,
gap overflow with filler zeros, and round trips against a plain-Python reference encoder."""
import math

import numpy as np
import pytest

from npcaffe.errors import NpcaffeError
from npcaffe.fileio import relative_csr as rc


def reference_encode(matrix, bits):
    """Entry by entry, as the paper describes it: (values, gaps, row pointers)."""
    values, gaps, row_ptr = [], [], [0]
    limit = 2 ** bits - 1
    for row in np.asarray(matrix, np.float32).reshape(len(matrix), -1):
        previous = -1
        for col, value in enumerate(row):
            if value == 0:
                continue
            gap = col - previous - 1
            while gap > limit:  # a filler zero 2^bits positions on, and count from there
                values.append(0.0)
                gaps.append(limit)
                gap -= limit + 1
            values.append(float(value))
            gaps.append(gap)
            previous = col
        row_ptr.append(len(values))
    return np.array(values, np.float32), np.array(gaps, np.int64), np.array(row_ptr, np.int64)


def test_figure_2_of_the_paper():
    # Han, Mao & Dally, Figure 2: nonzeros at 1, 4 and 15 of 16 with 3-bit differences; the gap of 10 zeros
    # between 4 and 15 overflows, so a filler zero stands 8 positions after 4 (at 12) and 15 is 3 further on.
    row = np.zeros((1, 16), np.float32)
    row[0, [1, 4, 15]] = [3.4, 0.9, 1.7]
    csr = rc.encode(row, 3)
    assert csr.gaps.tolist() == [1, 2, 7, 2]  # the figure's differences (gap + 1) after the first: 3, 8, 3
    np.testing.assert_array_equal(csr.values, np.float32([3.4, 0.9, 0, 1.7]))
    assert csr.row_ptr.tolist() == [0, 4]
    # 4 entries: 16 bytes of values, 12 bits of gaps in 2 bytes, 2 row pointers of 4 bytes.
    assert rc.size_bytes(row, 3) == 16 + 2 + 8 == len(rc.to_bytes(csr))
    assert rc.count_entries(row, 3) == (3, 1)
    np.testing.assert_array_equal(rc.decode(csr), row)


def test_hand_count_with_overflow_at_the_bound():
    # 2-bit gaps: up to 3 zeros fit; 4 zeros need one filler, 8 need two, 11 need two, 12 need three.
    m = np.zeros((5, 40), np.float32)
    m[0, [3, 8]] = [1, 2]            # gaps 3 (fits) and 4 (one filler)
    m[1, [0, 9]] = [3, 4]            # gap 0 at the row start, then 8: two fillers
    m[2, [11, 24]] = [5, 6]          # gap 11 from the start: two fillers; then 12: three
    # row 3 empty: no entries, one row pointer
    m[4, 39] = 7                     # 39 zeros: nine fillers (39 // 4)
    csr = rc.encode(m, 2)
    fillers = 1 + 2 + 2 + 3 + 9
    entries = 7 + fillers
    assert rc.count_entries(m, 2) == (7, fillers)
    assert csr.row_ptr.tolist() == [0, 3, 7, 14, 14, 24]
    # Row 0: column 3 (gap 3), a filler on column 7 (gap 3, the most 2 bits hold), column 8 right after it.
    assert csr.gaps[:3].tolist() == [3, 3, 0] and csr.values[:3].tolist() == [1, 0, 2]
    assert rc.size_bytes(m, 2) == 4 * entries + math.ceil(entries * 2 / 8) + 4 * 6
    assert len(rc.to_bytes(csr)) == rc.size_bytes(m, 2)
    assert rc.plain_csr_bytes(m) == 4 * (2 * 7 + 5 + 1)  # the paper's 2a + n + 1 numbers
    np.testing.assert_array_equal(rc.decode(rc.from_bytes(rc.to_bytes(csr), m.shape, 2)), m)


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
@pytest.mark.parametrize("shape, density", [((7, 33), 0.3), ((20, 3, 5, 5), 0.05), ((1, 300), 0.01),
                                            ((13, 17), 1.0), ((4, 9), 0.0)])
def test_round_trip_and_size_against_the_reference(bits, shape, density):
    rng = np.random.default_rng(bits * 31 + shape[0])
    weight = (rng.normal(size=shape) * (rng.random(shape) < density)).astype(np.float32)
    csr = rc.encode(weight, bits)
    values, gaps, row_ptr = reference_encode(weight, bits)
    np.testing.assert_array_equal(csr.values, values)
    np.testing.assert_array_equal(csr.gaps, gaps)
    np.testing.assert_array_equal(csr.row_ptr, row_ptr)
    assert csr.gaps.size == 0 or csr.gaps.max() < 2 ** bits
    data = rc.to_bytes(csr)
    assert len(data) == rc.size_bytes(weight, bits)
    back = rc.from_bytes(data, csr.shape, bits)
    np.testing.assert_array_equal(rc.decode(back), weight.reshape(shape[0], -1))


def test_gap_stream_packs_bits_tightly():
    gaps = np.array([0, 31, 17, 5, 30, 1, 2], np.int64)
    packed = rc.pack_gaps(gaps, 5)
    assert len(packed) == math.ceil(7 * 5 / 8)
    np.testing.assert_array_equal(rc.unpack_gaps(packed, 5, 7), gaps)
    assert rc.pack_gaps(np.array([1, 0, 1]), 1) == bytes([0b101])  # least significant bit first
    wide = np.array([2 ** 32 - 1, 0, 12345], np.int64)
    np.testing.assert_array_equal(rc.unpack_gaps(rc.pack_gaps(wide, 32), 32, 3), wide)


def test_bad_widths_and_damaged_data_are_errors():
    with pytest.raises(NpcaffeError, match="1 to 32 bits"):
        rc.encode(np.ones((2, 2)), 0)
    csr = rc.encode(np.eye(3, dtype=np.float32), 4)
    with pytest.raises(NpcaffeError, match="do not hold"):
        rc.from_bytes(rc.to_bytes(csr)[1:], (3, 3), 4)
    with pytest.raises(NpcaffeError, match="damaged"):
        rc.decode(csr._replace(gaps=csr.gaps + 5))
