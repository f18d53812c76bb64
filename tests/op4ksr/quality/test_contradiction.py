"""The contradiction map: planted defects found where they were planted; faithful upscales and noisy masters not flagged."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from op4ksr.imageops import bicubic_resize
from op4ksr.quality.contradiction import CELL_THRESHOLD, contradiction_maps, noise_sigma, region_score
from op4ksr.quality.heatmap import heatmap_png
from tests import planted

HELDOUT = ("coffee", "rocket", "chelsea", "camera")


@pytest.fixture(scope="module")
def chelsea():
    """(lr (1, 3, 74, 112), its bicubic + back-projection upscale (1, 3, 296, 448))."""
    lr = planted.downscale(planted.photo("chelsea", (0, 0, 296, 448)))
    return lr, planted.back_projected(lr)


@pytest.mark.parametrize("name", HELDOUT)
def test_faithful_upscales_of_the_held_out_photos_are_not_contradicted(name, one_torch_thread):
    lr = planted.downscale(planted.photo(name))
    for out in (planted.bicubic(lr), planted.back_projected(lr)):
        result = contradiction_maps(out, lr)[0]
        assert result.contradicted_fraction == 0.0
        # bicubic scores at most 1 by construction (its own round trip is the tolerance); the margin is 2x
        assert result.worst_cell["score"] <= 1.05 < CELL_THRESHOLD


def test_the_master_itself_adds_detail_and_contradicts_nothing(one_torch_thread):
    hr = planted.photo("coffee")
    lr = planted.downscale(hr)
    truth, bicubic = contradiction_maps(torch.cat([hr, planted.bicubic(lr)]), torch.cat([lr, lr]))
    assert truth.worst_cell["score"] < 0.05  # the LR was made from it with the same downscale
    assert bicubic.added_detail == pytest.approx(1.0, abs=0.01)  # bicubic is the reference
    assert truth.added_detail > 10  # the detail above the input's resolution that the master has


@pytest.mark.parametrize("noisy", [planted.with_grain, lambda lr: planted.as_jpeg(lr, 30)], ids=["grain", "jpeg30"])
def test_a_noisy_master_is_not_flagged_for_its_own_noise(noisy, one_torch_thread):
    lr = planted.downscale(planted.photo("rocket"))
    master = noisy(lr)
    assert (master - lr).abs().mean() > 0.005  # the master's own noise or blocks
    # bicubic and back-projection carry the noise or blocks into the output
    for out in (planted.bicubic(master), planted.back_projected(master)):
        assert contradiction_maps(out, master)[0].contradicted_fraction == 0.0


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_removing_the_masters_grain_is_not_a_contradiction(sigma, one_torch_thread):
    for name in HELDOUT:
        lr = planted.downscale(planted.photo(name))
        # a clean upscale of a grainy master: what a denoising upscaler at its best gives
        assert contradiction_maps(planted.bicubic(lr), planted.with_grain(lr, sigma))[0].contradicted_fraction == 0.0


def test_a_replaced_patch_is_found_where_it_was_planted(chelsea, one_torch_thread):
    lr, out = chelsea
    box = (100, 170, 32, 32)  # not aligned to the cells
    result = contradiction_maps(planted.patch_replaced(out, box, (200, 300)), lr)[0]
    assert result.contradicted_fraction > 0
    assert result.worst_cell["score"] > 2 * CELL_THRESHOLD
    assert planted.within_one_cell(result.worst_cell, box)
    assert region_score(result, box, out.shape[-2:]) == result.worst_cell["score"]


def test_a_removed_thin_line_is_found_where_it_was(chelsea, one_torch_thread):
    lr, _ = chelsea
    hr = planted.photo("chelsea", (0, 0, 296, 448))
    hr[..., 150:152, 100:300] = 0.95  # a whisker two output px wide: half an input px
    lr = planted.downscale(hr)
    out = planted.line_removed(planted.back_projected(lr), (146, 156), (100, 300), from_rows=10)
    result = contradiction_maps(out, lr)[0]
    assert result.contradicted_fraction > 0
    assert planted.within_one_cell(result.worst_cell, (146, 100, 10, 200))
    assert contradiction_maps(planted.back_projected(lr), lr)[0].contradicted_fraction == 0.0


def test_the_noise_level_is_that_of_the_grain_not_of_the_texture():
    lr = planted.downscale(planted.photo("chelsea"))  # fur: texture that is not noise
    clean = noise_sigma(lr.mean(1, keepdim=True), (9, 14)).median().item()
    grainy = noise_sigma(planted.with_grain(lr, 0.03).mean(1, keepdim=True), (9, 14)).median().item()
    assert noise_sigma(lr.mean(1, keepdim=True), (9, 14)).shape == (1, 9, 14)
    # the grain is independent per channel: the mean of three has std 0.03 / sqrt(3), added to the fur's
    assert clean < 0.015 and grainy == pytest.approx(((0.03 / 3**0.5) ** 2 + clean**2) ** 0.5, rel=0.15)


def test_tiny_inputs_get_null_fields_with_a_reason():
    small = contradiction_maps(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 6, 6))[0]
    assert small.as_dict() == {"contradicted_fraction": None, "worst_cell": None, "added_detail": None,
                               "contradiction_reason": "output 24x24 is smaller than one 32 px cell"}
    thin = contradiction_maps(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 3, 3))[0]
    assert thin.contradicted_fraction is None and "under 2 px per cell" in thin.reason


def test_grayscale_and_16_bit_inputs_are_scored(chelsea):
    lr, out = chelsea
    grey = contradiction_maps(out.mean(1, keepdim=True), lr.mean(1, keepdim=True))[0]
    assert grey.contradicted_fraction == 0.0
    deep = contradiction_maps(out.double(), (lr * 65535).round().double() / 65535)[0]  # 16-bit steps
    assert deep.contradicted_fraction == 0.0 and deep.worst_cell["score"] < 1


def test_the_heatmap_is_red_over_the_plant_and_viewable(chelsea):
    lr, out = chelsea
    box = (96, 160, 32, 32)
    bad = planted.patch_replaced(out, box, (200, 300))
    result = contradiction_maps(bad, lr)[0]
    pixels = np.asarray(Image.open(io.BytesIO(heatmap_png(bad[0], result, view_px=224))).convert("RGB")).astype(int)
    assert pixels.shape == (148, 224, 3)  # half size: the longer side is 224
    r, g, b = pixels[48 + 8, 80 + 8]  # inside the plant's cell, scaled by 1/2
    assert r > 200 and g < 120 and b < 120
    r, g, b = pixels[10, 10]  # a clean cell stays grey
    assert abs(r - g) < 8 and abs(g - b) < 8


def test_the_map_runs_on_the_outputs_device_and_batches(chelsea):
    lr, out = chelsea
    batch = contradiction_maps(torch.cat([out, planted.patch_replaced(out, (96, 160, 32, 32), (200, 300))]),
                               torch.cat([lr, lr]))
    assert batch[0].contradicted_fraction == 0.0 and batch[1].contradicted_fraction > 0
    alone = contradiction_maps(bicubic_resize(lr, out.shape[-2:]), lr)[0]
    assert alone.scores.device.type == "cpu" and alone.scores.shape == (9, 14)
