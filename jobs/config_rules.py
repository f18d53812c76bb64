"""What each config value may be: checked for every key when a config is loaded, before any job runs.

A key's type comes from its default in configs/default.yaml (a whole number, a number, true/false,
text or a list), so a new key is checked from the day it is added. RULES adds what a default
cannot say: bounds, choices, null or `auto` allowed, a number where the default happens to be
whole. A whole-number key refuses 2.5 instead of truncating it. To constrain a key, add one line:

    "pipeline.max_attempts_per_input": Rule(int, low=1),

Keys whose default is null must have a rule (tests/jobs/test_config.py checks it), since null
says nothing about the type. Cross-key checks (long_side vs scale, actors.min <= max) stay in
jobs/config.validate.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, get_args

from op4ksr.images.formats import FORMATS
from op4ksr.loading import DType, FidelityMode, RFRMode
from op4ksr.presets import PRESETS
from op4ksr.provenance.lineage import ALGORITHMS, SOURCE_TYPES
from op4ksr.video.settings import DeinterlaceMode, ExrTransfer, FieldOrder, TemporalMode
from pipeline.fleet.spec import PeerKindName

NUMBER = float  # a Rule's kind for any number (whole or not)


@dataclass(frozen=True)
class Rule:
    """The values one key accepts. kind: int (whole), float (any number), bool, str or list."""

    kind: type
    low: float | None = None  # lowest allowed value (low_open: the value must be above it)
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    null: bool = False  # null allowed (it means: the default described in default.yaml)
    auto: bool = False  # the word `auto` allowed
    pattern: str = ""  # text keys: a regular expression the whole value must match
    hint: str = ""  # text keys: the values `pattern` stands for, in words
    text_only: bool = False  # text keys: a number is refused too (a URI of 123 is a typo, not a place)

    def problem(self, value: Any) -> str:
        """Why `value` is refused ("" if it is accepted), said after the key=value."""
        if value is None:
            return "" if self.null else "must be set (null is not allowed)"
        if self.auto and value == "auto":
            return ""
        if self.choices:
            return "" if value in self.choices else f"is not one of {', '.join(map(str, self.choices))}"
        if self.kind is bool:
            return "" if isinstance(value, bool) else "must be true or false"
        if self.kind is str:
            if isinstance(value, bool) or not isinstance(value, (str, int)) or (self.text_only and not isinstance(value, str)):
                return "must be text" + (" (a location: s3://bucket/prefix/ or a folder)" if self.text_only else "")
            return "" if not self.pattern or re.fullmatch(self.pattern, str(value)) else self._pattern_hint()
        if self.kind is list:
            return "" if isinstance(value, (list, tuple)) else "must be a list, e.g. [a, b]"
        return self._number_problem(value)

    def _number_problem(self, value: Any) -> str:
        also = " or auto" if self.auto else ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a {'whole ' if self.kind is int else ''}number{also}"
        if not math.isfinite(value):
            return f"is not a finite number: give a number{also} (NaN and infinity are refused)"
        if self.kind is int and not isinstance(value, int):
            return f"must be a whole number{also} (it is not rounded)"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return self._low_words() + self._range_hint()
        if self.high is not None and value > self.high:
            return f"must be at most {self.high:g}" + self._range_hint()
        return ""

    def _low_words(self) -> str:
        if self.low == 0:
            return "must be positive" if self.low_open else "must be 0 or more"
        return f"must be {'above' if self.low_open else 'at least'} {self.low:g}"

    def _range_hint(self) -> str:
        return f" (within {self.low:g}..{self.high:g})" if self.low is not None and self.high is not None else ""

    def _pattern_hint(self) -> str:
        return f"is not one of {self.hint}" if self.hint else f"does not match {self.pattern}"


def _whole(low=None, high=None, **kw) -> Rule:
    return Rule(int, low=low, high=high, **kw)


def _number(low=None, high=None, **kw) -> Rule:
    return Rule(NUMBER, low=low, high=high, **kw)


_PROBABILITY = _number(0, 1)

RULES: dict[str, Rule] = {
    "output.format": Rule(str, choices=tuple(FORMATS)),
    "provenance.digital_source_type": Rule(str, choices=("auto", *SOURCE_TYPES)),
    "provenance.algorithm": Rule(str, choices=ALGORITHMS),
    "provenance.tsa_url": Rule(str, pattern=r"(https?://\S+)?", hint="empty or an http(s):// URL"),
    "peer.kind": Rule(str, choices=("", *get_args(PeerKindName))),
    "peer.tile": _whole(0),
    "peer.tile_overlap": _whole(0),
    "peer.timeout_s": _number(0, low_open=True),
    "compare.sample": _whole(1),
    "compare.crops": _whole(0),
    "output.quality": _whole(1, 100),
    "output.png_compress_level": _whole(0, 9),
    "storage.max_attempts": _whole(1),
    "model.preset": Rule(str, choices=tuple(PRESETS)),
    "model.dtype": Rule(str, choices=get_args(DType)),
    "model.device": Rule(str, pattern=r"auto|cpu|cuda(:\d+)?|mps", hint="auto, cpu, cuda, cuda:N, mps"),
    "model.seed": _whole(0),
    "model.weights": Rule(str, choices=("dtype", "fp8", "int8")),
    "model.offload": Rule(str, choices=("none", "blocks")),
    "model.vae_decode_partitions": _whole(0),
    "model.decode_shift": Rule(bool, null=True),
    "rfr.mode": Rule(str, choices=get_args(RFRMode), null=True),
    "rfr.scale": _number(0, low_open=True, null=True),
    "sr.scale": _number(0, low_open=True),
    "sr.long_side": _whole(1, null=True),
    "sr.min_output_side": _whole(1),
    "sr.max_output_megapixels": _number(0, low_open=True, auto=True),
    "sr.max_input_megapixels": _number(0, low_open=True),
    "sr.device_memory_gb": _number(0, low_open=True, null=True),
    "sr.fidelity": Rule(str, choices=get_args(FidelityMode), null=True),
    "sr.fidelity_levels": _whole(1, null=True),
    "sr.fidelity_strength": _number(0, 1, null=True),
    "sr.fidelity_iterations": _whole(1, null=True),
    "video.cut_threshold": _number(0, 1, low_open=True),
    "video.chunk_frames": _whole(1),
    "video.chunk_overlap": _whole(0),
    "video.flicker_threshold": _number(0, low_open=True),
    "video.temporal": Rule(str, choices=get_args(TemporalMode)),
    "video.temporal_weight": _number(0, 0.95),
    "video.codec": Rule(str, pattern=r"[a-z0-9_]+", hint="FFmpeg's encoder names (e.g. ffv1, prores_ks)"),
    "video.deinterlace": Rule(str, choices=get_args(DeinterlaceMode)),
    "video.field_order": Rule(str, choices=get_args(FieldOrder)),
    "video.exr_transfer": Rule(str, choices=get_args(ExrTransfer)),
    "video.fps": _number(0, low_open=True),
    "actors.min": _whole(1),
    "actors.max": _whole(1),
    "actors.batch_size": _whole(1),
    "actors.num_gpus": _number(0),
    "actors.num_cpus": _number(0, low_open=True),
    "actors.upload_threads": _whole(1),
    "actors.torch_threads": _whole(1, null=True),
    "actors.start_timeout_s": _number(0, low_open=True),
    "pipeline.decode_num_cpus": _number(0, low_open=True),
    "pipeline.fetch_tasks": _whole(1, null=True),
    "pipeline.fetch_threads": _whole(1),
    "pipeline.max_attempts_per_input": _whole(1),
    "pipeline.ray_num_cpus": _number(0, low_open=True, null=True),
    "run.limit": _whole(0, null=True),
    # one folder name under runs/: no '/', no '..', nothing a path would read as another place
    "run.id": Rule(str, null=True, pattern=r"|[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
                   hint="the names a run folder may have: empty (a new id from the time) or one name of letters, "
                        "digits, . _ - starting with a letter or digit (no /, no ..)"),
    **{key: Rule(str, null=True, text_only=True) for key in ("input.uri", "output.uri", "train.data", "train.output_dir")},
    "run.since": Rule(str, null=True),  # last | an ISO time: parsed by jobs/specs.build_run_spec
    "run.lock_ttl_seconds": _number(0, low_open=True),
    "run.watermark_margin_seconds": _number(0),
    "report.threshold": _number(0),
    "report.period_px": _whole(1, null=True),
    "report.max_lag_multiple": _whole(1),
    "report.contradiction_threshold": _number(0, 1),
    "report.cell_threshold": _number(0, low_open=True),
    "report.text_check": Rule(str, choices=("off", "on", "auto")),
    "report.text_threshold": _number(0, 1),
    "report.faces": Rule(str, choices=("off", "on", "auto")),
    **{f"cost.{k}": _number(0) for k in ("gpu_hour_usd", "cpu_hour_usd", "put_per_1k", "get_per_1k", "egress_per_gb")},
    "telemetry.exporter": Rule(str, choices=("none", "console", "file", "otlp")),
    "loss.lambda_ap": _number(0),
    "loss.charbonnier_eps": _number(0, low_open=True),
    "loss.ap_period": _whole(1, null=True),
    # train.* choices and cross-checks: op4ksr.training.TrainConfig, built on the driver before any worker
    "train.steps": _whole(0),
    "train.batch_size": _whole(1),
    "train.data_cpus": _number(0, low_open=True),
    "train.crop": _whole(1),
    "train.lora_rank": _whole(1),
    "train.vae_lora_rank": _whole(1),
    "train.lr": _number(0),
    "train.weight_decay": _number(0),
    "train.warmup_steps": _whole(0),
    "train.grad_clip": _number(0),
    "train.log_every": _whole(1),
    "train.checkpoint_every": _whole(1),
    "train.keep_checkpoints": _whole(1),
    "train.max_minutes": _number(0, low_open=True, null=True),
    "train.max_cpu_minutes": _number(0, low_open=True, null=True),
    "train.num_threads": _whole(0),
    "train.workers": _whole(1),
    "train.cpus_per_worker": _number(0, low_open=True),
    "train.ray_num_cpus": _number(0, low_open=True, null=True),
    "train.max_failures": _whole(0),
    **{f"degrade.{k}": _PROBABILITY for k in (
        "clean_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob", "second_blur_prob", "sinc_prob2",
        "gaussian_noise_prob2", "gray_noise_prob2", "final_sinc_prob", "film_grain_prob", "film_grain_mono_prob",
        "jpeg_recompress_prob")},
    "bench.hr_size": Rule(list, null=True),
    "bench.crops_per_image": _whole(1),
    "eval.tile": _whole(0),
    "eval.tile_overlap": _whole(0),
    "eval.contact_sheet": _whole(0),
}


def rule_for(key: str, default: Any) -> Rule | None:
    """The rule of `key`: RULES', else the kind of its default (None: a null default without a rule)."""
    if key in RULES:
        return RULES[key]
    if default is None:
        return None
    if isinstance(default, str):
        return Rule(str, null=True)  # `key=` on the command line gives null: empty text
    for kind in (bool, int, float):  # bool first: True is an int to Python
        if isinstance(default, kind):
            return Rule(kind)
    return Rule(list) if isinstance(default, (list, tuple)) else None


def value_problems(values: dict[str, Any], defaults: dict[str, Any], rule: Rule | None = None) -> list[str]:
    """`key=value problem` for each value in `values` (key -> value) its rule (`rule` for all, if given) refuses."""
    problems = []
    for key, value in values.items():
        checked = rule or rule_for(key, defaults.get(key))
        why = checked.problem(value) if checked is not None else ""
        if why:
            problems.append(f"{key}={value!r} {why}")
    return problems
