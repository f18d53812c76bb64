import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from op4ksr.checkpoint import CheckpointError
from op4ksr.model import OP4KSR, pack_latents, unpack_latents
from op4ksr.sizing import output_size
from tests.tolerance import assert_forwards_close


@pytest.fixture(scope="module")
def tiny():
    return OP4KSR.from_preset("tiny", seed=0)


def test_pack_unpack_round_trip():
    z = torch.randn(2, 16, 6, 10)
    tokens = pack_latents(z)
    assert tokens.shape == (2, 15, 64)
    assert torch.equal(unpack_latents(tokens, 6, 10), z)


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (160, 96), (216, 384), (72, 40)])
def test_any_output_size_including_non_square(tiny, size):
    x = torch.rand(1, 3, size[0] // 4, size[1] // 4)
    y = tiny.upscale(x, size)
    assert y.shape == (1, 3, *size)


def test_default_size_is_scale_times_input(tiny):
    assert tiny.upscale(torch.rand(2, 3, 17, 23)).shape == (2, 3, 68, 92)


def test_output_size_policy():
    assert output_size(540, 960, scale=4) == (2160, 3840)
    assert output_size(1080, 1920, long_side=4096) == (2304, 4096)
    with pytest.raises(ValueError, match="exactly one"):
        output_size(10, 10, scale=2, long_side=40)


def test_output_below_minimum_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="below the minimum side of 32 px"):
        tiny.upscale(torch.rand(1, 3, 4, 4), (16, 16))


def test_save_load_round_trip_keeps_weights_bit_identical(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index["_class_name"] == "OP4KSR" and index["scale"] == 4
    again = OP4KSR.from_pretrained(tmp_path / "ckpt")
    assert again.model_id == index["model_id"]
    for part in ("vae", "transformer"):
        saved, loaded = getattr(tiny, part).state_dict(), getattr(again, part).state_dict()
        assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved), part
    assert torch.equal(again.prompt_embeds, tiny.prompt_embeds) and torch.equal(again.pooled_embeds, tiny.pooled_embeds)
    x = torch.rand(1, 3, 24, 40)
    assert_forwards_close(again.upscale(x), tiny.upscale(x))


def test_rfr_setting_survives_checkpoint(tmp_path):
    model = OP4KSR.from_preset("tiny", rfr_mode="ntk", rfr_scale=2.0)
    model.save_pretrained(tmp_path)
    assert OP4KSR.from_pretrained(tmp_path).transformer.config.rfr_mode == "ntk"


def test_missing_files_are_named(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    (tmp_path / "prompt_embeds.safetensors").unlink()
    with pytest.raises(CheckpointError, match="prompt_embeds.safetensors is missing"):
        OP4KSR.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="model_index.json is missing"):
        OP4KSR.from_pretrained(tmp_path / "nowhere")


def test_pickled_weights_are_refused(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), tmp_path / "vae" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        OP4KSR.from_pretrained(tmp_path)


def test_wrong_shape_names_key_and_both_shapes(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    path = tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["x_embedder.weight"] = torch.zeros(32, 60)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"'x_embedder.weight' has shape \(32, 60\) in the checkpoint but the model expects \(32, 64\)"):
        OP4KSR.from_pretrained(tmp_path)


def test_bfloat16_runs(tmp_path):
    model = OP4KSR.from_preset("tiny", dtype=torch.bfloat16)
    y = model.upscale(torch.rand(1, 3, 16, 16))
    assert y.dtype == torch.float32 and y.shape == (1, 3, 64, 64)


def test_preset_is_seeded():
    a, b, c = (OP4KSR.from_preset("tiny", seed=s) for s in (3, 3, 4))
    weights = [m.state_dict() for m in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    x = torch.ones(1, 3, 8, 8) * 0.5
    assert_forwards_close(a.upscale(x), b.upscale(x))
    assert (a.upscale(x) - c.upscale(x)).abs().max() > 100 * 1e-5


def test_one_step_is_the_vae_round_trip_when_the_velocity_is_zero():
    """z_sr = z_lr - t* v: with proj_out zeroed (v = 0) the output is decode(encode(pad(bicubic(x)))), cropped."""
    from op4ksr.imageops import bicubic_resize, pad_to_multiple

    model = OP4KSR.from_preset("tiny", seed=1)
    torch.nn.init.zeros_(model.transformer.proj_out.weight)
    torch.nn.init.zeros_(model.transformer.proj_out.bias)
    x = torch.rand(1, 3, 10, 13)
    size = (40, 52)  # pads to 64x64 (the token period is 32 px)
    padded, _ = pad_to_multiple(bicubic_resize(x, size), model.token_period_px)
    vae, cfg = model.vae, model.vae.config
    with torch.no_grad():
        z = vae.encode(2 * padded - 1).latent_dist.mode()
        z = (z - cfg.shift_factor) * cfg.scaling_factor  # normalised, as the transformer sees it ...
        x_rt = vae.decode(z / cfg.scaling_factor + cfg.shift_factor).sample  # ... and back
    expected = ((x_rt + 1) / 2).clamp(0, 1)[..., :40, :52]
    assert_forwards_close(model.upscale(x, size), expected)
    # and a non-zero velocity moves the output: the formula is not the identity by construction
    assert (OP4KSR.from_preset("tiny", seed=1).upscale(x, size) - expected).abs().max() > 1e-3
