"""Downloads checked against recorded checksums: `npcaffe fetch-model` and MNIST's mirrors.

In the spirit of Caffe's scripts/download_model_binary.py (a model's URL and
checksum written down beside it; the download verified; a file already
there and intact is not fetched again), with every name in one table here:
the DNS release's reference models live in the fork's own repository
(yiwenguo/Dynamic-Network-Surgery, models/lenet5 and models/lenet300100),
pinned to the commit the copies in ../shared/upstream-dns come from
(27d4926, whose blobs have exactly these sha256 sums).  Caffe's own model
zoo (BVLC/caffe models/<name>/readme.md) records a caffemodel_url and a sha1
per model, which download_model_binary.py checks; those entries keep that
sha1, the only sum published for them.

`download` tries each URL in turn (a mirror list) and keeps the first file
whose sha256 matches; a wrong file never replaces anything.  With
NPCAFFE_OFFLINE=1 nothing is fetched (the error says what to do instead).
"""
import hashlib
import os
import tempfile
import urllib.request

from . import glog, progress
from .errors import DataError

_DNS_COMMIT = "27d4926f0f6dfb218da0d6e8b4a3e45b6087549f"


def _dns_urls(path):
    return [f"https://github.com/yiwenguo/Dynamic-Network-Surgery/raw/{_DNS_COMMIT}/{path}",
            f"https://raw.githubusercontent.com/yiwenguo/Dynamic-Network-Surgery/{_DNS_COMMIT}/{path}"]


# name -> the file, where it comes from and what it must hash to.
MODELS = {
    "dns-lenet5": {
        "file": "caffe_lenet5_original.caffemodel", "net": "lenet5",
        "what": "the DNS release's dense LeNet-5 (0.91% test error), the surgery's starting point",
        "urls": _dns_urls("models/lenet5/caffe_lenet5_original.caffemodel"), "bytes": 1725006,
        "sha256": "96b8c61110b68aed87801c67ce87a40cf17f6a56884eff8b5c7e2601151be736"},
    "dns-lenet300100": {
        "file": "caffe_lenet300100_original.caffemodel", "net": "lenet300100",
        "what": "the DNS release's dense LeNet-300-100 (2.28% test error), the surgery's starting point",
        "urls": _dns_urls("models/lenet300100/caffe_lenet300100_original.caffemodel"), "bytes": 1066944,
        "sha256": "8817d098d5d4eed203a88292f9ffb9d02e66669a075cd210f82f1410659159bd"},
    "dns-lenet5-sparse": {
        "file": "caffe_lenet5_sparse.caffemodel", "net": "lenet5",
        "what": "the DNS release's pruned LeNet-5 (3,993 of 431,080 parameters kept)",
        "urls": _dns_urls("models/lenet5/caffe_lenet5_sparse.caffemodel"), "bytes": 1725248,
        "sha256": "daa4331aea0930bb8b79f6958097afdb7b8995932b59a11f26497c95fd79ddac"},
    "dns-lenet300100-sparse": {
        "file": "caffe_lenet300100_sparse.caffemodel", "net": "lenet300100",
        "what": "the DNS release's pruned LeNet-300-100 (4,988 of 266,610 parameters kept)",
        "urls": _dns_urls("models/lenet300100/caffe_lenet300100_sparse.caffemodel"), "bytes": 1067128,
        "sha256": "6c14afc8d98aadc553b6f251b8599c66a0c2f07485b3c665f6af8863e6372abc"},
}


def _zoo(name, what, sha1):
    """A BVLC model-zoo entry as its readme.md front matter gives it."""
    return {"file": f"{name}.caffemodel", "what": what, "sha1": sha1,
            "urls": [f"http://dl.caffe.berkeleyvision.org/{name}.caffemodel"],
            "use": f"npcaffe prune-report --model deploy.prototxt --weights {name}.caffemodel, with the "
                   f"deploy.prototxt of BVLC/caffe's models/{name}/"}


MODELS.update({
    "bvlc_alexnet": _zoo("bvlc_alexnet", "BVLC's AlexNet (ImageNet, 57.1% top-1, centre crop)",
                         "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
    "bvlc_reference_caffenet": _zoo("bvlc_reference_caffenet", "BVLC's CaffeNet (ImageNet, 57.4% top-1)",
                                    "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
    "bvlc_googlenet": _zoo("bvlc_googlenet", "BVLC's GoogleNet (ImageNet, 68.7% top-1)",
                           "405fc5acd08a3bb12de8ee5e23a96bec22f08204"),
    "bvlc_reference_rcnn_ilsvrc13": _zoo("bvlc_reference_rcnn_ilsvrc13", "BVLC's R-CNN for ILSVRC13 detection",
                                         "bdd8abb885819cba5e2fe1eb36235f2319477e64"),
    "finetune_flickr_style": _zoo("finetune_flickr_style", "CaffeNet fine-tuned on Flickr Style (20 styles)",
                                  "b61b5cef7d771b53b0c488e78d35ccadc073e9cf"),
})


def checksum(entry):
    """(algorithm, hex digest) a MODELS entry must hash to: its sha256, else its sha1."""
    return ("sha256", entry["sha256"]) if "sha256" in entry else ("sha1", entry["sha1"])


class FetchError(DataError):
    """Nothing usable could be downloaded (offline, refused, or every copy had the wrong sum)."""


def cache_root():
    """$NPCAFFE_CACHE, else ~/.cache/npcaffe."""
    return os.environ.get("NPCAFFE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "npcaffe")


def offline():
    return os.environ.get("NPCAFFE_OFFLINE", "") not in ("", "0")


def sha256_of(path):
    return hash_of(path, "sha256")


def hash_of(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _urlopen(url, timeout):
    """The one network call (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _copy_url(url, dest, opener, label, algorithm):
    """Stream url into the open file dest; returns its hex digest by `algorithm`."""
    h = hashlib.new(algorithm)
    with opener(url, timeout=60) as response:
        size = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        with progress.bar(label, int(size) if size and size.isdigit() else None, unit="B", leave=False) as shown:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                dest.write(chunk)
                h.update(chunk)
                shown.update(len(chunk))
    return h.hexdigest()


def download(urls, dest, digest, label, opener=None, algorithm="sha256"):
    """Fetch the first of `urls` whose content hashes to `digest` (by `algorithm`) into dest (atomically).

    FetchError lists every URL tried and why it failed."""
    if offline():
        raise FetchError(f"{label}: not downloaded, NPCAFFE_OFFLINE is set (would fetch {urls[0]})")
    opener = opener or _urlopen
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", dir=directory)
        try:
            glog.info(f"Downloading {label} from {url}")
            with os.fdopen(fd, "wb") as f:
                actual = _copy_url(url, f, opener, label, algorithm)
            if actual != digest:
                failures.append(f"{url}: {algorithm} {actual}, expected {digest} (not the recorded file)")
                continue
            os.replace(tmp, dest)
            glog.info(f"{dest}: {algorithm} {actual} verified")
            return dest
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors; ValueError: a bad URL
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise FetchError(f"{label}: every download failed:\n  " + "\n  ".join(failures))


def model_path(name, out=None):
    """Where fetch_model keeps a model: DIR/<file> for out=DIR, else the cache's models/<file>."""
    return os.path.join(out or os.path.join(cache_root(), "models"), MODELS[name]["file"])


def cached_model(name, out=None):
    """The model's path if it is already there with the right checksum, else None (nothing fetched)."""
    path = model_path(name, out)
    algorithm, digest = checksum(MODELS[name])
    return path if os.path.isfile(path) and hash_of(path, algorithm) == digest else None


def fetch_model(name, out=None, opener=None):
    """Path of a verified copy of MODELS[name] (downloaded unless one is there already).

    FetchError names the URL and the --weights alternative when it cannot be had."""
    if name not in MODELS:
        raise DataError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    entry = MODELS[name]
    algorithm, digest = checksum(entry)
    path = model_path(name, out)
    if cached_model(name, out):
        glog.info(f"{path}: already there, {algorithm} verified")
        return path
    if os.path.exists(path):
        glog.warning(f"{path}: {algorithm} {hash_of(path, algorithm)} is not the recorded {digest}; "
                     "downloading it again")
    try:
        return download(entry["urls"], path, digest, f"{name} ({entry['file']})", opener=opener, algorithm=algorithm)
    except FetchError as exc:
        use = entry.get("use") or f"npcaffe surgery {entry['net']} --weights {entry['file']}"
        raise FetchError(
            f"{exc}\n{name} is {entry['what']}. Without the network: download {entry['urls'][0]} by hand "
            f"({algorithm} {digest}) and pass it with --weights PATH (e.g. {use}), or put it at {path}.") from None
