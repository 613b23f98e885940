"""Compute kernels: Numba-jitted with a plain NumPy reference beside each. No protobuf here.

The kernels are compiled with `cache=True`.  Numba looks for a directory to keep the compiled
code in (NUMBA_CACHE_DIR, the package's __pycache__, the user's cache directory) and raises a
RuntimeError at import when none is writable: a read-only install run by a user without a home,
a container, a shared machine's site-packages.  Before any kernel is defined we ask Numba's own
locators; when none works, the kernels cache in a directory of the user's under the temporary
directory instead, with one warning naming where and why.
"""
import os
import tempfile


def _writable_numba_cache():
    from numba.core import caching, config

    def probe():
        pass

    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "im2col.py")

    def usable():
        return any(cls.from_function(probe, source) for cls in caching.CacheImpl._locator_classes)

    if usable():
        return
    tried = os.environ.get("NUMBA_CACHE_DIR") or None
    user = getattr(os, "getuid", lambda: os.environ.get("USERNAME", "user"))()
    fallback = os.path.join(tempfile.gettempdir(), f"npcaffe-numba-cache-{user}")
    os.environ["NUMBA_CACHE_DIR"] = fallback
    config.reload_config()
    from .. import glog
    if not usable():
        from ..errors import NpcaffeError
        raise NpcaffeError(f"Numba cannot write its compiled kernels anywhere: not in "
                           f"{tried or 'NUMBA_CACHE_DIR (unset)'}, {os.path.dirname(source)}/__pycache__, the "
                           f"user's cache directory or {fallback}; set NUMBA_CACHE_DIR to a writable directory")
    glog.warning(f"Numba cannot write its kernel cache in {f'NUMBA_CACHE_DIR={tried}, ' if tried else ''}"
                 f"{os.path.dirname(source)}/__pycache__ or the user's cache directory; caching in {fallback} "
                 "(set NUMBA_CACHE_DIR to choose)")


_writable_numba_cache()
