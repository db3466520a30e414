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
    assert meta.pop("sha256") and meta == {"k": "v"} and set(got) == {"a", "b.c"}
    np.testing.assert_array_equal(got["a"], tensors["a"])
    assert got["b.c"].dtype == np.float32     # written as float32
    np.testing.assert_array_equal(got["b.c"], tensors["b.c"].astype(np.float32))


def test_tensors_are_read_only_views_of_the_file(tmp_path):
    """Memory-mapped: loading copies nothing."""
    hub.save_safetensors(tmp_path / "x.safetensors", {"w": np.ones((256, 256))})
    got, _ = hub.load_safetensors(tmp_path / "x.safetensors")
    w = got["w"]
    assert not w.flags.owndata and not w.flags.writeable
    assert type(w.base).__name__ in ("mmap", "memoryview") or w.base is not None


def test_other_peoples_files_load_as_before(tmp_path):
    """A file without the integrity record (written by safetensors itself)."""
    from safetensors.numpy import save_file
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_file({"a": a, "i": np.arange(3, dtype=np.int64)}, str(tmp_path / "o.safetensors"),
              metadata={"x": "y"})
    got, meta = hub.load_safetensors(tmp_path / "o.safetensors")
    assert meta == {"x": "y"}
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["i"], np.arange(3))


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
