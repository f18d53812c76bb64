"""The imported VAE: stride from the config (or --vae-stride), the F16 maths written out, UltraFlux's decode shift."""
import json

import pytest
import torch
import torch.nn.functional as F

from op4ksr.errors import UserError
from op4ksr.importing import ImportSpec, import_checkpoint
from op4ksr.loading import InferenceOptions, ModelSpec, load_model, resolved_options
from op4ksr.model import OP4KSR
from op4ksr.presets import get_preset
from op4ksr.transformer import RFRFluxTransformer2DModel
from op4ksr.vae import F16AutoencoderKL
from tests import public_flux
from tests.tolerance import assert_forwards_close


@pytest.fixture(scope="module")
def public(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("public-vae")
    public_flux.save_pipeline(root / "FLUX.1-tiny")
    public_flux.save_f16_vae(root / "vae-f16")
    return root


def _import(root, out, **kwargs):
    return import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=root / out, dtype="float32", **kwargs))


def _f16_encode(stock, x):
    """The F16 encoder written out on a stock 8x AutoencoderKL: conv_in with stride 2, the rest as is."""
    enc = stock.encoder
    h = F.conv2d(x, enc.conv_in.weight, enc.conv_in.bias, stride=2, padding=1)
    for block in enc.down_blocks:
        h = block(h)
    h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
    return h[:, : stock.config.latent_channels]  # the posterior's mode is its mean


def _decoder_head_input(stock, z):
    dec = stock.decoder
    h = dec.mid_block(dec.conv_in(z))
    for block in dec.up_blocks:
        h = block(h)
    return dec.conv_act(dec.conv_norm_out(h))


def _f16_decode(stock, z):
    """The F16 decoder written out: 2x nearest upsample before conv_out (UltraFlux's unpartitioned F16 path)."""
    conv = stock.decoder.conv_out
    return F.conv2d(F.interpolate(_decoder_head_input(stock, z), scale_factor=2, mode="nearest"), conv.weight,
                    conv.bias, padding=1)


def _ultraflux_partitioned_decode(stock, z):
    """UltraFlux's partitioned F16 decode (ultraflux/vae.py, Decoder.forward, stride 2), written out."""
    h, conv = _decoder_head_input(stock, z), stock.decoder.conv_out
    hh, ww = h.shape[-2:]
    ph, pw = hh // 2, ww // 2
    rows = []
    for i in range(0, hh, ph):
        row = []
        for j in range(0, ww, pw):
            part = h[:, :, max(i - 1, 0) : min(i + ph + 1, hh), max(j - 1, 0) : min(j + pw + 1, ww)]
            part = F.pad(part, (1 if j == 0 else 0, 0 if j == 0 else 1, 1 if i == 0 else 0, 0 if i == 0 else 1))
            part = F.conv2d(F.interpolate(part, scale_factor=2, mode="nearest"), conv.weight, conv.bias, padding=1)
            row.append(part[:, :, 1 : ph * 2 + 1, 1 : pw * 2 + 1])
        rows.append(torch.cat(row, dim=3))
    return torch.cat(rows, dim=2)


@torch.inference_mode()
def test_stride_2_in_the_vae_config_gives_the_f16_maths(public):
    from diffusers import AutoencoderKL

    index = _import(public, "f16", vae=public / "vae-f16")
    model = OP4KSR.from_pretrained(public / "f16")
    assert index["source"]["vae_stride"] == 2 and model.vae.config.input_stride == 2
    assert json.loads((public / "f16" / "vae" / "config.json").read_text())["input_stride"] == 2
    stock = AutoencoderKL.from_pretrained(public / "vae-f16").eval()  # diffusers ignores "stride": an 8x VAE
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1
    assert stock.encode(x).latent_dist.mode().shape[-2:] == (16, 24)
    latent = model.vae.encode(x).latent_dist.mode()
    assert latent.shape[-2:] == (8, 12)
    assert_forwards_close(latent, _f16_encode(stock, x))
    z = torch.randn(1, 4, 8, 12, generator=g)
    assert_forwards_close(model.vae.decode(z).sample, _f16_decode(stock, z))
    assert model.upscale(torch.rand(1, 3, 8, 12, generator=g)).shape == (1, 3, 32, 48)


def test_vae_stride_flag_overrides_the_config(public):
    assert _import(public, "f8", vae=public / "vae-f16", vae_stride=1)["source"]["vae_stride"] == 1
    assert OP4KSR.from_pretrained(public / "f8").vae_factor == 2  # 2 levels of 2x: the stock layout
    assert _import(public, "stock-as-f16", vae_stride=2)["source"]["vae_stride"] == 2
    assert OP4KSR.from_pretrained(public / "stock-as-f16").vae_factor == 4
    with pytest.raises(UserError, match="--decode-shift needs a stride-2"):
        _import(public, "f8-shift", decode_shift=True)


@torch.inference_mode()
def test_decode_shift_is_ultraflux_partitioned_decoder_and_a_saved_option(public):
    from diffusers import AutoencoderKL

    index = _import(public, "shifted", vae=public / "vae-f16", decode_shift=True)
    assert index["inference"]["decode_shift"] is True
    model = OP4KSR.from_pretrained(public / "shifted")
    assert model.vae.decode_shift and model.inference_options()["decode_shift"] is True
    stock = AutoencoderKL.from_pretrained(public / "vae-f16").eval()
    z = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    theirs = _ultraflux_partitioned_decode(stock, z)
    assert_forwards_close(model.vae.decode(z).sample, theirs)
    assert_forwards_close(model.vae.decode_partitioned(z, 3), theirs)  # our strips keep the shift
    assert_forwards_close(theirs[..., 1:, 1:], _f16_decode(stock, z)[..., :-1, :-1])  # +1 row, +1 column

    spec = ModelSpec(source=str(public / "shifted"), device="cpu")
    assert resolved_options(spec)["decode_shift"] is True
    off = ModelSpec(source=str(public / "shifted"), device="cpu", options=InferenceOptions(decode_shift=False))
    assert resolved_options(off)["decode_shift"] is False
    assert not load_model(off).vae.decode_shift and load_model(spec).vae.decode_shift


@torch.inference_mode()
def test_an_f8_model_runs_with_a_token_period_of_16_px():
    preset = get_preset("tiny")  # 4 VAE levels, as FLUX's VAE: 8x per side with stride 1
    torch.manual_seed(0)
    vae = F16AutoencoderKL(**{**preset.vae.config(), "input_stride": 1}).eval()
    transformer = RFRFluxTransformer2DModel(**preset.transformer.config()).eval()
    model = OP4KSR(vae, transformer, torch.randn(1, 8, 32), torch.randn(1, 32))
    assert (model.vae_factor, model.token_period_px) == (8, 16)
    x = torch.rand(1, 3, 40, 24)
    assert model.vae.encode(x * 2 - 1).latent_dist.mode().shape[-2:] == (5, 3)
    out = model.upscale(torch.rand(1, 3, 10, 7))  # 40x28 output: padded to 48x32 (multiples of 16), cropped back
    assert out.shape == (1, 3, 40, 28) and torch.isfinite(out).all()
