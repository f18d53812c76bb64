"""One way to get a model: a ModelSpec (what to load, with which inference options) -> OP4KSR.

Every command, the backfill actor and the evaluation load through `load_model`. Inference
options (RFR, the VAE's decode settings, ...) have their saved default in the checkpoint and an
optional override here; `resolved_options` gives the values a run will use without loading
weights, so they can go into `params_hash` on the driver.

`source` names a model in one of four ways: a checkpoint folder, a training run folder (its
latest checkpoint), a checkpoint shipped with the package (`tiny-trained`), or a preset
(`tiny`, `flux-dev`: seeded random weights). Object-store prefixes are fetched to a local
folder by the caller first (the model library knows nothing of object storage).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

from op4ksr.errors import UserError
from op4ksr.presets import DEFAULT_MODEL, PRESETS, SHIPPED_CHECKPOINTS, preset_model_id

MODEL_INDEX = "model_index.json"
TRANSFORMER_CONFIG = "transformer/config.json"


class ModelNotFoundError(UserError):
    """A model source names nothing that can be loaded; the message says what would."""


# The choices of the config keys these specs carry, written once: jobs/config_rules.py reads them,
# and tests/jobs/test_config.py ties them to the library's own (op4ksr.rope, op4ksr.fidelity, op4ksr.model).
RFRMode = Literal["none", "base", "ntk"]  # rfr.mode
FidelityMode = Literal["none", "wavelet", "adain", "backproject"]  # sr.fidelity
DType = Literal["float32", "bfloat16", "float16"]  # model.dtype


@dataclass(frozen=True, kw_only=True)
class InferenceOptions:
    """Settings that change an output's pixels but not the weights. None: the checkpoint's saved value."""

    rfr_mode: RFRMode | None = None  # op4ksr.rope
    rfr_scale: float | None = None
    decode_shift: bool | None = None  # UltraFlux's partitioned-decoder offset (+1 row, +1 column; op4ksr.vae)
    fidelity: FidelityMode | None = None  # op4ksr.fidelity
    fidelity_levels: int | None = None
    fidelity_strength: float | None = None
    fidelity_iterations: int | None = None
    decode_partitions: int = 0  # >1: the VAE's last stage in strips (same result within ~1e-6)
    attention_backend: str = ""  # diffusers attention backend; empty: its default

    def overrides(self) -> dict:
        """The options that override a checkpoint's saved values (those not None)."""
        return {k: v for k, v in asdict(self).items() if k in SAVED_OPTIONS and v is not None}


# options a checkpoint saves, with the value a checkpoint that predates the option has; the fidelity
# ones are op4ksr.fidelity.Fidelity's defaults, repeated here to keep this module torch-free
# (tests/op4ksr/test_fidelity.py ties the two)
SAVED_OPTIONS = {"rfr_mode": "none", "rfr_scale": 1.0, "decode_shift": False,
                 "fidelity": "none", "fidelity_levels": 4, "fidelity_strength": 1.0, "fidelity_iterations": 10}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What to load: a source (folder, run folder, shipped name or preset) and how to run it."""

    source: str = DEFAULT_MODEL
    dtype: DType = "float32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # a preset's random weights
    weights: str = "dtype"  # dtype | fp8 | int8 (op4ksr.quantize)
    offload: str = "none"  # none | blocks (op4ksr.offload)
    options: InferenceOptions = field(default_factory=InferenceOptions)

    def with_source(self, source: str) -> "ModelSpec":
        return replace(self, source=source)


def locate(source: str) -> tuple[str, Path | None]:
    """("preset", None) or ("checkpoint", folder) for a source; ModelNotFoundError naming the choices."""
    if source in PRESETS:
        return "preset", None
    if source in SHIPPED_CHECKPOINTS:
        return "checkpoint", SHIPPED_CHECKPOINTS[source]
    path = Path(source)
    if (path / MODEL_INDEX).is_file():
        return "checkpoint", path
    if path.is_dir():
        from op4ksr.checkpoint import latest_checkpoint  # a training run folder: its newest checkpoint

        latest = latest_checkpoint(path)
        if latest is not None:
            return "checkpoint", latest
        raise ModelNotFoundError(f"model {source}: the folder has no {MODEL_INDEX} and no checkpoints/step-N/; "
                                 "give an OP4KSR checkpoint folder (see `op4ksr import`)")
    if "/" in source or source.startswith(".") or path.suffix:
        raise ModelNotFoundError(f"model {source}: no such folder; give an OP4KSR checkpoint folder")
    raise ModelNotFoundError(f"model {source!r} is not a checkpoint folder, a shipped checkpoint "
                             f"({', '.join(SHIPPED_CHECKPOINTS)}) or a preset with random weights ({', '.join(PRESETS)})")


def saved_options(read_json: Callable[[str], dict]) -> dict:
    """A checkpoint's saved inference options, read through `read_json(relative path)`, without weights."""
    index = read_json(MODEL_INDEX)
    saved = dict(SAVED_OPTIONS)
    transformer = read_json(TRANSFORMER_CONFIG)  # RFR is registered transformer config
    saved.update({k: transformer[k] for k in ("rfr_mode", "rfr_scale") if k in transformer})
    saved.update({k: v for k, v in index.get("inference", {}).items() if k in SAVED_OPTIONS})
    return saved


def checkpoint_reader(spec: ModelSpec) -> Callable[[str], dict] | None:
    """read_json(relative path) for the local checkpoint `spec` names; None for a preset."""
    kind, folder = locate(spec.source)
    if kind == "preset":
        return None
    return lambda name: json.loads((folder / name).read_text())


def resolved_options(spec: ModelSpec, read_json: Callable[[str], dict] | None = None) -> dict:
    """The inference options a run of `spec` uses: saved values (a preset saves the defaults) + overrides.
    `read_json` reads the checkpoint's files (default: checkpoint_reader(spec))."""
    read_json = read_json or checkpoint_reader(spec)
    saved = saved_options(read_json) if read_json else dict(SAVED_OPTIONS)
    return saved | spec.options.overrides()


def model_identity(spec: ModelSpec, read_json: Callable[[str], dict] | None = None) -> str:
    """model_id without loading weights: a checkpoint's saved id, or the preset's name and seed."""
    read_json = read_json or checkpoint_reader(spec)
    if read_json is None:
        return preset_model_id(spec.source, spec.seed)
    model_id = read_json(MODEL_INDEX).get("model_id")
    if not model_id:
        raise ModelNotFoundError(f"model {spec.source}: {MODEL_INDEX} has no model_id; re-save it with save_pretrained")
    return model_id


def check_stored_weights(spec: ModelSpec, read_json: Callable[[str], dict]) -> None:
    """WeightsModeError (one line, naming model.weights) when the checkpoint's stored weights
    (model_index.json "weights", written by `op4ksr import --weights`) cannot run as spec.weights,
    or when spec.weights cannot run on spec.device."""
    from op4ksr.quantize import WeightsModeError, check_weights_mode, int8_unavailable_reason

    stored = read_json(MODEL_INDEX).get("weights", "dtype")
    check_weights_mode(spec.weights, spec.offload, stored, f"model {spec.source}")
    reason = int8_unavailable_reason(resolve_device(spec.device)) if spec.weights == "int8" else None
    if reason:
        raise WeightsModeError(f"model.weights=int8: {reason}; set model.weights=dtype")


def resolve_device(name: str = "auto"):
    """The torch device for a config value: auto picks CUDA when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(spec: ModelSpec):
    """The OP4KSR model `spec` names, on its device in its dtype, with its inference options applied."""
    from op4ksr.model import OP4KSR, parse_dtype

    dtype, device = parse_dtype(spec.dtype), resolve_device(spec.device)
    kind, folder = locate(spec.source)
    if kind == "preset":
        logging.getLogger("op4ksr").warning(
            "model %s: a preset with random weights (seed %d): outputs are structured noise; use a checkpoint "
            "(e.g. %s) for real pictures", spec.source, spec.seed, DEFAULT_MODEL)
        model = OP4KSR.from_preset(spec.source, seed=spec.seed, dtype=dtype, device=device, weights=spec.weights,
                                   offload=spec.offload)
    else:
        model = OP4KSR.from_pretrained(folder, dtype=dtype, device=device, weights=spec.weights, offload=spec.offload)
    return model.configure(spec.options)
