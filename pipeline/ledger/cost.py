"""The cost ledger: what each image cost, from its manifest row and the configured prices.

Per image (docs/COST.md, docs/COST.md): the device seconds of its forward, plus an equal share
of its actor's one-off model load + warm-up and of the actor's idle time, CPU seconds per CPU
stage, bytes and requests to object storage. An actor is charged from the moment it began
loading until the run ended (Ray Data keeps pool actors until the dataset is exhausted), so the
device seconds of a run's ledger add up to the actors' whole lifetimes: nothing is left out.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa

from op4ksr.errors import UserError
from pipeline.ledger.totals import CPU_STAGES

PRICE_KEYS = ("gpu_hour_usd", "cpu_hour_usd", "put_per_1k", "get_per_1k", "egress_per_gb")

LEDGER_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("key", pa.string()),
    ("status", pa.string()),                     # ok | failed | skipped, as in the manifest
    ("prefix", pa.string()),                     # first folder of the key ("" at the top level)
    ("month", pa.string()),                      # YYYY-MM (UTC) the image was processed
    ("actor_id", pa.string()),
    ("device", pa.string()),                     # cpu, cuda:0, ... (device seconds are priced as gpu_hour_usd)
    ("device_forward_seconds", pa.float64()),    # its share of the batch forward (busy time)
    ("device_warmup_seconds", pa.float64()),     # its share of the actor's model load + warm-up
    ("device_idle_seconds", pa.float64()),       # its share of the actor's idle time
    ("device_lost_seconds", pa.float64()),       # its share of the work lost with dead actors (fleet/pool_watch.py)
    ("device_seconds", pa.float64()),            # the four above
    ("cpu_fetch_seconds", pa.float64()),         # thread CPU seconds per CPU stage
    ("cpu_decode_seconds", pa.float64()),
    ("cpu_quality_seconds", pa.float64()),       # NIQE, colour shift, faces and text after the forward (docs/QUALITY.md)
    ("cpu_encode_seconds", pa.float64()),
    ("cpu_provenance_seconds", pa.float64()),    # XMP label + C2PA signing (docs/PROVENANCE.md)
    ("cpu_upload_seconds", pa.float64()),
    ("cpu_other_seconds", pa.float64()),         # cpu_seconds not attributed to a stage (older manifests)
    ("cpu_seconds", pa.float64()),
    ("requests_get", pa.int64()),
    ("requests_put", pa.int64()),
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),
    ("device_usd", pa.float64()),
    ("cpu_usd", pa.float64()),
    ("get_usd", pa.float64()),
    ("put_usd", pa.float64()),
    ("egress_usd", pa.float64()),                # bytes_in leaving the object store, at egress_per_gb
    ("total_usd", pa.float64()),
])
LEDGER_FIELDS = tuple(LEDGER_SCHEMA.names)


@dataclasses.dataclass(frozen=True)
class LostWork:
    """Actors that ended before the run (released or dead), and the device time lost with the dead.

    `ended`: actor id -> unix s its process stopped; `lost_by_actor`: actor id -> device seconds of
    the calls it held when it died (its whole life if it delivered nothing); `per_row`: their sum
    shared over the run's rows that were not skipped.
    """

    ended: dict = dataclasses.field(default_factory=dict)
    lost_by_actor: dict = dataclasses.field(default_factory=dict)
    per_row: float = 0.0


@dataclasses.dataclass(frozen=True)
class Prices:
    """USD prices (cost.* or a cost.presets entry; built by jobs/specs.prices_from_config)."""

    gpu_hour_usd: float
    cpu_hour_usd: float
    put_per_1k: float
    get_per_1k: float
    egress_per_gb: float
    preset: str = ""  # the cost.presets entry these came from; empty: none, the cost.* keys themselves

    def __post_init__(self) -> None:
        negative = [k for k in PRICE_KEYS if getattr(self, k) < 0]
        if negative:
            raise UserError(f"prices must not be negative: {', '.join(negative)}")


def build_ledger(manifest: pd.DataFrame, prices: Prices, run_ended_at: float | None = None,
                 actors: pd.DataFrame | None = None, lost: LostWork | None = None) -> pd.DataFrame:
    """One priced ledger row per manifest row (LEDGER_SCHEMA); `run_ended_at` (unix s) ends the actors' time.

    Without `run_ended_at` an actor's time ends with its last record's last stage. `actors` is the
    whole run's `actor_activity` when `manifest` is one batch of a longer manifest (pipeline/ledger/finish.py);
    without it the actors are taken from `manifest` itself. `lost`: the actors that ended early
    and the device seconds lost with the dead ones, shared over the run's rows that were not skipped.
    """
    lost = lost or LostWork()
    m = normalise_manifest(manifest)
    ledger = pd.DataFrame({
        "run_id": m["run_id"], "key": m["key"], "status": m["status"],
        "prefix": m["key"].map(_prefix), "month": _months(m), "actor_id": m["actor_id"], "device": m["device"],
        "device_forward_seconds": m["gpu_seconds"].fillna(0.0),
    })
    if actors is None:
        actors = actor_activity(m)
    warmup, idle = _actor_shares(m, ledger["device_forward_seconds"], actors, run_ended_at, lost)
    ledger["device_warmup_seconds"], ledger["device_idle_seconds"] = warmup, idle
    ledger["device_lost_seconds"] = (m["status"] != "skipped").astype("float64") * lost.per_row
    ledger["device_seconds"] = ledger[["device_forward_seconds", "device_warmup_seconds", "device_idle_seconds",
                                       "device_lost_seconds"]].sum(axis=1)
    for stage in CPU_STAGES:
        ledger[f"cpu_{stage}_seconds"] = m[f"cpu_{stage}_seconds"].fillna(0.0)
    ledger["cpu_seconds"] = m["cpu_seconds"].fillna(0.0)
    staged = ledger[[f"cpu_{s}_seconds" for s in CPU_STAGES]].sum(axis=1)
    ledger["cpu_other_seconds"] = (ledger["cpu_seconds"] - staged).clip(lower=0.0)
    ledger["cpu_seconds"] = staged + ledger["cpu_other_seconds"]
    for name in ("requests_get", "requests_put", "bytes_in", "bytes_out"):
        ledger[name] = m[name].fillna(0).astype("int64")
    return price(ledger, prices)


def normalise_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with every column the ledger reads (missing ones empty), text as object, numbers as float64."""
    m = manifest.reindex(columns=sorted(set(manifest.columns) | _TEXT_COLUMNS | _NUMBER_COLUMNS))
    m[sorted(_TEXT_COLUMNS)] = m[sorted(_TEXT_COLUMNS)].astype(object).where(m[sorted(_TEXT_COLUMNS)].notna(), None)
    m[sorted(_NUMBER_COLUMNS)] = m[sorted(_NUMBER_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype("float64")
    return m


def actor_activity(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per actor_id: when it started loading, its load and warm-up seconds, forward seconds, rows that
    ran a forward (`charged`), all its rows and when its last stage ended. Batches combine with
    `combine_actor_activity`, so a manifest read a batch at a time gives the same table."""
    m = normalise_manifest(manifest)
    forward = m["gpu_seconds"].fillna(0.0)
    rows = m.assign(forward=forward, charged=forward > 0, ends=_row_ends(m))
    return rows.groupby("actor_id").agg(
        started=("actor_started_at", "min"), load=("actor_load_seconds", "max"),
        warmup=("actor_warmup_seconds", "max"), forward=("forward", "sum"), charged=("charged", "sum"),
        rows=("key", "size"), last_end=("ends", "max"))


def combine_actor_activity(first: pd.DataFrame | None, second: pd.DataFrame) -> pd.DataFrame:
    """The `actor_activity` of two batches together."""
    if first is None:
        return second
    return pd.concat([first, second]).groupby(level=0).agg(_ACTIVITY_COMBINE)


_ACTIVITY_COMBINE = {"started": "min", "load": "max", "warmup": "max", "forward": "sum", "charged": "sum",
                     "rows": "sum", "last_end": "max"}


def with_later_columns(ledger: pd.DataFrame) -> pd.DataFrame:
    """A stored ledger with the seconds columns added since it was written (e.g. `device_lost_seconds`,
    `cpu_quality_seconds`) as 0, so an older run's cost.parquet sums and prices like a new one."""
    missing = [f.name for f in LEDGER_SCHEMA if f.name not in ledger and pa.types.is_floating(f.type)]
    return ledger.assign(**dict.fromkeys(missing, 0.0)) if missing else ledger


def price(ledger: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """The ledger with its *_usd columns (re)computed from its seconds, requests and bytes."""
    out = ledger.copy()
    out["device_usd"] = out["device_seconds"] / 3600 * prices.gpu_hour_usd
    out["cpu_usd"] = out["cpu_seconds"] / 3600 * prices.cpu_hour_usd
    out["get_usd"] = out["requests_get"] / 1000 * prices.get_per_1k
    out["put_usd"] = out["requests_put"] / 1000 * prices.put_per_1k
    out["egress_usd"] = out["bytes_in"] / 1e9 * prices.egress_per_gb
    out["total_usd"] = out[["device_usd", "cpu_usd", "get_usd", "put_usd", "egress_usd"]].sum(axis=1)
    return out[list(LEDGER_FIELDS)]


def format_cost(summary: dict) -> str:
    """The cost table printed after a run and by `op4ksr cost`: by stage, then the per-image figures."""
    stages = pd.DataFrame(summary["stages"])
    stages["amount"] = [f"{a:.4g} {u}" for a, u in zip(stages["amount"], stages["unit"])]
    stages["usd"] = stages["usd"].map("{:.6f}".format)
    stages["share"] = stages["share"].map("{:.1%}".format)
    lines = [f"cost by stage (prices: {describe_prices(summary['prices'])})",
             stages[["stage", "amount", "usd", "share"]].to_string(index=False), ""]
    rows = [("total USD", f"{summary['total_usd']:.6f}"),
            ("per ok image USD: mean / p50 / p95", f"{summary['per_image_mean_usd']:.6f} / "
             f"{summary['per_image_p50_usd']:.6f} / {summary['per_image_p95_usd']:.6f}"),
            ("per delivered image USD (all rows)", f"{summary['per_delivered_image_usd']:.6f}"),
            ("device utilisation", f"{summary['utilisation']:.1%} (forward / actor time)")]
    lost = next((s for s in summary["stages"] if s["stage"] == "device lost"), None)
    if lost is not None:
        rows.append(("device lost with dead actors / nodes", f"{lost['amount']:.4g} s, {lost['share']:.1%} of the USD"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(lines + [f"{name:<{width}}  {value}" for name, value in rows])


def describe_prices(prices: dict | None) -> str:
    """One line naming a price set (a Prices as a dict), or saying each run kept its own."""
    if prices is None:
        return "each run's own"
    return (f"{prices['preset'] or 'cost.*'}: device {prices['gpu_hour_usd']:g} USD/h, CPU {prices['cpu_hour_usd']:g} "
            f"USD/h, GET {prices['get_per_1k']:g} / PUT {prices['put_per_1k']:g} USD per 1000, "
            f"egress {prices['egress_per_gb']:g} USD/GB")


def _actor_shares(m: pd.DataFrame, forward: pd.Series, actors: pd.DataFrame,
                  run_ended_at: float | None, lost: LostWork) -> tuple[pd.Series, pd.Series]:
    """Each row's share of its actor's load + warm-up and of its idle time (0 for rows with no actor).

    An actor that ended before the run is charged until it ended; the work a dead one held is
    not its idle time but the run's `device lost` (`lost`)."""
    actors = actors.copy()
    actors[["load", "warmup"]] = actors[["load", "warmup"]].fillna(0.0)
    end = actors["last_end"] if run_ended_at is None else pd.Series(run_ended_at, index=actors.index)
    ended = pd.Series(lost.ended, dtype="float64").reindex(actors.index)
    end = end.where(ended.isna(), np.fmin(end, ended))
    lifetime = (end - actors["started"]).fillna(0.0)
    overhead = actors["load"] + actors["warmup"]
    held = pd.Series(lost.lost_by_actor, dtype="float64").reindex(actors.index).fillna(0.0)
    actors["idle"] = (lifetime - overhead - actors["forward"] - held).clip(lower=0.0)
    # Shared over the images the actor ran forwards for; over all its rows if it ran none (a rerun
    # that skips everything still paid for loading the model).
    actors["shares"] = actors["charged"].where(actors["charged"] > 0, actors["rows"])
    rows = pd.DataFrame({"actor_id": m["actor_id"], "charged": forward > 0})
    per_actor = rows.join(
        actors[["charged", "shares", "idle"]].assign(overhead=overhead).add_suffix("_actor"), on="actor_id")
    takes = per_actor["charged"] | (per_actor["charged_actor"] == 0)
    warmup = (per_actor["overhead_actor"] / per_actor["shares_actor"]).where(takes, 0.0).fillna(0.0)
    idle = (per_actor["idle_actor"] / per_actor["shares_actor"]).where(takes, 0.0).fillna(0.0)
    return warmup, idle


def _row_ends(m: pd.DataFrame) -> pd.Series:
    """Unix seconds each row's last stage ended (NaN where no stage ran)."""
    fetch_end = m["started_at"] + m["t_fetch"].fillna(0) + m["t_decode"].fillna(0)
    model_end = m["model_started_at"] + m["t_model"].fillna(0)
    upload_end = m["encode_started_at"] + m["t_encode"].fillna(0) + m["t_upload"].fillna(0)
    return pd.concat([fetch_end, model_end, upload_end], axis=1).max(axis=1)


def _months(m: pd.DataFrame) -> pd.Series:
    stamps = pd.to_datetime(m["started_at"], unit="s", utc=True)
    months = stamps.dt.strftime("%Y-%m")
    from_run = m["run_id"].astype("string").str.extract(r"^(\d{4})(\d{2})\d{2}T")
    fallback = (from_run[0] + "-" + from_run[1]).fillna("unknown")
    return months.where(stamps.notna(), fallback).astype(object)


def _prefix(key) -> str:
    return key.split("/", 1)[0] + "/" if isinstance(key, str) and "/" in key else ""


# The manifest columns the ledger reads; older manifests may lack some (they count as unknown / 0).
_TEXT_COLUMNS = {"run_id", "key", "status", "actor_id", "device"}
_NUMBER_COLUMNS = {
    "gpu_seconds", "cpu_seconds", "requests_get", "requests_put", "bytes_in", "bytes_out", "started_at",
    "model_started_at", "encode_started_at", "t_fetch", "t_decode", "t_model", "t_encode", "t_upload",
    "actor_started_at", "actor_load_seconds", "actor_warmup_seconds", *(f"cpu_{stage}_seconds" for stage in CPU_STAGES),
}
