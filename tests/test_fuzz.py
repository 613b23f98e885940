"""Fuzzing the readers with mutated real files (tests/fuzzing.py): every failure is an npcaffe error
naming the file, no case hangs, none kills the worker, memory stays bounded."""
import pytest

import fuzzing

PEAK_RSS_MIB = 2048  # the worst case builds a LeNet with a 100,000-image batch: 0.6 GB of blobs


def check(result):
    assert result["bad"] == [], result["bad"][:5]
    assert sum(result["tally"].values()) == result["cases"]
    assert result["tally"].get("npcaffe", 0) > result["cases"] // 2, result["tally"]  # the mutations do bite
    assert result["peak_rss_mib"] < PEAK_RSS_MIB


def test_fuzz_a_few_hundred_cases():
    check(fuzzing.run(200, seed=0))


@pytest.mark.slow
def test_fuzz_ten_thousand_cases():
    check(fuzzing.run(10000, seed=1, nice=10))
