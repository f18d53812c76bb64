"""The typed specs of a frame-sequence run (`op4ksr video IN --out OUT --ray`), built by jobs/video_fleet.py.

Plain, picklable, keyword-only dataclasses: the run reuses the backfill's RunSpec for storage,
model, actor pool, output size and prices, and adds what only footage has.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from op4ksr.video.settings import VideoSettings
from pipeline.manifest.records import params_hash
from pipeline.run.spec import RunSpec
from pipeline.storage import StorageSpec


@dataclass(frozen=True, kw_only=True)
class FilmOptions:
    """What the chunk actor (actors/film.py) needs besides the model."""

    input: StorageSpec
    output: StorageSpec
    run_id: str
    params_hash: str
    video: VideoSettings
    torch_threads: int | None


@dataclass(frozen=True, kw_only=True)
class FilmSpec:
    run: RunSpec  # input/output storage, model, pool (actors.*), size (sr.*), prices (cost.*), run id
    video: VideoSettings
    fps: float  # video.fps: frames per second of footage, for the cost per minute (a sequence carries no rate)

    @property
    def params_hash(self) -> str:
        """The output parameters' hash (the backfill's) with the video settings: a frame done under other
        settings is not done under these."""
        return params_hash({"output": self.run.params_hash, "video": dataclasses.asdict(self.video)})

    def actor_options(self) -> FilmOptions:
        return FilmOptions(input=self.run.input, output=self.run.output, run_id=self.run.run_id,
                           params_hash=self.params_hash, video=self.video, torch_threads=self.run.actor.torch_threads)
