import numpy as np
import pytest

from npcaffe.blob import Blob
from npcaffe.errors import NetError


def test_views_write_through_and_legacy_dims():
    b = Blob((2, 3, 4, 5), name="x")
    b.data[...] = 1.5
    assert b.flat_data.sum() == 1.5 * 120 and b.count == 120
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 5)
    assert (Blob((7, 9)).num, Blob((7, 9)).channels, Blob((7, 9)).height) == (1, 1, 7)
    assert b.data.dtype == np.float32 and b.diff.dtype == np.float32


def test_reshape_keeps_capacity():
    b = Blob((4, 10))
    storage = b._data.array
    b.reshape(2, 5)
    assert b._data.array is storage and b.shape == (2, 5)
    b.reshape(10, 10)
    assert b._data.array is not storage and b.count == 100


def test_sharing_follows_owner():
    a, b = Blob((3,)), Blob((3,))
    b.share_data(a)
    a.data[...] = [1, 2, 3]
    assert b.data.tolist() == [1, 2, 3] and b.shares_data_with(a)
    with pytest.raises(NetError, match="counts differ"):
        Blob((4,)).share_data(a)


def test_bad_shapes():
    with pytest.raises(NetError, match="negative dimension"):
        Blob((2, -1))
    with pytest.raises(NetError, match="axis 3 out of range"):
        Blob((2, 3)).canonical_axis(3)
    assert Blob((2, 3)).canonical_axis(-1) == 1
