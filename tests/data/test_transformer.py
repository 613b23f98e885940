"""DataTransformer against a per-element reference written from data_transformer.cpp."""
import numpy as np
import pytest

from npcaffe.data.transformer import DataTransformer
from npcaffe.errors import DataError
from npcaffe.io import array_to_blobproto
from npcaffe.proto import caffe_pb2
from npcaffe.rng import get_rng, set_random_seed
from google.protobuf import text_format

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def _param(text):
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


def _reference(pixels, param, phase, mean_file_array=None):
    """Caffe's Transform(const Datum&, Dtype*) loop, element by element, in float32."""
    c_n, h_n, w_n = pixels.shape
    crop = param.crop_size
    scale = np.float32(param.scale)
    rng = get_rng()
    do_mirror = param.mirror and bool(rng.integers(2))
    height, width, h_off, w_off = h_n, w_n, 0, 0
    if crop:
        height = width = crop
        if phase == TRAIN:
            h_off, w_off = int(rng.integers(h_n - crop + 1)), int(rng.integers(w_n - crop + 1))
        else:
            h_off, w_off = (h_n - crop) // 2, (w_n - crop) // 2
    means = list(np.float32(v) for v in param.mean_value)
    if len(means) == 1:
        means *= c_n
    out = np.zeros((c_n, height, width), np.float32)
    for c in range(c_n):
        for h in range(height):
            for w in range(width):
                element = np.float32(pixels[c, h_off + h, w_off + w])
                tw = width - 1 - w if do_mirror else w
                if mean_file_array is not None:
                    value = (element - mean_file_array[c, h_off + h, w_off + w]) * scale
                elif means:
                    value = (element - means[c]) * scale
                else:
                    value = element * scale
                out[c, h, tw] = value
    return out


def _check(pixels, text, phase, mean_file_array=None, seed=3):
    param = _param(text)
    set_random_seed(seed)
    got = DataTransformer(param, phase).transform(pixels)
    set_random_seed(seed)
    want = _reference(pixels, param, phase, mean_file_array)
    np.testing.assert_array_equal(got, want)
    return got


PIXELS = np.random.default_rng(1).integers(0, 256, (3, 7, 6), dtype=np.uint8)


@pytest.mark.parametrize("text", [
    "",
    "scale: 0.00390625",
    "scale: 0.017 mean_value: 104.5",
    "scale: 0.5 mean_value: 104 mean_value: 117 mean_value: 123",
])
@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_scale_and_mean_value_exact(text, phase):
    _check(PIXELS, text, phase)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_crop_and_mirror_follow_caffe(seed, phase):
    _check(PIXELS, "crop_size: 4 mirror: true scale: 0.25 mean_value: 3", phase, seed=seed)


def test_test_phase_crop_is_centre_and_mirror_still_random():
    out = DataTransformer(_param("crop_size: 3"), TEST).transform(PIXELS)
    np.testing.assert_array_equal(out, PIXELS[:, 2:5, 1:4])
    # mirror: Caffe flips a coin in TEST too.
    t = DataTransformer(_param("mirror: true"), TEST)
    outs = {t.transform(PIXELS).tobytes() for _ in range(40)}
    assert len(outs) == 2


def test_train_crop_offsets_cover_the_range():
    t = DataTransformer(_param("crop_size: 5"), TRAIN)
    seen = {t.transform(PIXELS)[0, 0, 0] for _ in range(200)}
    assert seen == {PIXELS[0, h, w] for h in range(3) for w in range(2)}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("double", [False, True])
def test_mean_file_relative_to_cwd(tmp_path, monkeypatch, legacy, double):
    mean = np.random.default_rng(2).uniform(0, 255, (3, 7, 6)).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, 3, 7, 6
    else:
        blob.shape.dim.extend([1, 3, 7, 6])
    if double:
        blob.double_data.extend(mean.astype(np.float64).ravel().tolist())
    else:
        blob.data.extend(mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    monkeypatch.chdir(tmp_path)
    for phase in (TRAIN, TEST):
        _check(PIXELS, 'mean_file: "mean.binaryproto" scale: 0.1 crop_size: 5 mirror: true', phase, mean)


def test_float_data_pixels():
    pixels = np.random.default_rng(3).normal(size=(2, 4, 4)).astype(np.float32)
    _check(pixels, "scale: 3 mean_value: 0.5", TRAIN)


def test_batch_equals_one_by_one():
    examples = [np.random.default_rng(i).integers(0, 256, (1, 5, 5), dtype=np.uint8) for i in range(4)]
    t = DataTransformer(_param("scale: 0.00390625 mean_value: 33"), TRAIN)
    out = np.empty((4, 1, 5, 5), np.float32)
    t.transform_batch(examples, out)
    for i, e in enumerate(examples):
        np.testing.assert_array_equal(out[i], t.transform(e))


@pytest.mark.parametrize("text, match", [
    ("mean_value: 1 mean_value: 2", "1 mean_value or as many as channels"),
    ("crop_size: 8", "crop_size 8 is larger"),
])
def test_bad_transforms(text, match):
    t = DataTransformer(_param(text), TRAIN)
    with pytest.raises(DataError, match=match):
        t.transform(PIXELS)


def test_bad_params(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="force_color and force_gray"):
        DataTransformer(_param("force_color: true force_gray: true"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="mean_file and mean_value"):
        DataTransformer(_param('mean_file: "m" mean_value: 1'))
    with pytest.raises(DataError, match="missing.binaryproto: file not found"):
        DataTransformer(_param('mean_file: "missing.binaryproto"'))
    (tmp_path / "m").write_bytes(array_to_blobproto(np.zeros((1, 3, 2, 2), np.float32)).SerializeToString())
    with pytest.raises(DataError, match=r"\(3, 2, 2\) but the data is \(3, 7, 6\)"):
        DataTransformer(_param('mean_file: "m"')).transform(PIXELS)
