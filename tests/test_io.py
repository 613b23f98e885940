"""npcaffe.io: pycaffe's caffe.io conversions and Transformer."""
import numpy as np
import pytest

from npcaffe import io as caffe_io
from npcaffe.errors import DataError
from npcaffe.proto import caffe_pb2

ARR = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8


def test_blobproto_round_trip_with_diff():
    diff = -ARR
    blob = caffe_io.array_to_blobproto(ARR, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    back = caffe_io.blobproto_to_array(caffe_pb2.BlobProto.FromString(blob.SerializeToString()))
    np.testing.assert_array_equal(back, ARR)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob, return_diff=True), diff)


def test_blobproto_legacy_dims_and_double_data():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4)
    blob.double_data.extend((ARR.astype(np.float64) + 1e-10).ravel().tolist())
    blob.double_diff.extend([0.5] * 24)
    blob.data.extend([9.0] * 24)  # double_data wins, as in Blob::FromProto
    got = caffe_io.blobproto_to_array(blob)
    assert got.shape == (1, 2, 3, 4) and got.dtype == np.float64
    np.testing.assert_array_equal(got.ravel(), ARR.astype(np.float64).ravel() + 1e-10)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(blob, return_diff=True), 0.5)


def test_blobproto_count_mismatch():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.data.extend([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"3 data values but its shape \(2, 2\) holds 4"):
        caffe_io.blobproto_to_array(blob)


def test_blobprotovector_round_trip():
    arrays = [ARR, np.ones((5,), np.float32), np.zeros((0, 3), np.float32)]
    back = caffe_io.blobprotovector_str_to_arraylist(caffe_io.arraylist_to_blobprotovector_str(arrays))
    assert [b.shape for b in back] == [a.shape for a in arrays]
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_datum_round_trips():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe_io.array_to_datum(pixels, 3)
    assert datum.data == pixels.tobytes() and datum.label == 3 and not datum.float_data
    np.testing.assert_array_equal(caffe_io.datum_to_array(datum), pixels)
    datum = caffe_io.array_to_datum(ARR)
    assert not datum.data and len(datum.float_data) == 24 and not datum.HasField("label")
    back = caffe_io.datum_to_array(datum)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, ARR)
    with pytest.raises(ValueError, match="3-D"):
        caffe_io.array_to_datum(np.zeros((2, 2)))


def _transformer():
    t = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_order_and_deprocess():
    t = _transformer()
    img = np.random.default_rng(0).uniform(size=(4, 5, 3)).astype(np.float32)
    before = img.copy()
    out = t.preprocess("data", img)
    np.testing.assert_array_equal(img, before)  # the input is not scaled in place
    chw = img.transpose(2, 0, 1)[[2, 1, 0]]
    want = (chw * np.float32(255) - np.array([10, 20, 30], np.float32)[:, None, None]) * np.float32(0.5)
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", out[np.newaxis]), img, rtol=1e-5, atol=1e-6)


def test_preprocess_resizes_to_input():
    t = caffe_io.Transformer({"data": [1, 1, 4, 6]})
    t.set_transpose("data", (2, 0, 1))
    out = t.preprocess("data", np.full((8, 3, 1), 0.25, np.float32))
    assert out.shape == (1, 4, 6)
    np.testing.assert_allclose(out, 0.25)


def test_transformer_checks():
    t = caffe_io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(KeyError, match="not one of the net inputs"):
        t.set_raw_scale("label", 1)
    with pytest.raises(ValueError, match="needs 3 axes"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="3 channels"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="mean has 2 channels"):
        t.set_mean("data", np.zeros(2))
    t.set_mean("data", np.ones((3, 8, 10)))  # elementwise means are resized to the input
    assert t.mean["data"].shape == (3, 4, 5)


def test_resize_image():
    im = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    np.testing.assert_array_equal(caffe_io.resize_image(im, (3, 4)), im)
    ramp = np.array([[0.0, 1.0]], np.float32)[:, :, None]
    up = caffe_io.resize_image(ramp, (1, 4))[0, :, 0]
    np.testing.assert_allclose(up, [0, 0.25, 0.75, 1])
    np.testing.assert_array_equal(caffe_io.resize_image(im, (3, 2), interp_order=0)[:, :, 0], im[:, [1, 3], 0])


def test_load_image(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    img = caffe_io.load_image(str(tmp_path / "x.png"))
    assert img.shape == (3, 4, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, rgb / 255.0, rtol=1e-6)
    assert caffe_io.load_image(str(tmp_path / "x.png"), color=False).shape == (3, 4, 1)


def test_load_image_without_pillow(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"pip install npcaffe\[image\]"):
        caffe_io.load_image("x.png")
