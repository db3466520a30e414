"""pytransformer.hub's safetensors reader and writer (and the pytransformer.io
path kept for them)."""
import numpy as np
import pytest

from pytransformer import hub, io


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32),
               "b.c": rng.standard_normal(7).astype(np.float64)}
    hub.save_safetensors(tmp_path / "x.safetensors", tensors, {"k": "v"})
    got, meta = hub.load_safetensors(tmp_path / "x.safetensors")
    assert meta == {"k": "v"} and set(got) == {"a", "b.c"}
    np.testing.assert_array_equal(got["a"], tensors["a"])
    assert got["b.c"].dtype == np.float32     # written as float32
    np.testing.assert_array_equal(got["b.c"], tensors["b.c"].astype(np.float32))


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        hub.load_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a file"):
        hub.load_safetensors(tmp_path)
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a valid safetensors file") as e:
        hub.load_safetensors(p)
    assert str(p) in str(e.value)


def test_io_is_the_same_functions():
    assert io.load_safetensors is hub.load_safetensors
    assert io.save_safetensors is hub.save_safetensors
    assert io.to_numpy is hub.to_numpy and io.torch_state_dict is hub.torch_state_dict
