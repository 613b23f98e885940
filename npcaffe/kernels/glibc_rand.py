"""glibc's rand(), bit for bit: the one random stream the DNS fork's gate draws from.

The DNS layers (compress_conv_layer.cpp, compress_inner_product_layer.cpp)
call C `rand()` once per C-layer per TRAIN forward and never call `srand`, so
an upstream run sees glibc's default sequence 1804289383, 846930886,
1681692777, ...  To replay it we emulate glibc's TYPE_3 generator
(stdlib/random_r.c): 31 words of state, an additive lagged-Fibonacci step

    r[i] = r[i-3] + r[i-31]  (mod 2^32),   output = r[i] >> 1,

seeded by `srandom` with the 16807 "minimal standard" LCG and then run for
310 discarded outputs.  glibc's static initial table equals the state after
`srand(1)`, so "never seeded" and "seeded with 1" are one and the same.

There is ONE sequence per process, shared by every C-layer in layer order,
as upstream's C library state is.  `get_state`/`set_state` give a JSON-able
copy for solver snapshots; `reset` returns to the default (seed 1) state, as
a freshly started upstream process is.
"""
from ..errors import WeightsError

RAND_MAX = 2147483647

_DEG = 31   # TYPE_3: degree of the feedback polynomial
_SEP = 3    # TYPE_3: distance between the front and rear taps

_state = []
_front = 0
_rear = 0


def srand(seed):
    """Seed the shared sequence (glibc srandom_r with TYPE_3)."""
    global _front, _rear
    seed = int(seed) & 0xFFFFFFFF  # srand takes an unsigned int
    if seed == 0:
        seed = 1  # glibc: a zero seed would make the generator stick at 0
    state = [seed]
    word = _int32(seed)  # glibc keeps the running word in an int32_t
    for _ in range(1, _DEG):
        # 16807 * word mod (2^31 - 1) by Schrage's method, as glibc writes it,
        # with C's truncating division (the word is negative for seeds >= 2^31).
        hi = abs(word) // 127773 * (1 if word >= 0 else -1)
        lo = word - hi * 127773
        word = _int32(16807 * lo - 2836 * hi)
        if word < 0:
            word += 2147483647
        state.append(word & 0xFFFFFFFF)
    _state[:] = state
    _front, _rear = _SEP, 0
    for _ in range(10 * _DEG):
        rand()


def _int32(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def rand():
    """Next value of the shared sequence, in [0, RAND_MAX] (glibc random_r)."""
    global _front, _rear
    value = (_state[_front] + _state[_rear]) & 0xFFFFFFFF
    _state[_front] = value
    _front += 1
    _rear += 1
    if _front == _DEG:
        _front = 0
    elif _rear == _DEG:
        _rear = 0
    return value >> 1


def reset():
    """Back to glibc's default state (as if srand was never called, i.e. srand(1))."""
    srand(1)


def get_state():
    """A JSON-able copy of the sequence's position."""
    return {"generator": "glibc TYPE_3", "table": list(_state), "front": _front, "rear": _rear}


def set_state(state):
    """Continue the sequence from a `get_state()` copy."""
    global _front, _rear
    table = [int(v) & 0xFFFFFFFF for v in state["table"]]
    front, rear = int(state["front"]), int(state["rear"])
    if len(table) != _DEG or (front - rear) % _DEG != _SEP:
        raise WeightsError(f"not a glibc TYPE_3 rand() state: {len(table)} words (need {_DEG}), "
                         f"front {front} / rear {rear} (must be {_SEP} apart modulo {_DEG})")
    _state[:] = table
    _front, _rear = front, rear


reset()
