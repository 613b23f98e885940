import io

import pytest

from helpers import quiet_glog


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (minutes); run with -m slow")


@pytest.fixture
def quiet_log():
    """npcaffe.glog's INFO lines off for the whole test (warnings and errors still print), as `--quiet`."""
    with quiet_glog():
        yield


@pytest.fixture
def glog_capture():
    """Every npcaffe.glog line of the test, INFO to ERROR, written to this StringIO instead of stderr."""
    from npcaffe import glog
    stream = io.StringIO()
    glog.set_stream(stream)
    yield stream
    glog.set_stream(None)
