"""Scratch folders (local model copies, staging) are gone when their owner ends, and when it was
killed, at the latest when the next owner starts on the machine."""
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.storage import scratch as scratch_module
from op4ksr.errors import UserError
from pipeline.storage.scratch import owner_prefix, scratch, scratch_folder, sweep

REPO = Path(__file__).resolve().parents[3]


def _owner_process(code: str) -> tuple[subprocess.Popen, Path]:
    """A Python process running `code`, which prints a folder path and then waits; (process, path)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the owner process printed no folder"
    return proc, Path(line)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_scratch_folder_is_removed_at_the_end_of_its_block_and_on_an_error(tmp_path):
    with scratch("model", tmp_path) as folder:
        (folder / "weights").write_bytes(b"x" * 10)
        assert folder.name.startswith(f"{owner_prefix()}-model-")
    assert not folder.exists()
    with pytest.raises(RuntimeError):
        with scratch("model", tmp_path) as failing:
            raise RuntimeError("load failed")
    assert not failing.exists()


def test_folders_of_killed_owners_go_when_the_next_one_starts_and_live_ones_stay(tmp_path):
    code = f"""
        import time
        from pathlib import Path
        from pipeline.storage.scratch import scratch_folder
        folder = scratch_folder("model", Path({str(tmp_path)!r}))
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 1000)
        print(folder, flush=True)
        time.sleep(600)
    """
    killed, dead = _owner_process(code)
    alive, live = _owner_process(code)
    try:
        _kill(killed)
        reused = tmp_path / f"{owner_prefix().rsplit('-', 1)[0]}-1-model-reused"  # our pid, another start time
        other_namespace = tmp_path / f"1-{killed.pid}-1-model-elsewhere"  # another container's: not judged here
        for folder in (reused, other_namespace):
            folder.mkdir()
        assert dead.is_dir() and live.is_dir()
        with scratch("model", tmp_path) as mine:
            assert not dead.exists() and not reused.exists()
            assert live.is_dir() and other_namespace.is_dir() and mine.is_dir()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_namespace.name])
    finally:
        _kill(alive)
    assert sweep(tmp_path) == [live]


def test_an_actor_loads_an_object_store_model_and_keeps_no_copy_even_after_a_killed_one(
        s3_server, s3_bucket, tmp_path, monkeypatch):
    """A first actor is killed while it loads (its copy is on disk); the next actor removes that copy
    when it starts, and its own once its weights are loaded."""
    from actors.upscaler import UpscaleActor
    from jobs.config import load_config
    from jobs.specs import build_run_spec
    from op4ksr.presets import SHIPPED_CHECKPOINTS

    store = s3_server.open_storage(f"s3://{s3_bucket}/")
    shipped = SHIPPED_CHECKPOINTS["tiny-trained"]
    for path in (p for p in shipped.rglob("*") if p.is_file()):
        store.put_file(f"models/tiny/{path.relative_to(shipped).as_posix()}", str(path))
    cfg = load_config([], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                           f"model.path=s3://{s3_bucket}/models/tiny/", f"storage.endpoint_url={s3_server.endpoint_url}"])
    spec = build_run_spec(cfg, "r", "", credentials=s3_server.credentials)
    root = tmp_path / "scratch"
    killed, copy = _loading_actor(spec, root)
    assert (copy / "model_index.json").is_file()  # the copy is on disk, the process mid-load
    _kill(killed)

    monkeypatch.setattr(scratch_module, "SCRATCH_ROOT", root)
    actor = UpscaleActor(spec.model, spec.actor)
    assert actor.model.model_id == spec.model_id
    assert list(root.iterdir()) == []  # the killed actor's copy and this actor's own are both gone


def _loading_actor(spec, root: Path) -> tuple[subprocess.Popen, Path]:
    """A process that starts loading `spec`'s object-store model as an actor does and hangs once its
    copy is on disk (as a load killed by the OOM killer or a spot reclaim would leave it)."""
    import pickle

    spec_file = root.parent / "spec.pickle"
    spec_file.write_bytes(pickle.dumps((spec.model, str(root))))
    return _owner_process(f"""
        import pickle, sys, time
        from pathlib import Path
        from pipeline.storage import materialise, scratch

        model, root = pickle.loads(Path({str(spec_file)!r}).read_bytes())
        scratch.SCRATCH_ROOT = Path(root)

        def hang(spec):
            print(spec.source, flush=True)
            time.sleep(600)

        materialise.load_model = hang
        materialise.load_materialised(model.spec, model.storage)
    """)


def test_a_scratch_root_that_is_a_link_or_open_to_others_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    for root in (link, open_to_all):
        with pytest.raises(UserError, match="not a folder private to this user"):
            scratch_folder("model", root)
    assert not any(elsewhere.iterdir()) and not any(open_to_all.iterdir())
    assert scratch_folder("model", tmp_path / "private").parent == tmp_path / "private"
