"""op4ksr.quality.periodicity and its report on generated images with known periodic artifacts
(tests/synthetic_images.py)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from jobs.config import DEFAULT_CONFIG
from op4ksr.imageops import bicubic_resize
from op4ksr.quality.periodicity import (
    ap_loss,
    ap_loss_weighted,
    autocorr,
    axis_autocorr,
    crop_box,
    dominant_period,
    normalised_autocorr,
    periodicity,
)
from op4ksr.quality.periodicity_report import QualityReport, quality_report, tile_grid, upscaled_crop
from tests.synthetic_images import base_image, degraded_pair, periodic_pattern, inject, tiled_upscale, with_pattern

THRESHOLD = float(OmegaConf.load(DEFAULT_CONFIG).report.threshold)
SIZE = (192, 256)
CLEAN_BASES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "field")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_library_default_threshold_is_the_configs():
    from op4ksr.quality.periodicity_report import DEFAULT_THRESHOLD

    assert DEFAULT_THRESHOLD == THRESHOLD  # one default: configs/default.yaml's, named in code


@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 3, 64, 96), (1, 3, 33, 33)])
def test_autocorr_is_normalised_and_circular(shape):
    img = torch.rand(shape, dtype=torch.float64)
    rho = autocorr(img)  # (B, 2, H, W): signed and energy maps
    assert rho.shape == (shape[0], 2, *shape[-2:])
    assert torch.allclose(rho[..., 0, 0], torch.ones(()).double())
    h, w = shape[-2:]
    assert torch.allclose(rho[..., 0, 5], rho[..., 0, w - 5], atol=1e-12)  # rho(dx) = rho(-dx)
    assert torch.allclose(rho[..., 7, 0], rho[..., h - 7, 0], atol=1e-12)
    assert rho.abs().max() <= 1 + 1e-9
    assert autocorr(img.float()).dtype == torch.float32


def test_gray_and_rgb_agree_and_constant_scores_zero():
    gray = torch.rand(1, 1, 64, 80)
    assert torch.allclose(periodicity(gray, 16), periodicity(gray.expand(1, 3, 64, 80), 16), atol=1e-5)
    assert periodicity(torch.full((1, 3, 64, 64), 0.5), 16).item() == 0.0


def test_too_small_for_the_period_scores_zero_and_bad_args_raise():
    assert periodicity(torch.rand(2, 3, 40, 40), 32).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        periodicity(torch.rand(3, 64, 64), 16)
    with pytest.raises(ValueError, match="period"):
        periodicity(torch.rand(1, 3, 64, 64), 1)
    with pytest.raises(ValueError, match="neighbour_offset"):
        periodicity(torch.rand(1, 3, 64, 64), 16, neighbour_offset=1.5)
    with pytest.raises(ValueError, match="maps"):
        periodicity(torch.rand(1, 3, 64, 64), 16, maps=("phase",))
    with pytest.raises(ValueError, match="over_k"):
        periodicity(torch.rand(1, 3, 64, 64), 16, over_k="median")
    with pytest.raises(ValueError, match="min_period"):
        dominant_period(torch.rand(1, 3, 64, 64), 40, 20)


def test_crop_box_keeps_multiples_of_the_period():
    assert crop_box(4096, 4096, 1024, 32) == (1536, 1536, 1024, 1024)
    assert crop_box(255, 301, 1024, 32) == (15, 6, 224, 288)
    assert crop_box(20, 301, 1024, 32) == (0, 6, 20, 288)  # shorter than a period: whole side


@pytest.mark.parametrize("lr_size,size", [((37, 53), (150, 211)), ((48, 64), (192, 256))])
def test_upscaled_crop_equals_the_full_resize(lr_size, size):
    x_lr = torch.rand(2, 3, *lr_size)
    box = crop_box(*size, 96, 32)
    full = bicubic_resize(x_lr, size)[..., box[0] : box[0] + box[2], box[1] : box[1] + box[3]]
    assert torch.allclose(upscaled_crop(x_lr, size, box), full, atol=1e-5)


@pytest.mark.parametrize("period", [16, 32, 64])
@pytest.mark.parametrize("kind", ["tile", "grid"])
def test_score_rises_monotonically_with_amplitude(period, kind):
    clean = base_image("astronaut", SIZE, seed=1)
    pattern = periodic_pattern(SIZE, period, kind, seed=1)
    amplitudes = [0.0, 0.005, 0.01, 0.02, 0.04, 0.08]
    scores = periodicity(torch.cat([inject(clean, pattern, a) for a in amplitudes]), period).tolist()
    assert all(b > a for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < THRESHOLD < scores[-1]


@pytest.mark.parametrize("base", ["astronaut", "coffee", "field"])
@pytest.mark.parametrize("period", [16, 32, 64])
def test_dominant_period_found_exactly_from_rms_0_01(base, period):
    imgs = torch.cat([with_pattern(base, SIZE, period, a, kind, seed=2)
                      for a in (0.01, 0.04) for kind in ("tile", "grid")])
    assert dominant_period(imgs).tolist() == [period] * 4


@pytest.mark.parametrize("base", CLEAN_BASES)
def test_clean_images_stay_under_the_threshold(base):
    clean = torch.cat([base_image(base, SIZE, seed=s) for s in range(3)])
    x_lr, _ = degraded_pair(clean)
    for period in (16, 32, 64):
        assert periodicity(clean, period).max().item() < THRESHOLD
        assert max(r.ap_excess for r in quality_report(clean, x_lr, period, THRESHOLD)) < THRESHOLD


def test_natural_periodic_texture_is_not_excess():
    brick = torch.cat([base_image("brick", SIZE, seed=s) for s in range(3)])
    assert periodicity(brick, 32).max().item() > THRESHOLD  # bricks repeat: the raw score sees them
    x_lr, _ = degraded_pair(brick)
    assert not any(r.flagged for r in quality_report(brick, x_lr, 32, THRESHOLD))  # the input has them too


@pytest.mark.parametrize("tile", [32, 64])
def test_tile_seams_are_found_at_the_tile_period(tile):
    clean = torch.cat([base_image("field", (256, 256), seed=s) for s in range(3)])
    x_lr, _ = degraded_pair(clean)
    seams = tiled_upscale(x_lr, 4, tile)
    reports = quality_report(seams, x_lr, tile, THRESHOLD)
    assert all(r.flagged for r in reports), [r.ap_excess for r in reports]
    assert [r.dominant_period_px for r in reports] == [tile] * 3


def test_quality_report_fields_and_json():
    clean = base_image("coffee", SIZE, seed=0)
    x_lr, _ = degraded_pair(clean)
    grid = inject(clean, periodic_pattern(SIZE, 32, "grid"), 0.04)
    r_clean, r_grid = quality_report(torch.cat([clean, grid]), torch.cat([x_lr, x_lr]), 32, THRESHOLD)
    assert isinstance(r_grid, QualityReport) and r_grid.period_px == 32
    assert r_grid.flagged and not r_clean.flagged
    assert r_grid.ap_excess == pytest.approx(max(0.0, r_grid.ap_score_out - r_grid.ap_score_in))
    assert r_grid.dominant_period_px == 32
    assert 20 < r_clean.lr_consistency_psnr < 100
    d = r_grid.as_dict()
    assert set(d) == {"period_px", "ap_score_out", "ap_score_in", "ap_excess", "dominant_period_px",
                      "lr_consistency_psnr", "flagged", "ap_tile_map"}
    assert d["ap_tile_map"] == [[round(r_grid.ap_excess, 4)]]  # one tile: the image fits one
    assert [type(d[k]) for k in ("period_px", "ap_excess", "dominant_period_px", "flagged")] == [int, float, int, bool]
    json.dumps(d)


def test_identical_input_gives_capped_psnr():
    x = torch.rand(1, 3, 96, 96)
    (report,) = quality_report(x, x, 32)  # scale 1: the downscale is the identity, PSNR is inf
    assert report.lr_consistency_psnr == 100.0
    assert math.isfinite(json.loads(json.dumps(report.as_dict()))["lr_consistency_psnr"])


def test_ap_loss_gradcheck():
    torch.manual_seed(0)
    x_hr = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    x_sr = (x_hr + 0.05 * torch.randn_like(x_hr)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ap_loss(x, x_hr, 4, temperature=0.05) + 0.1, (x_sr,))


def test_ap_loss_is_zero_without_error_and_weighted():
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = ap_loss(x, x.detach(), 16)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all()
    grid = x.detach() + 0.05 * periodic_pattern((64, 64), 16, "grid")
    weighted = ap_loss_weighted(grid, x.detach(), 16, 0.5).item()
    assert weighted == pytest.approx(0.5 * ap_loss(grid, x.detach(), 16).item())
    with pytest.raises(ValueError, match="same shape"):
        ap_loss(grid, x.detach()[..., :32], 16)


def _descend(start: torch.Tensor, clean: torch.Tensor, lambda_ap: float, steps: int) -> torch.Tensor:
    x = start.clone().requires_grad_()
    opt = torch.optim.Adam([x], lr=2e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = (x - clean).abs().mean() + ap_loss_weighted(x, clean, 16, lambda_ap)
        loss.backward()
        opt.step()
    return x.detach().clamp(0, 1)


def test_minimising_l1_plus_l_ap_removes_an_injected_grid():
    clean = base_image("chelsea", (128, 128), seed=0)
    x_lr, _ = degraded_pair(clean)
    start = inject(clean, periodic_pattern((128, 128), 16, "grid"), 0.04)
    l1 = lambda x: (x - clean).abs().mean().item()  # noqa: E731
    with_ap, l1_only = _descend(start, clean, 0.1, 20), _descend(start, clean, 0.0, 20)
    excess = [quality_report(x, x_lr, 16, THRESHOLD)[0].ap_excess for x in (start, with_ap, l1_only)]
    assert excess[0] > THRESHOLD > excess[1], excess  # the grid is gone ...
    assert l1(with_ap) < 0.9 * l1(start)  # ... while the image moves towards the clean one
    assert excess[2] > THRESHOLD, excess  # L1 alone has not removed it after the same 20 steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    clean = with_pattern("astronaut", SIZE, 32, 0.02, "tile", seed=3)
    x_lr, _ = degraded_pair(clean)
    cpu = quality_report(clean, x_lr, 32)[0]
    gpu = quality_report(clean.cuda(), x_lr.cuda(), 32)[0]
    assert gpu.ap_score_out == pytest.approx(cpu.ap_score_out, abs=1e-4)
    assert gpu.dominant_period_px == cpu.dominant_period_px


def test_tile_grid_covers_the_image_with_equal_tiles():
    assert tile_grid(4096, 4096, 1024, 32) == ([0, 1024, 2048, 3072], [0, 1024, 2048, 3072], 1024, 1024)
    assert tile_grid(1500, 1000, 1024, 32) == ([0, 476], [4], 1024, 992)  # overlap; < 1 period left out
    assert tile_grid(384, 512, 1024, 32) == ([0], [0], 384, 512)  # small: one tile, the whole image
    tops, lefts, th, tw = tile_grid(3000, 2100, 512, 32)
    covered = torch.zeros(3000, 2100, dtype=torch.bool)
    for t in tops:
        for left in lefts:
            covered[t : t + th, left : left + tw] = True
    assert covered.all()


def test_axis_autocorr_equals_the_lines_of_the_2d_autocorrelation():
    y = torch.randn(2, 2, 96, 64, generator=torch.Generator().manual_seed(0))
    rho = normalised_autocorr(y)
    along_x, along_y = axis_autocorr(y)
    assert torch.allclose(along_x, rho[..., 0, :], atol=1e-5) and torch.allclose(along_y, rho[..., :, 0], atol=1e-5)


def test_a_pattern_in_one_corner_is_flagged_in_its_tile_only():
    # 1024x1024 scored in 256 px tiles (crop=256): the grid covers only the top-left 192x192 px
    clean = base_image("coffee", (1024, 1024), seed=0)
    x_lr, _ = degraded_pair(clean)
    corner = torch.zeros(1, 1, 1024, 1024)
    corner[..., :192, :192] = 1
    grid = clean + (inject(clean, periodic_pattern((1024, 1024), 32, "grid"), 0.02) - clean) * corner
    r_clean, r_corner = quality_report(torch.cat([clean, grid]), torch.cat([x_lr, x_lr]), 32, THRESHOLD, crop=256)
    assert r_corner.flagged and r_corner.dominant_period_px == 32 and not r_clean.flagged
    tiles = torch.tensor(r_corner.ap_tile_map)  # (4, 4)
    assert tiles.shape == (4, 4) and tiles[0, 0] == tiles.max() and tiles[0, 0] > THRESHOLD
    assert (tiles.flatten()[1:] < THRESHOLD).all()
    alone = quality_report(grid, x_lr, 32, THRESHOLD, crop=256)[0].ap_tile_map
    assert alone == r_corner.ap_tile_map  # one image or a batch: the same map


@pytest.mark.slow
def test_a_corner_pattern_at_4096_is_flagged_with_its_period():
    path = Path(__file__).resolve().parents[3] / "bench" / "periodicity.py"  # its test images
    spec = importlib.util.spec_from_file_location("bench_periodicity", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    x_lr, clean, _, corner = bench.test_images((4096, 4096))
    r_clean, r_corner = quality_report(torch.cat([clean, corner]), torch.cat([x_lr, x_lr]), 32, THRESHOLD)
    assert r_corner.flagged and r_corner.dominant_period_px == 32 and not r_clean.flagged
    assert len(r_corner.ap_tile_map) == 4 and r_corner.ap_tile_map[0][0] == max(map(max, r_corner.ap_tile_map))
