"""Totals of a cost ledger fed a batch at a time: what the cost tables, summary.json and the chart show.

Every figure of `op4ksr cost` and of a run's summary is a sum over ledger rows (by stage, by
run / month / prefix), except the per-image p50 / p95, which need the ok rows' USD: those are kept
as one float64 per ok image (8 bytes; 80 MB at 10 M images), the only part that grows with the
run. So a ledger of any length is summarised without ever being held whole (pipeline/ledger/finish.py).
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd

CPU_STAGES = ("fetch", "decode", "quality", "encode", "provenance", "upload")
GROUP_BYS = ("run_id", "month", "prefix")
DEVICE_PARTS = {"device forward": "device_forward_seconds", "device warm-up": "device_warmup_seconds",
                "device idle": "device_idle_seconds", "device lost": "device_lost_seconds"}
_SUMMED = ("total_usd", "device_usd", "cpu_usd", "get_usd", "put_usd", "egress_usd", "device_seconds",
           "device_forward_seconds", "device_warmup_seconds", "device_idle_seconds", "device_lost_seconds", "cpu_seconds",
           *(f"cpu_{stage}_seconds" for stage in (*CPU_STAGES, "other")), "requests_get", "requests_put", "bytes_in")
# per group: the columns of groups(), then the chart's USD by kind
_GROUP_COLUMNS = ("images", "ok", "total_usd", "device_seconds", "forward", *DEVICE_PARTS, "CPU", "requests", "egress")


class LedgerTotals:
    """Sums over the ledger rows `add`ed so far; `summary`, `stages`, `groups` and `chart` read them."""

    def __init__(self) -> None:
        self.images = 0
        self.ok = 0
        self.sums = dict.fromkeys(_SUMMED, 0.0)
        self.stage_usd: dict[str, float] = {}
        self.group_sums: dict[str, pd.DataFrame] = {}
        self._ok_usd: list[np.ndarray] = []

    @classmethod
    def of(cls, ledger: pd.DataFrame) -> LedgerTotals:
        totals = cls()
        totals.add(ledger)
        return totals

    def add(self, ledger: pd.DataFrame) -> None:
        """Count one batch of ledger rows (LEDGER_SCHEMA columns)."""
        is_ok = ledger["status"] == "ok"
        self.images += len(ledger)
        self.ok += int(is_ok.sum())
        for name in _SUMMED:
            self.sums[name] += float(ledger[name].sum())
        for name, amount, rate in _stage_amounts(ledger):
            self.stage_usd[name] = self.stage_usd.get(name, 0.0) + float((amount * rate).sum())
        self._ok_usd.append(ledger.loc[is_ok, "total_usd"].to_numpy(dtype=np.float64))
        per_row = _group_row_values(ledger, is_ok)
        for by in GROUP_BYS:
            batch = per_row.groupby(ledger[by], dropna=False, sort=False).sum()
            old = self.group_sums.get(by)
            self.group_sums[by] = batch if old is None else pd.concat([old, batch]).groupby(level=0, dropna=False).sum()

    def ok_usd(self) -> np.ndarray:
        """USD of each ok image (float64), in the order added."""
        if len(self._ok_usd) > 1:
            self._ok_usd = [np.concatenate(self._ok_usd)]
        return self._ok_usd[0] if self._ok_usd else np.zeros(0)

    def summary(self, prices) -> dict:
        """summary.json's cost: USD by kind and by stage, per-image statistics, utilisation, the prices."""
        s, ok = self.sums, self.ok_usd()
        device, forward = s["device_seconds"], s["device_forward_seconds"]
        p50, p95 = (float(q) for q in np.quantile(ok, [0.5, 0.95])) if len(ok) else (0.0, 0.0)
        return {
            "images": self.images, "ok": self.ok,
            "total_usd": s["total_usd"],
            **{f"{kind}_usd": s[f"{kind}_usd"] for kind in ("device", "cpu", "egress")},
            "requests_usd": s["get_usd"] + s["put_usd"],
            "per_image_mean_usd": float(ok.mean()) if len(ok) else 0.0,
            "per_image_p50_usd": p50, "per_image_p95_usd": p95,
            "per_delivered_image_usd": s["total_usd"] / self.ok if self.ok else 0.0,  # failures and skips included
            "device_seconds": device, "device_forward_seconds": forward,
            "device_warmup_seconds": s["device_warmup_seconds"], "device_idle_seconds": s["device_idle_seconds"],
            "device_lost_seconds": s["device_lost_seconds"],
            "cpu_seconds": s["cpu_seconds"],
            "utilisation": forward / device if device > 0 else 0.0,
            "stages": self.stages().to_dict("records"),
            "prices": None if prices is None else dataclasses.asdict(prices),  # None: each run's own
        }

    def stages(self) -> pd.DataFrame:
        """Per stage (device forward / warm-up / idle, CPU stages, requests, egress): stage, unit, amount, usd, share.

        USD comes from the ledger rows' own *_usd columns, so ledgers of runs priced differently still add up."""
        s = self.sums
        rows = [(name, "s", s[column], self.stage_usd.get(name, 0.0)) for name, column in _STAGE_COLUMNS]
        rows += [("GET requests", "req", s["requests_get"], s["get_usd"]),
                 ("PUT requests", "req", s["requests_put"], s["put_usd"]),
                 ("egress (bytes in)", "GB", s["bytes_in"] / 1e9, s["egress_usd"])]
        table = pd.DataFrame(rows, columns=["stage", "unit", "amount", "usd"])
        total = table["usd"].sum()
        table["share"] = table["usd"] / total if total > 0 else 0.0
        return table

    def groups(self, by: str) -> pd.DataFrame:
        """Per run, month or prefix, images, ok, USD, USD per ok image, device seconds, utilisation."""
        if by not in GROUP_BYS:
            raise ValueError(f"group by {by!r}: use month or prefix (or run_id)")
        table = self._group_sums(by)[["images", "ok", "total_usd", "device_seconds", "forward"]].copy()
        table[["images", "ok"]] = table[["images", "ok"]].astype("int64")
        table["usd_per_ok_image"] = table["total_usd"] / table["ok"].where(table["ok"] > 0)
        table["utilisation"] = table["forward"] / table["device_seconds"].where(table["device_seconds"] > 0)
        return table.drop(columns="forward").rename_axis(by).reset_index()

    def chart(self, by: str = "prefix") -> bytes:
        """PNG: USD by kind stacked per group (left) and the per-image cost distribution of ok images (right)."""
        from matplotlib.figure import Figure

        usd = self._group_sums(by)[[*DEVICE_PARTS, "CPU", "requests", "egress"]]
        names = pd.Series(usd.index, index=usd.index).fillna("?").replace("", "(top level)")
        groups = usd.groupby(names.to_numpy()).sum()
        fig = Figure(figsize=(10, 3.2 + 0.25 * len(groups)), dpi=100, layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        if len(groups):
            groups.plot.barh(stacked=True, ax=left, colormap="tab10", width=0.7)
            left.legend(fontsize=8)
        else:
            left.text(0.5, 0.5, "no images", ha="center", va="center", transform=left.transAxes)
        left.set_xlabel("USD")
        left.set_ylabel(by)
        left.set_title(f"cost by {by}")
        ok = self.ok_usd()
        if len(ok):
            right.hist(ok, bins=min(30, max(5, len(ok))), color="#4c72b0")
            for q, style in ((0.5, "-"), (0.95, "--")):
                right.axvline(np.quantile(ok, q), color="#c44e52", linestyle=style, label=f"p{round(q * 100)}")
            right.legend(fontsize=8)
        right.set_xlabel("USD per ok image")
        right.set_ylabel("images")
        right.set_title("per-image cost")
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()

    def _group_sums(self, by: str) -> pd.DataFrame:
        table = self.group_sums.get(by)
        if table is None:
            return pd.DataFrame(columns=list(_GROUP_COLUMNS), dtype="float64")
        return table.sort_index(na_position="last")


_STAGE_COLUMNS = [*((name, column) for name, column in DEVICE_PARTS.items()),
                  *((f"CPU {stage}", f"cpu_{stage}_seconds") for stage in (*CPU_STAGES, "other"))]


def _stage_amounts(ledger: pd.DataFrame):
    """(stage, amount per row, USD per unit per row): a row's device USD split by its device seconds."""
    device_rate = (ledger["device_usd"] / ledger["device_seconds"]).where(ledger["device_seconds"] > 0, 0.0)
    cpu_rate = (ledger["cpu_usd"] / ledger["cpu_seconds"]).where(ledger["cpu_seconds"] > 0, 0.0)
    for name, column in _STAGE_COLUMNS:
        yield name, ledger[column], device_rate if name.startswith("device") else cpu_rate


def _group_row_values(ledger: pd.DataFrame, is_ok: pd.Series) -> pd.DataFrame:
    """Per ledger row, the values a group sums: counts, USD, device seconds, and USD by kind for the chart."""
    device = ledger["device_seconds"].where(ledger["device_seconds"] > 0)
    values = pd.DataFrame({"images": 1.0, "ok": is_ok.astype("float64"), "total_usd": ledger["total_usd"],
                           "device_seconds": ledger["device_seconds"], "forward": ledger["device_forward_seconds"]},
                          index=ledger.index)
    for name, column in DEVICE_PARTS.items():
        values[name] = (ledger[column] / device).fillna(0.0) * ledger["device_usd"]
    values["CPU"] = ledger["cpu_usd"]
    values["requests"] = ledger["get_usd"] + ledger["put_usd"]
    values["egress"] = ledger["egress_usd"]
    return values
