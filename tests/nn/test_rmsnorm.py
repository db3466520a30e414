"""nn.RMSNorm against torch.nn.RMSNorm and transformers' LlamaRMSNorm: the
same weights both ways (from_torch, state_dict into torch)."""
import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from pytransformer import nn
from conftest import assert_model_close

tnn = torch.nn


def run(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("shape, eps, affine", [(32, None, True), ((4, 8), 1e-5, True),
                                                (32, 1e-6, False)])
def test_rms_norm_module_both_ways(isa, rng, shape, eps, affine):
    t = tnn.RMSNorm(shape, eps=eps, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            t.weight.normal_()
    ours = nn.RMSNorm.from_torch(t)
    assert ours.eps == eps and ours.elementwise_affine == affine
    assert ours.normalized_shape == tuple(t.normalized_shape)
    x = rng.standard_normal((3, 5) + ((shape,) if isinstance(shape, int) else shape))
    x = (x * 2 + 0.3).astype(np.float32)
    assert_model_close(ours(x), run(t, x), "RMSNorm")
    assert list(ours.state_dict()) == (["weight"] if affine else [])
    mine = nn.RMSNorm(shape, eps=eps, elementwise_affine=affine)
    if affine:
        mine.load_state_dict({"weight": rng.standard_normal(mine.weight.shape)})
    back = tnn.RMSNorm(shape, eps=eps, elementwise_affine=affine)
    back.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                          mine.state_dict().items()})
    assert_model_close(mine(x), run(back, x), "RMSNorm -> torch")


def test_rms_norm_from_llama_rms_norm_and_step(rng):
    t = LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        t.weight.normal_()
    ours = nn.RMSNorm.from_torch(t)
    assert ours.eps == 1e-5 and ours.normalized_shape == (64,)
    x = rng.standard_normal((2, 6, 64)).astype(np.float32)
    assert_model_close(ours(x), run(t, x), "LlamaRMSNorm")
    rows = np.ascontiguousarray(x[:, -1])
    np.testing.assert_array_equal(ours.step(rows), ours(x)[:, -1])
    np.testing.assert_array_equal(nn.RMSNorm(64).step(rows), nn.RMSNorm(64)(rows))


def test_rms_norm_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        nn.RMSNorm(8, eps=-1.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.RMSNorm(-3)
    with pytest.raises(ValueError, match="weight"):
        nn.RMSNorm(8).load_state_dict({"weight": np.ones(9)})
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.RMSNorm(8)(np.zeros((2, 7), np.float32))
