"""Quality of an output without a ground-truth image (docs/QUALITY.md): the periodicity statistic
(periodicity.py) and its per-image report (periodicity_report.py), NIQE (niqe.py) and the
comparisons against its input (report.py).

The per-image report is these two calls, the first on the device beside the forward, the second
on the encode thread: what the actor imports.
"""
from op4ksr.quality.periodicity_report import quality_report
from op4ksr.quality.report import no_reference_scores

__all__ = ["quality_report", "no_reference_scores"]
