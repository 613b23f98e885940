"""The process-wide random generator, as Caffe's Caffe::rng_stream().

Fillers, Dropout, data shuffling/cropping/mirroring all draw from one seeded
numpy Generator, so a seeded run is reproducible.  (Caffe's own boost
mt19937 streams are not reproduced: seeded npcaffe runs repeat each other,
not Caffe's random initialisations.  The DNS gate uses its own glibc rand()
emulation, see npcaffe.kernels.glibc_rand.)
"""
import numpy as np

_generator = np.random.default_rng()


def set_random_seed(seed):
    """Reseed the shared generator (Caffe::set_random_seed)."""
    global _generator
    _generator = np.random.default_rng(int(seed))


def get_rng():
    return _generator


def get_state():
    return _generator.bit_generator.state


def set_state(state):
    _generator.bit_generator.state = state
