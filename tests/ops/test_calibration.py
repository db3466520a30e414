"""The benchmarks' yardsticks: the FMA peak and the streaming read.  Their
figures depend on the machine, so the tests check what does not: a rate
comes back for every thread count and path, and bad buffers are refused."""
import numpy as np
import pytest

from pytransformer import _kernels


@pytest.mark.parametrize("nt", [1, 2])
def test_stream_read_gives_a_rate(nt):
    buf = np.ones(1 << 20, np.float32)
    g = _kernels.stream_read_gbs(nt, buffer=buf, passes=2)
    assert np.isfinite(g) and g > 0.1
    assert _kernels.stream_read_gbs(nt, nbytes=1 << 16, passes=1) > 0.0


def test_stream_read_reads_odd_lengths():
    """Lengths that are not whole lines of whole streams, one float included."""
    for n in (1, 17, 1000, 4096 * 4 + 3):
        assert _kernels.stream_read_gbs(2, buffer=np.ones(n, np.float32), passes=1) > 0.0


@pytest.mark.parametrize("bad", [np.ones(100), np.ones((10, 20), np.float32)[:, ::2], [1.0, 2.0]])
def test_stream_read_refuses_bad_buffers(bad):
    with pytest.raises((ValueError, TypeError)):
        _kernels.stream_read_gbs(1, buffer=bad)


def test_stream_read_refuses_tiny_sizes():
    with pytest.raises(ValueError):
        _kernels.stream_read_gbs(1, nbytes=2)


@pytest.mark.parametrize("isa", [i for i in _kernels.available_isas() if i != "scalar"])
def test_fma_peak_gives_a_rate(isa):
    assert _kernels.fma_peak_gflops(1, 100_000, isa) > 0.1


def test_fma_peak_defaults_to_the_path_in_use():
    # on every machine, whatever paths it has (an AVX2-only CPU has no avx512)
    rate = _kernels.fma_peak_gflops(1, 100_000)
    assert (rate == 0.0) == (_kernels.get_isa() == "scalar")
