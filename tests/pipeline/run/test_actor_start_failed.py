"""A model actor that dies in its constructor (issue 27, item 4): the run stops with one line naming the
cause and the keys the actor starts with; no input has a row, and summary.json says why."""
import json

import numpy as np
import pytest
from PIL import Image

from actors.upscaler import UpscaleActor
from jobs.config import load_config
from jobs.specs import build_run_spec
from pipeline.run.backfill import run_backfill
from pipeline.run.dataflow import ActorStartFailed


class _NoKernel(UpscaleActor):
    """Loads as a GPU build without kernels for this device would: the driver's checks cannot see it."""

    def load_model(self, model):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


@pytest.mark.slow
def test_an_actor_dying_in_its_constructor_is_one_line_and_a_summary_that_says_why(ray_local, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(tmp_path / "in" / f"{i}.png")
    cfg = load_config(["local"], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                                  "actors.torch_threads=1", "actors.warmup_shapes=[[64,64]]"])
    with pytest.raises(ActorStartFailed) as failure:
        run_backfill(build_run_spec(cfg, "dies", ""), _NoKernel)
    message = str(failure.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("the model actor died while starting: RuntimeError: CUDA error: no kernel image")
    assert "model.path=tiny-trained, model.device=auto" in message and "actors.warmup_shapes=[[64, 64]]" in message
    summary = json.loads((tmp_path / "out" / "runs" / "dies" / "summary.json").read_text())
    assert (summary["total"], summary["ok"], summary["failed"], summary["skipped"]) == (3, 0, 0, 0)
    assert summary["stopped"] == message
