import pytest
import torch
from diffusers import AutoencoderKL

from op4ksr.checkpoint import load_component
from op4ksr.presets import get_preset
from op4ksr.vae import F16AutoencoderKL
from tests.tolerance import assert_forwards_close

TINY = get_preset("tiny").vae.config()


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return F16AutoencoderKL(**TINY).eval()


@pytest.mark.parametrize("height,width", [(256, 192), (64, 64), (96, 160), (512, 32)])
def test_f16_shapes(vae, height, width):
    x = torch.rand(1, 3, height, width) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample
    assert vae.spatial_factor == 16
    assert z.shape == (1, 16, height // 16, width // 16)
    assert y.shape == x.shape


def test_stock_flux_vae_weights_load_into_f16(tmp_path):
    stock_config = {k: v for k, v in TINY.items() if k != "input_stride"}
    stock = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          **stock_config)
    stock.save_pretrained(tmp_path / "vae", safe_serialization=True)
    f16 = load_component(F16AutoencoderKL, tmp_path / "vae", "cpu", torch.float32)  # raises on any key mismatch
    assert set(f16.state_dict()) == set(stock.state_dict())
    for key, value in stock.state_dict().items():
        assert torch.equal(f16.state_dict()[key], value), key
    assert f16.encoder.conv_in.stride == (2, 2)


def test_f16_saves_reload_with_identical_weights(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    again = load_component(F16AutoencoderKL, tmp_path / "vae", "cpu", torch.float32)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in vae.state_dict().items())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert_forwards_close(again.decode(again.encode(x).latent_dist.mode()).sample,
                              vae.decode(vae.encode(x).latent_dist.mode()).sample)


@pytest.mark.parametrize("partitions", [2, 3, 7])
def test_partitioned_decode_matches_whole_decode(vae, partitions):
    torch.manual_seed(1)
    z = torch.randn(1, 16, 12, 8)
    with torch.no_grad():
        whole = vae.decode(z).sample
        parts = vae.decode_partitioned(z, partitions)
    assert parts.shape == whole.shape == (1, 3, 192, 128)
    assert (parts - whole).abs().max().item() < 1e-3


def test_partitioned_decode_rejects_bad_arguments(vae):
    with pytest.raises(ValueError, match="partitions"):
        vae.decode_partitioned(torch.randn(1, 16, 4, 4), 0)
