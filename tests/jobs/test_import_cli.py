"""`op4ksr import` from folders and from a moto S3 server, then `upscale` and a backfill on what it built."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main as cli
from tests import public_flux


@pytest.fixture(scope="module")
def public(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("public-cli")
    pipe = public_flux.save_pipeline(root / "FLUX.1-tiny")
    public_flux.save_f16_vae(root / "vae-f16")
    public_flux.save_diffusers_lora(root / "lora", pipe.transformer)
    return root


def _args(base: str, vae: str, lora: str, out: str) -> list[str]:
    return ["import", "--base", base, "--vae", vae, "--lora", lora, "--out", out, "--dtype", "float32",
            "--timestep", "0.5", "--name", "tiny-f16"]


def _upload(store, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(f"{prefix}{path.relative_to(folder).as_posix()}", str(path))


@pytest.fixture
def aws_env(s3_server, monkeypatch):
    """The moto server's keys in the standard AWS chain, as a real job would get its own."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_access_key)
    return s3_server


def test_import_from_s3_gives_the_checkpoint_a_folder_gives(public, aws_env, s3_bucket, tmp_path, capsys):
    lora_file = public / "lora" / "pytorch_lora_weights.safetensors"
    assert cli(_args(str(public / "FLUX.1-tiny"), str(public / "vae-f16"), str(lora_file), str(tmp_path / "local"))) == 0
    local = json.loads((tmp_path / "local" / "model_index.json").read_text())
    assert "model_id tiny-f16@" in capsys.readouterr().err

    store = aws_env.open_storage(f"s3://{s3_bucket}/")
    for name in ("FLUX.1-tiny", "vae-f16", "lora"):
        _upload(store, public / name, f"public/{name}/")
    s3 = f"s3://{s3_bucket}/public"
    args = _args(f"{s3}/FLUX.1-tiny/", f"{s3}/vae-f16", f"{s3}/lora/pytorch_lora_weights.safetensors",
                 f"s3://{s3_bucket}/models/tiny-f16/")
    assert cli(args + [f"storage.endpoint_url={aws_env.endpoint_url}"]) == 0
    remote = json.loads(store.get("models/tiny-f16/model_index.json"))
    assert remote["weights_sha256"] == local["weights_sha256"] and remote["model_id"] == local["model_id"]
    assert remote["source"]["base"] == f"{s3}/FLUX.1-tiny/" and local["source"]["base"] == str(public / "FLUX.1-tiny")
    assert remote["source"]["loras"][0]["path"].startswith("s3://") and remote["timestep"] == 0.5
    assert {k for k in (o.key for o in store.iter_objects()) if k.startswith("models/")} == {
        "models/tiny-f16/model_index.json", "models/tiny-f16/prompt_embeds.safetensors",
        "models/tiny-f16/transformer/config.json", "models/tiny-f16/transformer/diffusion_pytorch_model.safetensors",
        "models/tiny-f16/vae/config.json", "models/tiny-f16/vae/diffusion_pytorch_model.safetensors"}

    before = {o.key: o.etag for o in store.iter_objects()}
    capsys.readouterr()
    assert cli(args + [f"storage.endpoint_url={aws_env.endpoint_url}", "--timestep", "0.3"]) == 2  # a used prefix
    assert capsys.readouterr().err.strip() == (f"op4ksr import: --out s3://{s3_bucket}/models/tiny-f16/ is not empty; "
                                               "remove what is under it or choose another prefix")
    assert {o.key: o.etag for o in store.iter_objects()} == before  # nothing fetched, built or written


def test_upscale_runs_on_an_imported_checkpoint(public, tmp_path):
    assert cli(_args(str(public / "FLUX.1-tiny"), str(public / "vae-f16"), str(public / "lora"),
                     str(tmp_path / "model"))) == 0
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(image)
    assert cli(["upscale", str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "model"), "--quiet"]) == 0
    out = Image.open(tmp_path / "out" / "in.png")
    assert out.size == (56, 40) and np.asarray(out).std() > 0


def test_a_missing_input_is_one_line_naming_it(public, tmp_path, capsys):
    assert cli(["import", "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("op4ksr import: ") and err.endswith("/nowhere: no such file or folder") and "\n" not in err
    assert cli(_args(str(public / "FLUX.1-tiny"), str(public / "vae-f16"), str(public / "vae-f16"), str(tmp_path / "o"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("op4ksr import: LoRA ") and "known formats: diffusers" in err and "\n" not in err


@pytest.mark.slow
def test_backfill_runs_on_a_checkpoint_imported_to_s3(public, aws_env, s3_bucket, ray_local, tmp_path):
    from actors.upscaler import UpscaleActor
    from jobs.config import load_config
    from jobs.specs import build_run_spec
    from pipeline.run.backfill import run_backfill

    store = aws_env.open_storage(f"s3://{s3_bucket}/")
    _upload(store, public / "FLUX.1-tiny", "public/FLUX.1-tiny/")
    args = ["import", "--base", f"s3://{s3_bucket}/public/FLUX.1-tiny/", "--vae-stride", "2", "--dtype", "float32",
            "--out", f"s3://{s3_bucket}/models/imported/", f"storage.endpoint_url={aws_env.endpoint_url}"]
    assert cli(args) == 0
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(12, 16), (16, 10)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"img-{i}.png")
        store.put_file(f"in/img-{i}.png", str(tmp_path / f"img-{i}.png"))
    cfg = load_config([], [f"input.uri=s3://{s3_bucket}/in/", f"output.uri=s3://{s3_bucket}/out/",
                           f"storage.endpoint_url={aws_env.endpoint_url}", f"model.path=s3://{s3_bucket}/models/imported/"])
    summary = run_backfill(build_run_spec(cfg, "imported-1", "", credentials=aws_env.credentials), UpscaleActor)
    assert (summary.total, summary.ok, summary.failed) == (2, 2, 0)
    index = json.loads(store.get("models/imported/model_index.json"))
    report = json.loads(store.get("out/reports/img-0.png.json"))
    assert report["model_id"] == index["model_id"] and report["period_px"] == 8  # stride 2, 2 levels: 4 px x 2
    assert Image.open(io.BytesIO(store.get("out/images/img-0.png"))).size == (64, 48)


def test_a_pipeline_prefix_is_fetched_without_its_root_level_original_weights(aws_env, s3_bucket, tmp_path):
    from jobs.import_weights import _needed
    from pipeline.storage.materialise import materialise_checkpoint
    from pipeline.storage import StorageSpec

    store = aws_env.open_storage(f"s3://{s3_bucket}/FLUX.1-dev/")
    for key in ("model_index.json", "flux1-dev.safetensors", "ae.safetensors", "transformer/config.json"):
        store.put(key, b"{}")
    spec = StorageSpec(f"s3://{s3_bucket}/FLUX.1-dev/", aws_env.endpoint_url)
    local = Path(materialise_checkpoint(spec, str(tmp_path / "dl"), keep=_needed(store)))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "model_index.json", "transformer/config.json"]
    bare = aws_env.open_storage(f"s3://{s3_bucket}/bare/")
    bare.put("config.json", b"{}")
    assert _needed(bare) is None  # a transformer folder keeps its root-level weights


def _doc_commands(name: str) -> list[str]:
    """Every `op4ksr NAME ...` command line (with its continuations) in docs/MODELS.md's code blocks."""
    lines = (Path(__file__).resolve().parents[2] / "docs" / "MODELS.md").read_text().splitlines()
    found, in_code = [], False
    for number, line in enumerate(lines):
        in_code = not in_code if line.startswith("```") else in_code
        if in_code and line.startswith(f"op4ksr {name} "):
            command, following = line, iter(lines[number + 1:])
            while command.endswith("\\"):
                command = command[:-1] + " " + next(following).strip()
            if "[--" not in command:  # not the synopsis
                found.append(command)
    return found


def test_the_commands_in_docs_models_parse():
    import shlex

    from jobs.config import load_config
    from jobs.import_weights import build_parser

    imports, backfills = _doc_commands("import"), _doc_commands("backfill")
    assert len(imports) >= 6 and len(backfills) >= 1
    for command in imports:
        args = build_parser().parse_intermixed_args(shlex.split(command)[2:])
        assert args.base and args.out and all("=" in o for o in args.overrides)
    for command in backfills:
        words = shlex.split(command)[2:]
        configs = [words[i + 1] for i, w in enumerate(words) if w == "--config"]
        load_config(configs, [w for w in words if "=" in w])
