import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.inference.tiling import ramp, tile_plan, tile_starts, upscale_tiled


class _Constant:
    """A stand-in model whose output is a constant per tile position: shows the blend weights."""

    device = torch.device("cpu")

    def upscale(self, x, size):
        return torch.full((1, 3, *size), float(x.mean()))


def test_tiles_cover_the_image_and_end_flush():
    assert tile_starts(20, 12, 8) == [0, 8]
    assert tile_starts(10, 12, 8) == [0]
    assert tile_starts(30, 12, 8) == [0, 8, 16, 18]


def test_ramp_rises_only_where_a_neighbour_overlaps():
    w = ramp(8, 4, at_start=True, at_end=False)
    assert torch.allclose(w[:4], torch.tensor([0.125, 0.375, 0.625, 0.875])) and torch.all(w[4:] == 1)
    assert torch.all(ramp(8, 4, False, False) == 1)


def test_blend_is_a_partition_of_unity():
    x = torch.ones(1, 3, 12, 20) * 0.25
    out = upscale_tiled(_Constant(), x, (48, 80), tile=12, overlap=4)
    assert out.shape == (1, 3, 48, 80) and torch.allclose(out, torch.full_like(out, 0.25))


def test_tiles_blend_linearly_across_the_overlap():
    x = torch.zeros(1, 3, 12, 20)
    x[..., 10:] = 1.0  # tile 1 (cols 0-11) has mean 1/6, tile 2 (cols 8-19) mean 10/12
    out = upscale_tiled(_Constant(), x, (12, 20), tile=12, overlap=4, device="cpu")
    assert out[0, 0, 0, 0] == pytest.approx(2 / 12) and out[0, 0, 0, -1] == pytest.approx(10 / 12)
    middle = out[0, 0, 0, 8:12]
    assert torch.all(middle[1:] > middle[:-1])  # a ramp from one tile's value to the other's


def test_bicubic_model_tiled_matches_whole_away_from_seams():
    class _Bicubic(_Constant):
        def upscale(self, x, size):
            return bicubic_resize(x, size)

    x = torch.rand(1, 3, 24, 24)
    whole, tiled = bicubic_resize(x, (96, 96)), upscale_tiled(_Bicubic(), x, (96, 96), tile=16, overlap=8)
    assert (whole - tiled)[..., 8:24, 8:24].abs().max() < 0.05  # inside the first tile, away from its border


def test_plan_names_tiles_and_seam_period():
    assert tile_plan((4096, 4096), 4, 1024, 128) == {"tile_lr": 256, "overlap_lr": 32, "period_px": 896, "tiles": 25}
    with pytest.raises(ValueError, match="multiples of the scale"):
        tile_plan((4096, 4096), 4, 1022, 128)
    with pytest.raises(ValueError, match="integer scale"):
        upscale_tiled(_Constant(), torch.rand(1, 3, 10, 10), (35, 35), tile=4, overlap=1)
