"""op4ksr.images.degrade: determinism, shapes, the clean path, kernels and the config mirror."""
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from jobs.config import DEFAULT_CONFIG
from op4ksr.images.degrade import DegradeConfig, anisotropic_kernel, degrade, filter2d, jpeg_roundtrip, sinc_kernel

ARCHIVE = DegradeConfig(film_grain_prob=1.0, jpeg_recompress_prob=1.0)


def _hr(seed: int = 0, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(2, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bicubic")
    return (smooth + 0.1 * torch.rand(2, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("cfg", [DegradeConfig(), ARCHIVE], ids=["realesrgan", "archive"])
def test_same_generator_state_gives_identical_lr(cfg):
    hr = _hr()
    a = degrade(hr, cfg, torch.Generator().manual_seed(7))
    b = degrade(hr, cfg, torch.Generator().manual_seed(7))
    c = degrade(hr, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (2, 3, 16, 16)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, (a * 255).round() / 255)  # 8-bit levels, as a saved LR image


def test_many_seeds_cover_every_branch_without_error():
    hr = _hr(size=48)[:1]
    outs = [degrade(hr, ARCHIVE, torch.Generator().manual_seed(s)) for s in range(12)]
    assert len({o.sum().item() for o in outs}) == 12


def test_clean_path_is_antialiased_bicubic_downscale():
    hr = _hr()
    lr = degrade(hr, DegradeConfig(clean_prob=1.0), torch.Generator().manual_seed(0))
    ref = F.interpolate(hr, size=(16, 16), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    assert torch.allclose(lr, (ref * 255).round() / 255)


def test_kernels_are_normalised_and_oriented():
    k = anisotropic_kernel(21, 4.0, 1.0, 0.0)
    assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-5)
    assert k[10, :].sum() > k[:, 10].sum()  # wide along x at theta 0
    for kind, beta in (("generalized", 0.7), ("plateau", 1.5)):
        assert math.isclose(anisotropic_kernel(13, 2.0, 2.0, 0.3, kind, beta).sum().item(), 1.0, rel_tol=1e-5)
    s = sinc_kernel(13, math.pi / 3)
    assert math.isclose(s.sum().item(), 1.0, rel_tol=1e-5) and s[6, 6] == s.max()


def test_fft_filter_matches_direct_convolution():
    x = torch.rand(1, 3, 30, 41)
    kernel = anisotropic_kernel(15, 3.0, 1.5, 0.7) + 0.001
    padded = F.pad(x, (7,) * 4, mode="reflect")
    direct = F.conv2d(padded, kernel[None, None].expand(3, 1, 15, 15), groups=3)
    assert torch.allclose(filter2d(x, kernel), direct, atol=1e-5)


def test_jpeg_roundtrip_loses_more_at_low_quality():
    x = _hr()
    err = {q: (jpeg_roundtrip(x, q) - x).abs().mean().item() for q in (30, 95)}
    assert err[30] > err[95] > 0


def test_config_mirrors_the_degrade_section_of_default_yaml():
    section = OmegaConf.to_container(OmegaConf.load(DEFAULT_CONFIG).degrade)
    fields = set(DegradeConfig().as_dict()) - {"scale"}  # the scale comes from sr.scale / --scale
    assert set(section) == fields
    assert DegradeConfig.from_dict(section) == DegradeConfig()


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown degradation option"):
        DegradeConfig.from_dict({"blur_sigmaa": [1, 2]})
    with pytest.raises(ValueError, match="blur_kernel_size"):
        DegradeConfig(blur_kernel_size=8)
    with pytest.raises(ValueError, match="gaussian_noise_prob"):
        DegradeConfig(gaussian_noise_prob=1.5)
