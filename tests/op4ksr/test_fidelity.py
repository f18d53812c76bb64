"""The output-fidelity step (op4ksr.fidelity) and its plumbing as a saved inference option."""
from __future__ import annotations

import json

import pytest
import torch

from op4ksr.fidelity import MODES, Fidelity, adain, apply_fidelity, back_project, wavelet_split, wavelet_transfer
from op4ksr.imageops import bicubic_resize, psnr
from op4ksr.loading import SAVED_OPTIONS, InferenceOptions, ModelSpec, load_model, resolved_options
from op4ksr.model import OP4KSR


def _scene(h: int = 64, w: int = 48, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) smooth colour field with fine texture, in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.1 + 0.7 * smooth + 0.1 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def test_wavelet_split_adds_back_up_and_keeps_constants_in_the_low_band():
    x = _scene()
    high, low = wavelet_split(x, 3)
    torch.testing.assert_close(high + low, x, rtol=0, atol=1e-6)
    const = torch.full((1, 3, 20, 20), 0.3)
    c_high, c_low = wavelet_split(const, 4)
    assert c_high.abs().max() < 1e-6 and (c_low - 0.3).abs().max() < 1e-6


def test_wavelet_split_puts_a_fine_checkerboard_in_the_high_band():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checks = ((yy + xx) % 2).float().expand(1, 3, 32, 32) * 0.5 + 0.25
    high, low = wavelet_split(checks, 1)
    assert (low[..., 2:-2, 2:-2] - 0.5).abs().max() < 1e-6  # the binomial kernel cancels period 2 exactly
    assert high[..., 2:-2, 2:-2].abs().mean() == pytest.approx(0.25, abs=1e-6)


def test_wavelet_transfer_removes_a_colour_cast_and_keeps_detail():
    x_up = _scene()
    cast = torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    torch.testing.assert_close(wavelet_transfer(x_up + cast, x_up, 2), x_up, rtol=0, atol=1e-5)
    detail = 0.05 * torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    out = wavelet_transfer(x_up + detail, x_up, 2)
    kept = ((out - x_up) * detail).sum() / detail.pow(2).sum()  # share of the white-noise detail kept
    assert 0.5 < float(kept) < 1.0


def test_adain_matches_each_channels_mean_and_std():
    x_up, x_sr = _scene(seed=0), _scene(seed=3) * 0.5
    out = adain(x_sr, x_up)
    torch.testing.assert_close(out.mean((-2, -1)), x_up.mean((-2, -1)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.std((-2, -1)), x_up.std((-2, -1)), rtol=1e-3, atol=1e-5)


def test_back_projection_makes_the_output_downscale_to_the_input():
    hr = _scene(64, 64)
    x_lr = bicubic_resize(hr, (16, 16))
    start = (hr * 0.6 + 0.3).clamp(0, 1)  # a washed-out guess
    before = psnr(bicubic_resize(start, (16, 16)), x_lr).item()
    out1 = back_project(start, x_lr, 1)
    out10 = back_project(start, x_lr, 10)
    after1, after10 = (psnr(bicubic_resize(o, (16, 16)), x_lr).item() for o in (out1, out10))
    assert before < 25 < after1 < after10 and after10 > 45


@pytest.mark.parametrize("mode", ["wavelet", "adain"])
def test_fidelity_is_differentiable(mode):
    x_lr = (0.2 + 0.6 * torch.rand(1, 3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    x_up = bicubic_resize(x_lr, (12, 10))
    fid = Fidelity(mode, levels=1, strength=0.7, iterations=2)
    x_sr = (x_up + 0.02 * torch.randn(x_up.shape, dtype=torch.float64)).clamp(0.1, 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: apply_fidelity(x, x_lr, x_up, fid), (x_sr,), atol=1e-6)


def test_back_projection_passes_gradients_that_lower_a_loss():
    # bicubic_resize computes in float32, so gradcheck's float64 finite differences do not apply;
    # instead: the gradient is finite and a step along it lowers the loss to the HR target
    hr = _scene(32, 32)
    x_lr = bicubic_resize(hr, (8, 8))
    x_sr = (hr * 0.5 + 0.2).requires_grad_()
    fid = Fidelity("backproject", iterations=3, strength=0.8)
    loss = (apply_fidelity(x_sr, x_lr, bicubic_resize(x_lr, (32, 32)), fid) - hr).abs().mean()
    loss.backward()
    assert torch.isfinite(x_sr.grad).all() and x_sr.grad.abs().sum() > 0
    stepped = (x_sr - 0.02 * x_sr.grad / x_sr.grad.abs().max()).detach()
    after = (apply_fidelity(stepped, x_lr, bicubic_resize(x_lr, (32, 32)), fid) - hr).abs().mean()
    assert after < loss.item()


def test_strength_blends_and_none_is_the_identity():
    x_up = _scene()
    x_sr = (x_up * 0.5).clamp(0, 1)
    x_lr = bicubic_resize(x_up, (16, 12))
    assert apply_fidelity(x_sr, x_lr, x_up, Fidelity("none")) is x_sr
    half = apply_fidelity(x_sr, x_lr, x_up, Fidelity("adain", strength=0.5))
    full = apply_fidelity(x_sr, x_lr, x_up, Fidelity("adain", strength=1.0))
    torch.testing.assert_close(half, (x_sr + full) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, word", [({"mode": "lab"}, "mode"), ({"levels": 0}, "levels"),
                                          ({"iterations": 0}, "iterations"), ({"strength": 1.5}, "strength")])
def test_bad_settings_name_the_setting(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Fidelity(**kwargs)


def test_saved_defaults_and_the_configs_choices_match_the_dataclass():
    from jobs.config_rules import RULES

    assert {k: v for k, v in SAVED_OPTIONS.items() if k.startswith("fidelity")} == Fidelity().options()
    assert Fidelity.from_options({}) == Fidelity()
    wavelet = Fidelity("wavelet", levels=2, strength=0.5)
    assert Fidelity.from_options(wavelet.options()) == wavelet
    assert RULES["sr.fidelity"].choices == MODES


def test_the_model_applies_the_configured_fidelity(one_torch_thread):
    model = OP4KSR.from_preset("tiny")
    x_lr = _scene(16, 16)
    raw = model.upscale(x_lr, (64, 64))
    model.configure(InferenceOptions(fidelity="backproject", fidelity_iterations=8))
    fixed = model.upscale(x_lr, (64, 64))
    raw_c = psnr(bicubic_resize(raw, (16, 16)), x_lr).item()
    fixed_c = psnr(bicubic_resize(fixed, (16, 16)), x_lr).item()
    assert raw_c < 25 and fixed_c > 35  # random weights: noise, pulled back to the input
    model.configure(InferenceOptions(fidelity="wavelet", fidelity_levels=3))
    colour = model.upscale(x_lr, (64, 64))
    assert (colour.mean((-2, -1)) - x_lr.mean((-2, -1))).abs().max() < 0.03
    assert (raw.mean((-2, -1)) - x_lr.mean((-2, -1))).abs().max() > 0.03


def test_fidelity_is_saved_with_the_checkpoint_and_overridden_by_options(tmp_path, one_torch_thread):
    model = OP4KSR.from_preset("tiny").configure(InferenceOptions(fidelity="wavelet", fidelity_levels=3))
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())["inference"]
    assert saved["fidelity"] == "wavelet" and saved["fidelity_levels"] == 3
    spec = ModelSpec(source=str(tmp_path / "ckpt"), device="cpu")
    assert resolved_options(spec)["fidelity"] == "wavelet"
    assert load_model(spec).fidelity == Fidelity("wavelet", levels=3)
    over = ModelSpec(source=str(tmp_path / "ckpt"), device="cpu",
                     options=InferenceOptions(fidelity="backproject", fidelity_iterations=4))
    assert resolved_options(over)["fidelity"] == "backproject"
    assert load_model(over).fidelity == Fidelity("backproject", levels=3, iterations=4)


def test_a_checkpoint_that_predates_fidelity_runs_without_it(tmp_path, one_torch_thread):
    OP4KSR.from_preset("tiny").save_pretrained(tmp_path / "old")
    index_path = tmp_path / "old" / "model_index.json"
    index = json.loads(index_path.read_text())
    index.pop("inference")
    index_path.write_text(json.dumps(index))
    spec = ModelSpec(source=str(tmp_path / "old"), device="cpu")
    assert resolved_options(spec)["fidelity"] == "none"
    assert load_model(spec).fidelity == Fidelity()


def test_evaluation_methods_with_a_fidelity_step():
    from op4ksr.evaluation.evaluate import BenchItem, colour_error, parse_fidelity, run_method

    assert parse_fidelity("wavelet:3") == Fidelity("wavelet", levels=3)
    assert parse_fidelity("backproject:5") == Fidelity("backproject", iterations=5)
    hr = _scene(64, 64)
    item = BenchItem("x", hr, bicubic_resize(hr, (16, 16)))
    plain, fixed = run_method("bicubic", item), run_method("bicubic+backproject:10", item)
    consistency = [psnr(bicubic_resize(o, (16, 16)), item.lr).item() for o in (plain, fixed)]
    assert consistency[1] > consistency[0] + 5  # back-projection undoes the bicubic round trip's blur
    assert colour_error(fixed, hr) < 0.01 and colour_error(hr * 0.5, hr) > 0.2
    model = OP4KSR.from_preset("tiny")
    model.fidelity = Fidelity("adain")
    raw = run_method("model+none", item, model)
    assert model.fidelity == Fidelity("adain")  # the method's step is for that call only
    torch.testing.assert_close(raw, run_method("model+none", item, model))
    assert colour_error(run_method("model", item, model), hr) < colour_error(raw, hr)


def test_the_shipped_checkpoint_meets_the_issue_14_targets_on_a_held_out_photo(one_torch_thread):
    # coffee is in offline:heldout (never trained on); x4 antialiased-bicubic LR, the saved defaults
    import skimage.data

    from op4ksr.evaluation.evaluate import colour_error, psnr_ssim_y, quantise

    hr = torch.from_numpy(skimage.data.coffee()[100:228, 200:392].copy()).permute(2, 0, 1)[None].float() / 255
    x_lr = bicubic_resize(hr, (32, 48))
    model = load_model(ModelSpec(source="tiny-trained", device="cpu"))
    assert model.fidelity.mode != "none"  # the checkpoint's saved default
    out = quantise(model.upscale(x_lr, (128, 192)))
    bicubic = quantise(bicubic_resize(x_lr, (128, 192)))
    assert psnr_ssim_y(out, hr, 4)[0] >= psnr_ssim_y(bicubic, hr, 4)[0]
    assert psnr(bicubic_resize(out, (32, 48)), x_lr).item() >= 30
    assert colour_error(out, hr) <= 0.03
