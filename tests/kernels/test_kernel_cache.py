"""npcaffe/kernels/__init__.py: with no writable place for Numba's cache, the kernels still load."""
import os
import subprocess
import sys

# Numba's other locators (the package's __pycache__, ~/.cache/numba) are writable here, and root
# writes anywhere; narrowing the list to NUMBA_CACHE_DIR, set below a regular file, gives Numba's
# "no locator available" situation of a read-only install run by a user without a home.
SCRIPT = """
import numba.core.caching as caching
caching.CacheImpl._locator_classes = [caching.UserProvidedCacheLocator]
import numpy as np
from npcaffe.kernels import im2col
print("loaded")
"""


def test_kernels_load_and_cache_in_tmp_when_numba_has_nowhere_to_write(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / "cache"), TMPDIR=str(tmp_path), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr  # was a RuntimeError at import
    assert "Traceback" not in done.stderr
    fallback = tmp_path / f"npcaffe-numba-cache-{os.getuid()}"
    warning = [line for line in done.stderr.splitlines() if line.startswith("W")]
    assert len(warning) == 1 and f"NUMBA_CACHE_DIR={blocker / 'cache'}" in warning[0]
    assert warning[0].endswith(f"caching in {fallback} (set NUMBA_CACHE_DIR to choose)")
    assert fallback.is_dir()
