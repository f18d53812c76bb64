"""Training checkpoints in object storage: `<output_dir>/checkpoints/step-N/` (the model layout plus
train_state/) and `<output_dir>/checkpoints/latest`, through pipeline.storage.

The training loop writes each checkpoint to a local staging folder; rank 0 publishes it here file
by file and moves `latest` last, so a reader never sees a half-uploaded checkpoint as the latest.
A resumed or restarted worker fetches the latest into its own staging folder.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.storage import ObjectNotFoundError, StorageSpec

CHECKPOINTS = "checkpoints"
LATEST = "latest"


class CheckpointStore:
    """The checkpoints/ folder of a run's output prefix."""

    def __init__(self, output: StorageSpec):
        self.output = output
        self.storage = output.child(CHECKPOINTS).open()

    def uri(self, name: str = "") -> str:
        return self.output.uri + f"{CHECKPOINTS}/{name}" if self.output.is_s3 else str(Path(self.output.uri) / CHECKPOINTS / name)

    def latest(self) -> str | None:
        """The name (step-N) of the newest complete checkpoint, or None for a fresh run."""
        try:
            return self.storage.get(LATEST).decode().strip() or None
        except ObjectNotFoundError:
            return None

    def publish(self, folder: Path, keep: int) -> str:
        """Upload a local checkpoint folder, point `latest` at it, delete all but the newest `keep`."""
        name = folder.name
        self.storage.put_tree(folder, f"{name}/")
        self.storage.put(LATEST, (name + "\n").encode(), content_type="text/plain")
        objects = [o.key for o in self.storage.iter_objects()]
        steps = sorted({k.split("/", 1)[0] for k in objects if k.startswith("step-") and "/" in k})
        for old in steps[:-keep]:
            for key in (k for k in objects if k.startswith(old + "/")):
                self.storage.delete(key)
        return self.uri(name)

    def fetch(self, name: str, dest: Path) -> Path:
        """Download checkpoint `name` into dest/name (a folder OP4KSR.from_pretrained and resume read)."""
        target = dest / name
        keys = [o.key for o in self.storage.iter_objects() if o.key.startswith(name + "/")]
        if not keys:
            raise ObjectNotFoundError(f"{self.uri(name)}: the checkpoint named by {self.uri(LATEST)} is empty")
        for key in keys:
            path = target / key[len(name) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.storage.get_file(key, str(path))
        return target

    def get_text(self, key: str) -> str:
        """A small file under the output prefix; "" when it does not exist."""
        try:
            return self.output.open().get(key).decode()
        except ObjectNotFoundError:
            return ""

    def put_text(self, key: str, text: str) -> None:
        """A small file beside checkpoints/ under the output prefix (metrics.jsonl, config.yaml)."""
        self.output.open().put(key, text.encode(), content_type="text/plain")
