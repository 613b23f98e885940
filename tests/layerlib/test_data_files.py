"""HDF5Data, HDF5Output and ImageData layers."""
import numpy as np
import pytest

from helpers import layer_param
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import DataError
from npcaffe.layer import TEST, create_layer


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
        rng.set_random_seed(3)
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
