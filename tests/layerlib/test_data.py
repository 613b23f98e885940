"""Data, MemoryData, DummyData, Input, HDF5Data, HDF5Output and ImageData layers."""
import gzip
import io
import sys
import time

import lmdb
import numpy as np
import pytest

from helpers import layer_param, shared_path
from npcaffe.blob import Blob
from npcaffe.errors import DataError, NetError
from npcaffe.layer import TEST, TRAIN, create_layer
from npcaffe.proto import caffe_pb2
from npcaffe.rng import get_rng, set_random_seed


def _idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header:], dtype=np.uint8)


def _setup(text, ntop=2, phase=None):
    layer = create_layer(layer_param(text), phase)
    top = [Blob() for _ in range(ntop)]
    layer.setup([], top)
    return layer, top


def _data_layer(source, batch, extra="", ntop=2, phase=None):
    return _setup(f'name: "d" type: "Data" top: "data" top: "label" '
                  f'data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} {extra}',
                  ntop, phase)


def _write_lmdb(path, datums):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, d in enumerate(datums):
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()
    return str(path)


def _datum(pixels, label):
    d = caffe_pb2.Datum(channels=pixels.shape[0], height=pixels.shape[1], width=pixels.shape[2], label=label)
    if pixels.dtype == np.uint8:
        d.data = pixels.tobytes()
    else:
        d.float_data.extend(pixels.ravel().tolist())
    return d


# -- Data ------------------------------------------------------------------------
def test_first_mnist_test_batch_matches_idx_files():
    source = shared_path("data", "mnist-lmdb", "mnist_test_lmdb")
    labels = _idx(shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"), 8)
    images = _idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    layer, top = _data_layer(source, 64, "transform_param { scale: 0.00390625 }", phase=TEST)
    assert top[0].shape == (64, 1, 28, 28) and top[1].shape == (64,)
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, labels[:64].astype(np.float32))
    np.testing.assert_array_equal(top[0].data, images[:64].astype(np.float32) * np.float32(0.00390625))
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, labels[64:128].astype(np.float32))


def test_mnist_batch_is_fast():
    source = shared_path("data", "mnist-lmdb", "mnist_train_lmdb")
    layer, top = _data_layer(source, 64, "transform_param { scale: 0.00390625 }")
    layer.forward([], top)
    start = time.perf_counter()
    for _ in range(20):
        layer.forward([], top)
    assert (time.perf_counter() - start) / 20 < 0.02


def test_reads_in_key_order_and_wraps(tmp_path):
    pixels = [np.full((1, 2, 2), i, np.uint8) for i in range(5)]
    source = _write_lmdb(tmp_path / "db", [_datum(p, i) for i, p in enumerate(pixels)])
    layer, top = _data_layer(source, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [0, 1, 2])
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [3, 4, 0])
    np.testing.assert_array_equal(top[0].data[:, 0, 0, 0], [3, 4, 0])
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [1, 2, 3])


def test_single_top_and_float_data(tmp_path):
    pixels = np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 7
    source = _write_lmdb(tmp_path / "db", [_datum(pixels, 4)])
    layer, top = _data_layer(source, 2, "transform_param { scale: 2 }", ntop=1)
    layer.forward([], top)
    assert top[0].shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(top[0].data[1], pixels * np.float32(2))


def test_source_is_relative_to_working_directory(tmp_path, monkeypatch):
    _write_lmdb(tmp_path / "db", [_datum(np.zeros((1, 1, 1), np.uint8), 3)])
    monkeypatch.chdir(tmp_path)
    layer, top = _data_layer("db", 1)
    layer.forward([], top)
    assert top[1].data[0] == 3


def test_missing_source_names_layer_and_path(tmp_path):
    with pytest.raises(DataError, match=r"layer 'd'.*no_such_lmdb"):
        _data_layer(str(tmp_path / "no_such_lmdb"), 4)


def test_leveldb_is_refused_with_a_hint(tmp_path):
    source = _write_lmdb(tmp_path / "db", [_datum(np.zeros((1, 1, 1), np.uint8), 0)])
    with pytest.raises(DataError, match=r"LEVELDB.*backend: LMDB"):
        _setup(f'name: "d" type: "Data" top: "data" data_param {{ source: "{source}" batch_size: 1 }}', 1)


def test_inconsistent_record_names_the_key(tmp_path):
    datums = [_datum(np.zeros((1, 2, 2), np.uint8), 0), _datum(np.zeros((1, 3, 3), np.uint8), 1)]
    layer, top = _data_layer(_write_lmdb(tmp_path / "db", datums), 2)
    with pytest.raises(DataError, match="'00000001'"):
        layer.forward([], top)


def test_short_record_names_the_key(tmp_path):
    bad = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DataError, match=r"'00000000'.*3 data bytes"):
        _data_layer(_write_lmdb(tmp_path / "db", [bad]), 1)


def test_batch_shape_follows_its_first_record(tmp_path):
    datums = [_datum(np.zeros((1, 2, 2), np.uint8), 0), _datum(np.zeros((1, 3, 3), np.uint8), 1)]
    layer, top = _data_layer(_write_lmdb(tmp_path / "db", datums), 1)
    layer.forward([], top)
    layer.forward([], top)
    assert top[0].shape == (1, 1, 3, 3)


def test_rand_skip_uses_npcaffe_rng(tmp_path):
    source = _write_lmdb(tmp_path / "db", [_datum(np.zeros((1, 1, 1), np.uint8), i) for i in range(10)])
    set_random_seed(7)
    expected = int(get_rng().integers(10))
    set_random_seed(7)
    layer, top = _data_layer(source, 1, "", ntop=2)
    layer.layer_param.data_param.rand_skip = 10
    layer.setup([], top)
    layer.forward([], top)
    assert top[1].data[0] == expected


def test_test_phase_crop_is_centred(tmp_path):
    pixels = np.arange(25, dtype=np.uint8).reshape(1, 5, 5)
    source = _write_lmdb(tmp_path / "db", [_datum(pixels, 0)])
    layer, top = _data_layer(source, 1, "transform_param { crop_size: 3 }", phase=TEST)
    assert top[0].shape == (1, 1, 3, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0], pixels[:, 1:4, 1:4])


def _png(rgb):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_encoded_images_decode_to_bgr(tmp_path):
    pytest.importorskip("PIL")
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    d = caffe_pb2.Datum(data=_png(rgb), encoded=True, label=2)
    layer, top = _data_layer(_write_lmdb(tmp_path / "db", [d]), 1)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0], rgb[:, :, ::-1].transpose(2, 0, 1))
    layer, top = _data_layer(_write_lmdb(tmp_path / "db2", [d]), 1, "transform_param { force_gray: true }")
    assert top[0].shape == (1, 1, 4, 5)


def test_encoded_without_pillow_says_how_to_fix(tmp_path, monkeypatch):
    d = caffe_pb2.Datum(data=b"\x89PNG not really", encoded=True)
    source = _write_lmdb(tmp_path / "db", [d])
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"'00000000'.*pip install npcaffe\[image\]"):
        _data_layer(source, 1)


# -- MemoryData --------------------------------------------------------------------
MEMORY = 'name: "m" type: "MemoryData" top: "data" top: "label" ' \
         'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }'


def test_memory_data_cycles_through_batches():
    layer, top = _setup(MEMORY)
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], np.float32)
    layer.set_input_arrays(data, labels)
    for start in (0, 2, 0):
        layer.forward([], top)
        np.testing.assert_array_equal(top[0].data, data[start:start + 2])
        assert top[1].shape == (2, 1, 1, 1)  # Caffe's Forward_cpu reshapes labels to 4-D
        np.testing.assert_array_equal(top[1].data.ravel(), labels[start:start + 2])


@pytest.mark.parametrize("data, labels, match", [
    (np.zeros((4, 1, 2, 3)), np.zeros(4, np.float32), "float32"),
    (np.zeros((4, 1, 3, 2), np.float32).transpose(0, 1, 3, 2), np.zeros(4, np.float32), "C-contiguous"),
    (np.zeros((4, 1, 2, 2), np.float32), np.zeros(4, np.float32), r"shape \(4, 1, 2, 2\)"),
    (np.zeros((3, 1, 2, 3), np.float32), np.zeros(3, np.float32), "multiple of batch_size 2"),
    (np.zeros((4, 1, 2, 3), np.float32), np.zeros(2, np.float32), "same first dimension"),
])
def test_memory_data_rejects_bad_arrays(data, labels, match):
    layer, _ = _setup(MEMORY)
    with pytest.raises(DataError, match=match):
        layer.set_input_arrays(data, labels)


def test_memory_data_needs_arrays_and_params():
    layer, top = _setup(MEMORY)
    with pytest.raises(DataError, match="set_input_arrays"):
        layer.forward([], top)
    with pytest.raises(NetError, match="positive"):
        _setup('name: "m" type: "MemoryData" top: "a" top: "b" memory_data_param { batch_size: 2 }')


# -- DummyData ---------------------------------------------------------------------
def test_dummy_constant_filled_once_others_every_forward():
    layer, top = _setup('name: "x" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                        'shape { dim: 2 dim: 3 } shape { dim: 4 } '
                        'data_filler { type: "constant" value: 1.5 } data_filler { type: "gaussian" } }')
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    np.testing.assert_array_equal(top[0].data, 1.5)
    np.testing.assert_array_equal(top[1].data, 0)  # the gaussian top is first filled by forward
    top[0].data[...] = 9
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, 9)
    first = top[1].data.copy()
    layer.forward([], top)
    assert np.all(first != 0) and np.all(top[1].data != first)


def test_dummy_legacy_dims_and_default_filler():
    _, top = _setup('name: "x" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                    'num: 2 channels: 3 channels: 4 height: 5 width: 6 }')
    assert top[0].shape == (2, 3, 5, 6) and top[1].shape == (2, 4, 5, 6)
    np.testing.assert_array_equal(top[1].data, 0)


def test_dummy_one_filler_for_all_tops():
    layer, top = _setup('name: "x" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                        'shape { dim: 3 } data_filler { type: "uniform" min: 2 max: 3 } }')
    layer.forward([], top)
    assert all(np.all((t.data >= 2) & (t.data <= 3)) for t in top)


@pytest.mark.parametrize("param, match", [
    ("shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }", "'shape' once"),
    ("shape { dim: 1 } num: 1", "both shape and legacy"),
    ("num: 1 num: 1 num: 1 channels: 1 height: 1 width: 1", "'num' once"),
    ("shape { dim: 1 } data_filler {} data_filler {} data_filler {}", "data_filler"),
])
def test_dummy_bad_params(param, match):
    with pytest.raises(NetError, match=match):
        _setup(f'name: "x" type: "DummyData" top: "a" top: "b" dummy_data_param {{ {param} }}')


# -- Input -------------------------------------------------------------------------
def test_input_shapes():
    _, top = _setup('name: "i" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 dim: 2 } }')
    assert top[0].shape == top[1].shape == (1, 2)
    _, top = _setup('name: "i" type: "Input" top: "a" top: "b" '
                    'input_param { shape { dim: 1 } shape { dim: 3 dim: 4 } }')
    assert top[0].shape == (1,) and top[1].shape == (3, 4)
    layer, top = _setup('name: "i" type: "Input" top: "a"', 1)
    top[0].reshape(2, 5)
    layer.forward([], top)
    assert top[0].shape == (2, 5)
    with pytest.raises(NetError, match="shape"):
        _setup('name: "i" type: "Input" top: "a" top: "b" top: "c" '
               'input_param { shape { dim: 1 } shape { dim: 2 } }', 3)


def test_data_layers_take_no_bottom():
    layer = create_layer(layer_param('name: "i" type: "Input" top: "a"'), TRAIN)
    with pytest.raises(NetError, match="bottom"):
        layer.setup([Blob(1)], [Blob()])


# -- HDF5Data, HDF5Output ----------------------------------------------------------
def make(text, phase=TEST):
    return create_layer(layer_param(text), phase)


@pytest.fixture
def h5_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    paths = []
    for k, rows in enumerate((3, 2)):
        path = tmp_path / f"part{k}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = (np.arange(rows * 4, dtype=np.float64) + 100 * k).reshape(rows, 2, 2)
            f["label"] = np.arange(rows, dtype=np.float32) + 10 * k
        paths.append(str(path))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    return str(listing)


def test_hdf5_data_reads_rows_across_files(h5_files):
    layer = make(f'name: "h" type: "HDF5Data" top: "data" top: "label" '
                 f'hdf5_data_param {{ source: "{h5_files}" batch_size: 4 }}')
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert tops[0].shape == (4, 2, 2) and tops[1].shape == (4,)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[1].data, [0, 1, 2, 10])
    np.testing.assert_array_equal(tops[0].data[3].ravel(), [100, 101, 102, 103])
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[1].data, [11, 0, 1, 2])  # wraps to the first file


def test_hdf5_data_shuffle_is_seeded(h5_files):
    def run():
        set_random_seed(3)
        layer = make(f'name: "h" type: "HDF5Data" top: "data" top: "label" '
                     f'hdf5_data_param {{ source: "{h5_files}" batch_size: 5 shuffle: true }}')
        tops = [Blob(()), Blob(())]
        layer.setup([], tops)
        layer.forward([], tops)
        return tops[1].data.copy()
    first = run()
    assert sorted(first) == [0, 1, 2, 10, 11]
    np.testing.assert_array_equal(first, run())


def test_hdf5_data_missing_dataset(h5_files):
    layer = make(f'name: "h" type: "HDF5Data" top: "images" hdf5_data_param {{ source: "{h5_files}" batch_size: 1 }}')
    with pytest.raises(DataError, match="has no dataset 'images'"):
        layer.setup([], [Blob(())])


def test_hdf5_output_appends_batches(tmp_path):
    h5py = pytest.importorskip("h5py")
    out = tmp_path / "out.h5"
    layer = make(f'name: "o" type: "HDF5Output" bottom: "d" bottom: "l" hdf5_output_param {{ file_name: "{out}" }}')
    d, l = Blob((2, 3)), Blob((2,))
    layer.setup([d, l], [])
    for k in range(2):
        d.data[...] = k
        l.data[...] = [k, k + 1]
        layer.forward([d, l], [])
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (4, 3)
        np.testing.assert_array_equal(f["label"][:], [0, 1, 1, 2])


# -- ImageData ---------------------------------------------------------------------
def test_image_data(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    colours = [(255, 0, 0), (0, 128, 255), (10, 20, 30)]
    lines = []
    for i, c in enumerate(colours):
        Image.new("RGB", (6, 4 + i), c).save(tmp_path / f"img{i}.png")
        lines.append(f"img{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    layer = make(f'name: "i" type: "ImageData" top: "data" top: "label" image_data_param {{ '
                 f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 4 '
                 'new_height: 5 new_width: 3 } transform_param { scale: 0.5 }')
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert tops[0].shape == (4, 3, 5, 3)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[1].data, [0, 1, 2, 0])
    # BGR order, scaled by 0.5
    np.testing.assert_allclose(tops[0].data[1, :, 2, 1], [127.5, 64, 0])
    np.testing.assert_allclose(tops[0].data[0, :, 0, 0], [0, 0, 127.5])
