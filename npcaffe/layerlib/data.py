"""Data layers: Data (LMDB; LevelDB is refused with advice), MemoryData, DummyData, Input, HDF5Data, HDF5Output,
ImageData.

They have no bottoms (HDF5Output, which writes its bottoms to a file, excepted) and no backward pass.  Data and MemoryData load their
batch in forward and reshape their tops to it, as Caffe's
BasePrefetchingDataLayer::Forward_cpu does; reshape() between forwards
leaves the tops alone (BaseDataLayer::Reshape is empty).
"""
import numpy as np

from ..data.datum import datum_pixels, decode_image, key_text, parse_datum
from ..data.db import open_db
from ..data.transformer import DataTransformer
from ..errors import DataError, NetError
from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2
from ..rng import get_rng


class _DataLayer(Layer):
    exact_num_bottom = 0
    # Data-parallel training (npcaffe.distributed) gives Data and HDF5Data layers of a TRAIN net
    # their share: this is rank r of n, and keeps the records whose position modulo n is r.
    splits_records = False
    shard = (0, 1)

    @property
    def where(self):
        return f"layer '{self.name}' ({self.type})"

    def reshape(self, bottom, top):
        pass


def _shard_skips(shard, batch_size):
    """Records to pass over before each of a batch's batch_size records, and after the last, for
    rank r of n (Caffe 1.0's DataLayer::Skip: keep the records whose position modulo n is r).

    Counted from the batch's first position, which is the same on every rank: the n ranks together
    consume n * batch_size records per batch, the batch of one process with an n times larger
    batch_size, and end where it would, so the read position a snapshot stores is that process's."""
    rank, count = shard
    return [rank] + [count - 1] * (batch_size - 1) + [count - 1 - rank]


@register("Data")
class Data(_DataLayer):
    """Batches of Datum records read in key order from an LMDB (data_layer.cpp).

    Tops: data (N, C, H, W), or (N, C, crop, crop) with crop_size; optional
    label (N,) as float.  N = data_param.batch_size.  The records pass
    through the DataTransformer (scale, mean_file / mean_value, crop_size,
    mirror, force_color / force_gray; see npcaffe.data.transformer).

    As in Caffe: the source path is relative to the working directory; the
    reader wraps to the first key after the last, so the batch after the
    end continues from the start; each batch takes its shape from its first
    record (records of another shape in the same batch are an error).
    rand_skip skips rng.integers(rand_skip) records once at setup, as the
    caffe.proto comment describes (Caffe 1.0's Data layer and the DNS fork
    ignore the field; it only matters when set).
    """
    min_top = 1
    max_top = 2
    splits_records = True

    def layer_setup(self, bottom, top):
        dp = self.layer_param.data_param
        self.batch_size = int(dp.batch_size)
        if self.batch_size <= 0:
            raise NetError(f"{self.where}: data_param.batch_size must be positive, got {self.batch_size}")
        self.output_labels = len(top) > 1
        self.transformer = DataTransformer(self.layer_param.transform_param, self.phase, where=self.where)
        self.reader = open_db(dp.source, dp.backend, where=f"{self.where} source '{dp.source}'")
        if dp.rand_skip:
            for _ in range(int(get_rng().integers(dp.rand_skip))):
                self.reader.next()
        pixels = self._pixels(parse_datum(self.reader.value(), self.reader.key(), self.reader.where),
                              self.reader.key())
        shape = self.transformer.infer_shape(pixels)
        top[0].reshape((self.batch_size,) + shape)
        if self.output_labels:
            top[1].reshape((self.batch_size,))

    def _pixels(self, datum, key):
        t = self.transformer
        return datum_pixels(datum, key, self.reader.where, t.force_color, t.force_gray)

    def forward_cpu(self, bottom, top):
        reader = self.reader
        examples, labels = [], np.empty(self.batch_size, dtype=np.float32)
        skips = _shard_skips(self.shard, self.batch_size)
        for i in range(self.batch_size):
            for _ in range(skips[i]):
                reader.next()
            key = reader.key()
            datum = parse_datum(reader.value(), key, reader.where)
            pixels = self._pixels(datum, key)
            if examples and pixels.shape != examples[0].shape:
                raise DataError(f"{self.where}: record {key_text(key)} of '{reader.path}' has shape {pixels.shape}, "
                                f"but this batch started with shape {examples[0].shape}")
            examples.append(pixels)
            labels[i] = datum.label
            reader.next()
        for _ in range(skips[-1]):
            reader.next()
        top[0].reshape((self.batch_size,) + self.transformer.infer_shape(examples[0]))
        self.transformer.transform_batch(examples, top[0].data)
        if self.output_labels:
            top[1].reshape((self.batch_size,))
            top[1].data[...] = labels

    # The read position goes into npcaffe's snapshot sidecar, so a resumed run reads
    # the batches an uninterrupted one would (upstream restarts from the first record).
    def get_state(self):
        return {"position": self.reader.position}

    def set_state(self, state):
        self.reader.seek(state["position"])


@register("MemoryData")
class MemoryData(_DataLayer):
    """Batches from arrays held in memory (memory_data_layer.cpp).

    Tops: data (batch_size, channels, height, width) and label.  Give the
    arrays with set_input_arrays(data, labels) (pycaffe's
    Net.set_input_arrays); each forward takes the next batch_size rows and
    wraps around.  No transformation is applied to the arrays (Caffe's
    Reset does none either).  Quirk mirrored: the label top is (N,) after
    setup but (N, 1, 1, 1) after a forward.
    """
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels, self.height, self.width = (
            int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise NetError(f"{self.where}: batch_size, channels, height and width must be specified "
                            f"and positive in memory_data_param, got {self.batch_size}, {self.channels}, "
                            f"{self.height}, {self.width}")
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)
        self._data = self._labels = None
        self.pos = 0

    def set_input_arrays(self, data, labels):
        """Use data (N, channels, height, width) and labels (N,) or (N, 1, 1, 1),
        both float32 and C-contiguous, N a multiple of batch_size.  The arrays
        are referenced, not copied, as in pycaffe."""
        sample = (self.channels, self.height, self.width)
        for name, arr, tail in (("data", data, sample), ("labels", labels, (1, 1, 1))):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or not arr.flags.c_contiguous:
                raise DataError(f"{self.where}: set_input_arrays {name} must be a C-contiguous float32 "
                                f"numpy array (use np.ascontiguousarray(x, dtype=np.float32))")
            if arr.shape[1:] != tail and not (name == "labels" and arr.ndim == 1):
                raise DataError(f"{self.where}: set_input_arrays {name} has shape {arr.shape}, "
                                f"expected (N, {', '.join(map(str, tail))})")
        if data.shape[0] != labels.shape[0]:
            raise DataError(f"{self.where}: set_input_arrays data has {data.shape[0]} rows but labels "
                            f"{labels.shape[0]}; they must have the same first dimension")
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise DataError(f"{self.where}: set_input_arrays got {data.shape[0]} rows; the first "
                            f"dimension must be a positive multiple of batch_size {self.batch_size}")
        self._data, self._labels = data, labels.reshape(-1)
        self.pos = 0

    def forward_cpu(self, bottom, top):
        if self._data is None:
            raise DataError(f"{self.where}: no data; call set_input_arrays(data, labels) before forward")
        n = self.batch_size
        top[0].reshape(n, self.channels, self.height, self.width)
        top[1].reshape(n, 1, 1, 1)
        top[0].data[...] = self._data[self.pos: self.pos + n]
        top[1].data[...] = self._labels[self.pos: self.pos + n].reshape(n, 1, 1, 1)
        self.pos = (self.pos + n) % self._data.shape[0]

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


@register("DummyData")
class DummyData(_DataLayer):
    """Tops of given shapes filled by fillers (dummy_data_layer.cpp).

    dummy_data_param: `shape` (once, or once per top) or the legacy
    num/channels/height/width (each once or once per top); data_filler:
    none (constant 0), one for all tops, or one per top.  As in Caffe,
    tops with a constant filler are filled once at setup and never again,
    the others are refilled at every forward (and first filled by the
    first forward, not at setup).
    """
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        if len(p.data_filler) not in (0, 1, n):
            raise NetError(f"{self.where}: give 0, 1 or {n} (one per top) data_filler; got {len(p.data_filler)}")
        legacy = {f: list(getattr(p, f)) for f in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(p.shape):
                raise NetError(f"{self.where}: both shape and legacy num/channels/height/width were specified")
            for field, values in legacy.items():
                if len(values) not in (1, n):
                    raise NetError(f"{self.where}: specify '{field}' once or once per top ({n}); "
                                   f"specified {len(values)}")
            shapes = [tuple(int(v[0] if len(v) == 1 else v[i]) for v in legacy.values()) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise NetError(f"{self.where}: specify 'shape' once or once per top ({n}); specified {len(p.shape)}")
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        if len(p.data_filler) == 0:
            self.fillers = [caffe_pb2.FillerParameter(type="constant", value=0)] * n
        elif len(p.data_filler) == 1:
            self.fillers = [p.data_filler[0]] * n
        else:
            self.fillers = list(p.data_filler)
        for i, (blob, shape) in enumerate(zip(top, shapes)):
            blob.reshape(shape)
            if self.fillers[i].type == "constant":
                fill(blob, self.fillers[i], where=f"{self.where} data_filler")

    def forward_cpu(self, bottom, top):
        for blob, filler in zip(top, self.fillers):
            if filler.type != "constant":
                fill(blob, filler, where=f"{self.where} data_filler")


@register("Input")
class Input(_DataLayer):
    """Tops whose values the user writes (input_layer.cpp).

    input_param.shape: once for all tops, once per top, or not at all (then
    the user reshapes the tops).  forward does nothing.
    """
    min_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise NetError(f"{self.where}: specify 'shape' once, once per top ({len(top)}) or not at all; "
                           f"got {len(shapes)}")
        for i, blob in enumerate(top):
            if len(shapes):
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def forward_cpu(self, bottom, top):
        pass


# -- HDF5 and image-list data ------------------------------------------------------------

def _h5py(where):
    try:
        import h5py
    except ImportError:
        raise DataError(f"{where}: reading or writing HDF5 needs h5py; install it with "
                        "`pip install npcaffe[hdf5]` (or `pip install h5py`)") from None
    return h5py


def _list_file(path, where, what):
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise DataError(f"{where}: cannot read the {what} list '{path}': {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{where}: the {what} list '{path}' is empty")
    return lines


@register("HDF5Data")
class HDF5Data(_DataLayer):
    """Batches read from HDF5 files (BVLC src/caffe/layers/hdf5_data_layer.cpp).

    hdf5_data_param.source is a text file listing .h5 files, one per line;
    each file holds one dataset per top, named as the top, all with the same
    number of rows.  Top j is (batch_size,) + that dataset's shape[1:],
    float32.  Rows are taken in order and the reader moves to the next file
    at the end of one, wrapping to the first.  With shuffle the file order
    is permuted at setup and at each wrap, and a file's rows are permuted
    when it is loaded and at each wrap of it, from npcaffe.rng (upstream's
    draws differ, not the scheme).  Needs h5py (extra `hdf5`).
    """
    min_top = 1
    splits_records = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise NetError(f"{self.where}: hdf5_data_param.batch_size must be positive, got {self.batch_size}")
        self.shuffle = p.shuffle
        self.top_names = list(self.layer_param.top) or [f"top{i}" for i in range(len(top))]
        self.files = _list_file(p.source, self.where, "HDF5 file")
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            get_rng().shuffle(self.file_order)
        self.current_file = 0
        self._load(self.files[self.file_order[0]])
        for blob, data in zip(top, self.arrays):
            blob.reshape((self.batch_size,) + data.shape[1:])

    def _load(self, path):
        h5py = _h5py(self.where)
        try:
            with h5py.File(path, "r") as f:
                arrays = []
                for name in self.top_names:
                    if name not in f:
                        raise DataError(f"{self.where}: HDF5 file '{path}' has no dataset '{name}' "
                                        f"(datasets: {sorted(f.keys())})")
                    arrays.append(np.asarray(f[name], dtype=np.float32))
        except OSError as e:
            raise DataError(f"{self.where}: cannot open HDF5 file '{path}': {e}") from None
        rows = {a.shape[0] if a.ndim else 0 for a in arrays}
        if len(rows) != 1 or 0 in rows:
            raise DataError(f"{self.where}: datasets {self.top_names} in '{path}' must be non-empty and have the "
                            f"same number of rows; shapes {[a.shape for a in arrays]}")
        self.arrays = arrays
        self.rows = np.arange(arrays[0].shape[0])
        if self.shuffle:
            get_rng().shuffle(self.rows)
        self.current_row = 0

    def _next(self):
        self.current_row += 1
        if self.current_row < len(self.rows):
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    get_rng().shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]])
        else:
            self.current_row = 0
            if self.shuffle:
                get_rng().shuffle(self.rows)

    def forward_cpu(self, bottom, top):
        skips = _shard_skips(self.shard, self.batch_size)
        for i in range(self.batch_size):
            for _ in range(skips[i]):
                self._next()
            row = self.rows[self.current_row]
            for blob, data in zip(top, self.arrays):
                if blob.shape[1:] != data.shape[1:]:
                    blob.reshape((self.batch_size,) + data.shape[1:])
                blob.data[i] = data[row]
            self._next()
        for _ in range(skips[-1]):
            self._next()


@register("HDF5Output")
class HDF5Output(Layer):
    """Write the bottoms (data, label) to an HDF5 file (BVLC src/caffe/layers/hdf5_output_layer.cpp).

    hdf5_output_param.file_name is created (truncated) at the first forward;
    every forward appends its batch to the datasets "data" and "label", which
    grow along axis 0.  Deliberate differences: upstream creates the file when
    the net is built, so merely loading a net truncates whatever file it names
    (a downloaded net could name any writable file); and upstream writes fixed
    datasets and so supports a single forward pass.  No tops, no backward.
    Needs h5py.
    """
    exact_num_bottom = 2
    exact_num_top = 0

    @property
    def where(self):
        return f"layer '{self.name}' (HDF5Output)"

    def layer_setup(self, bottom, top):
        _h5py(self.where)  # a missing h5py is found when the net is built
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise NetError(f"{self.where}: give hdf5_output_param.file_name")
        self.created = False  # the file is created (truncated) by the first forward

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        h5py = _h5py(self.where)
        if not self.created:
            try:
                with h5py.File(self.file_name, "w"):
                    pass
            except OSError as e:
                raise DataError(f"{self.where}: cannot create '{self.file_name}': {e}") from None
            self.created = True
        with h5py.File(self.file_name, "a") as f:
            for name, blob in zip(("data", "label"), bottom):
                values = blob.data
                if name not in f:
                    f.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:], chunks=True)
                    continue
                dataset = f[name]
                if dataset.shape[1:] != values.shape[1:]:
                    raise DataError(f"{self.where}: bottom '{blob.name}' {values.shape} does not fit the '{name}' "
                                    f"rows {dataset.shape[1:]} already written to '{self.file_name}'")
                start = dataset.shape[0]
                dataset.resize(start + values.shape[0], axis=0)
                dataset[start:] = values

    def backward_cpu(self, top, propagate_down, bottom):
        pass


@register("ImageData")
class ImageData(_DataLayer):
    """Batches of image files named in a list (BVLC src/caffe/layers/image_data_layer.cpp).

    image_data_param.source: one "path label" per line (path relative to
    root_folder, the label an integer after the last space).  Images are
    decoded with Pillow as 8-bit BGR (is_color, default) or grey, resized to
    new_height x new_width when both are set (bilinear, Pillow's, where
    upstream uses OpenCV's), then go through the DataTransformer.  Tops: data
    (batch_size, C, H, W) and label (batch_size,).  shuffle permutes the list
    at setup and at each wrap; rand_skip skips rng.integers(rand_skip) lines
    once.  The batch takes its shape from its first image.  Needs Pillow
    (extra `image`).
    """
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.image_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise NetError(f"{self.where}: image_data_param.batch_size must be positive, got {self.batch_size}")
        if (p.new_height > 0) != (p.new_width > 0):
            raise NetError(f"{self.where}: give both new_height and new_width, or neither "
                           f"(got {p.new_height} x {p.new_width})")
        self.lines = []
        for number, line in enumerate(_list_file(p.source, self.where, "image"), start=1):
            path, _, label = line.rpartition(" ")
            try:
                self.lines.append((path, int(label)))
            except ValueError:
                raise DataError(f"{self.where}: {p.source}:{number}: expected 'path label', got {line!r}") from None
        self.transformer = DataTransformer(self.layer_param.transform_param, self.phase, where=self.where)
        if p.shuffle:
            get_rng().shuffle(self.lines)
        self.position = int(get_rng().integers(p.rand_skip)) % len(self.lines) if p.rand_skip else 0
        shape = self.transformer.infer_shape(self._image(self.lines[self.position][0]))
        top[0].reshape((self.batch_size,) + shape)
        top[1].reshape((self.batch_size,))

    def _image(self, path):
        p = self.layer_param.image_data_param
        full = p.root_folder + path
        try:
            with open(full, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise DataError(f"{self.where}: could not load image '{full}': {e}") from None
        pixels = decode_image(raw, full, self.where, force_color=p.is_color, force_gray=not p.is_color)
        if p.new_height > 0:
            from PIL import Image
            pixels = np.stack([np.asarray(Image.fromarray(plane).resize((p.new_width, p.new_height), Image.BILINEAR))
                               for plane in pixels])
        return pixels

    def forward_cpu(self, bottom, top):
        examples, labels = [], np.empty(self.batch_size, np.float32)
        for i in range(self.batch_size):
            path, label = self.lines[self.position]
            pixels = self._image(path)
            if examples and pixels.shape != examples[0].shape:
                raise DataError(f"{self.where}: image '{path}' has shape {pixels.shape}, but this batch started with "
                                f"{examples[0].shape}; set new_height and new_width to resize")
            examples.append(pixels)
            labels[i] = label
            self.position += 1
            if self.position == len(self.lines):
                self.position = 0
                if self.layer_param.image_data_param.shuffle:
                    get_rng().shuffle(self.lines)
        top[0].reshape((self.batch_size,) + self.transformer.infer_shape(examples[0]))
        self.transformer.transform_batch(examples, top[0].data)
        top[1].reshape((self.batch_size,))
        top[1].data[...] = labels
