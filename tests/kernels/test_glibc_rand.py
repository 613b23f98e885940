"""glibc rand() emulation against the real glibc of this machine."""
import ctypes
import json

import pytest

from npcaffe.kernels import glibc_rand


@pytest.fixture
def libc():
    try:
        lib = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("no glibc on this machine")
    lib.rand.restype = ctypes.c_int
    lib.srand.argtypes = [ctypes.c_uint]
    yield lib
    # Leave libc as a fresh process has it: other code in this process may draw.
    lib.srand(1)


@pytest.fixture(autouse=True)
def fresh_sequence():
    glibc_rand.reset()
    yield
    glibc_rand.reset()


def test_default_sequence_starts_like_an_unseeded_process():
    assert [glibc_rand.rand() for _ in range(3)] == [1804289383, 846930886, 1681692777]
    assert glibc_rand.RAND_MAX == 2147483647


@pytest.mark.parametrize("seed", [1, 12345, 0, 2**31 + 7, 2**32 - 1])
def test_matches_glibc_for_10000_draws(libc, seed):
    libc.srand(seed)
    glibc_rand.srand(seed)
    ours = [glibc_rand.rand() for _ in range(10000)]
    theirs = [libc.rand() for _ in range(10000)]
    assert ours == theirs


def test_reset_is_srand_1():
    glibc_rand.srand(99)
    glibc_rand.rand()
    glibc_rand.reset()
    first = [glibc_rand.rand() for _ in range(5)]
    glibc_rand.srand(1)
    assert first == [glibc_rand.rand() for _ in range(5)]


def test_state_round_trips_through_json():
    for _ in range(1234):
        glibc_rand.rand()
    saved = json.loads(json.dumps(glibc_rand.get_state()))
    expected = [glibc_rand.rand() for _ in range(100)]
    glibc_rand.reset()
    glibc_rand.set_state(saved)
    assert [glibc_rand.rand() for _ in range(100)] == expected


def test_bad_state_is_refused():
    from npcaffe.errors import WeightsError
    state = glibc_rand.get_state()
    state["table"] = state["table"][:30]
    with pytest.raises(WeightsError, match="30 words"):
        glibc_rand.set_state(state)
