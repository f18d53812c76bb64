import pytest
import torch

from op4ksr.evaluation.calibrate import ScaleResult, config_snippet, pick_scale, sweep_rfr
from op4ksr.model import OP4KSR


def _r(scale, ap, psnr):
    return ScaleResult(scale, ap, psnr, 0, 4)


def test_pick_is_lowest_excess_among_scales_with_near_best_psnr():
    results = [_r(0.5, 0.30, 30.0), _r(1, 0.20, 30.2), _r(4, 0.05, 25.0), _r(8, 0.10, 29.9)]
    assert pick_scale(results, psnr_tolerance_db=0.5).rfr_scale == 8  # 4 is quieter but loses 5 dB
    assert pick_scale(results, psnr_tolerance_db=10).rfr_scale == 4


def test_sweep_gives_one_result_per_scale_and_restores_the_model():
    model = OP4KSR.from_preset("tiny", rfr_mode="none")
    images = [torch.rand(3, 12, 16), torch.rand(3, 16, 10)]
    results = sweep_rfr(model, images, [0.5, 2.0], sr_scale=4)
    assert [r.rfr_scale for r in results] == [0.5, 2.0] and all(r.images == 2 for r in results)
    assert results[0].mean_lr_consistency_psnr != results[1].mean_lr_consistency_psnr  # RFR reached the forward
    assert model.transformer.config.rfr_mode == "none" and model.transformer.config.rfr_scale == 1.0
    with pytest.raises(ValueError, match="at least one image"):
        sweep_rfr(model, [], [1.0])


def test_snippet_is_a_valid_config(tmp_path):
    from jobs.config import load_config

    (tmp_path / "rfr.yaml").write_text(config_snippet("ntk", _r(2, 0.1, 30)))
    cfg = load_config([str(tmp_path / "rfr.yaml")])
    assert cfg.rfr.mode == "ntk" and cfg.rfr.scale == 2
