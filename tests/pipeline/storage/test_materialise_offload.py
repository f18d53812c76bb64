"""An object-store checkpoint with model.offload=blocks: copied once, and the copy kept while the blocks stream from it."""
from pathlib import Path

import torch

from op4ksr.loading import ModelSpec
from op4ksr.model import OP4KSR
from op4ksr.offload import streamer_of
from op4ksr.presets import SHIPPED_CHECKPOINTS
from pipeline.storage import StorageSpec, materialise, scratch
from tests.tolerance import assert_forwards_close

TINY = SHIPPED_CHECKPOINTS["tiny-trained"]


def test_a_streamed_object_store_model_keeps_its_copy_and_gives_the_local_output(s3_server, s3_bucket, tmp_path,
                                                                                 monkeypatch):
    store = s3_server.open_storage(f"s3://{s3_bucket}/models/tiny/")
    for path in TINY.rglob("*"):
        if path.is_file():
            store.put(path.relative_to(TINY).as_posix(), path.read_bytes())
    root = tmp_path / "scratch"
    root.mkdir(mode=0o700)
    monkeypatch.setattr(scratch, "SCRATCH_ROOT", root)
    spec = ModelSpec(source=f"s3://{s3_bucket}/models/tiny/", offload="blocks")
    storage = StorageSpec(f"s3://{s3_bucket}/models/tiny/", s3_server.endpoint_url, credentials=s3_server.credentials)
    model = materialise.load_materialised(spec, storage)
    (copy,) = [p for p in root.iterdir() if p.is_dir()]  # kept: the blocks are read from it at every forward
    assert (copy / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    assert_forwards_close(model.upscale(x), OP4KSR.from_pretrained(TINY).upscale(x))  # two objects: tolerance
    assert streamer_of(model.transformer).visits == 2
    resident = materialise.load_materialised(ModelSpec(source=spec.source), storage)
    assert [p for p in root.iterdir() if p.is_dir()] == [copy]  # a resident load's copy is gone once loaded
    assert isinstance(resident, OP4KSR) and Path(copy).is_dir()
