import numpy as np
import pytest

from npcaffe.blob import Blob
from npcaffe.errors import NetError


def test_views_write_through_and_legacy_dims():
    b = Blob((2, 3, 4, 5), name="x")
    b.data[...] = 1.5
    assert b.flat_data.sum() == 1.5 * 120 and b.count == 120
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 5)
    # Caffe's LegacyShape pads the trailing axes with 1.
    assert (Blob((7, 9)).num, Blob((7, 9)).channels, Blob((7, 9)).height, Blob((7, 9)).width) == (7, 9, 1, 1)
    assert (Blob(()).num, Blob((3,)).num, Blob((3,)).channels) == (1, 3, 1)
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


def test_data_stamp_changes_whenever_the_data_could_be_written():
    b = Blob((3, 4))
    first = b.data_stamp()
    assert first is not None and b.data_stamp() == first        # nothing handed out: unchanged
    b.data[...] = 1                                              # every hand-out takes a new stamp
    second = b.data_stamp()
    assert second not in (None, first)
    view = b.flat_data                                           # a live view: no stamp at all
    assert b.data_stamp() is None
    view[0] = 5
    del view
    assert b.data_stamp() not in (None, second)
    shared = Blob((3, 4))
    shared.share_data(b)
    before = b.data_stamp()
    shared.data[...] = 2                                         # through another blob on the same storage
    assert b.data_stamp() != before
    before = b.data_stamp()
    b.reshape(10, 10)                                            # reallocated
    assert b.data_stamp() != before
    b.diff[...] = 3                                              # the diff is not the data
    assert b.data_stamp() == b.data_stamp()


def test_reshape_to_the_same_shape_keeps_everything():
    b = Blob((2, 3))
    storage = b._data.array
    b.reshape((2, 3))
    b.reshape(np.int64(2), 3)
    assert b._data.array is storage and b.shape == (2, 3) and all(type(d) is int for d in b.shape)
    scalar = Blob(())
    assert scalar.count == 1 and scalar.data.shape == () and scalar.flat_data.size == 1


def test_count_beyond_int64_is_caught_not_wrapped():
    """kernel_size 2147483647: the weight's count overflows int64, which NumPy's product wraps to a
    negative number that slipped past the INT_MAX check."""
    import pytest
    from npcaffe.blob import Blob
    from npcaffe.errors import NetError
    with pytest.raises(NetError, match=r"has 18446744056529682436 elements, more than Caffe's INT_MAX"):
        Blob(4, 1, 2147483647, 2147483647)


def test_deferred_clear_reads_as_zeros_until_a_layer_writes_the_diff():
    blob = Blob(2, 3)
    blob.diff[...] = 5
    view = blob.flat_diff
    blob.clear_diff(deferred=True)
    assert view.all() and blob.diff_known_zero()  # the zeros are only promised: nothing was written yet
    diff, fresh = blob.diff_to_accumulate()
    assert fresh and diff is view
    diff[...] = 7  # a layer writes its whole gradient in place of adding it
    assert (blob.diff == 7).all()
    assert blob.diff_to_accumulate()[1] is False  # written: the next gradient adds

    blob.clear_diff(deferred=True)
    assert not blob.diff.any() and not view.any()  # the first read writes the zeros
    assert not blob.diff_known_zero()
    assert blob.diff_to_accumulate()[1] is False
    blob.diff[...] = 3
    blob.clear_diff()
    assert not view.any() and blob.diff_to_accumulate()[1] is False


def test_deferred_clear_is_shared_and_survives_pickling():
    import pickle
    owner, user = Blob(4), Blob(4)
    user.share_diff(owner)
    owner.diff[...] = 2
    user.clear_diff(deferred=True)
    assert owner.diff_to_accumulate()[1] is True  # one storage: one promise
    owner.diff[...] = 2
    owner.clear_diff(deferred=True)
    copy = pickle.loads(pickle.dumps(owner))
    assert not copy.diff.any() and copy.diff_to_accumulate()[1] is False
    owner.reshape(16)  # a larger storage starts as zeros: nothing left to promise
    assert owner.diff_to_accumulate()[1] is False
