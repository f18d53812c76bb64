"""Start-up of the Parquet-only commands (`op4ksr report`, `op4ksr cost`): CPU s, wall s, peak RSS, torch or not.

usage:
  python bench/catalog_scale.py --child make /tmp/run20k 20000 1000     # a 20,000-row run folder
  python bench/cli_startup.py /tmp/run20k/runs/bench --before /tmp/op4ksr-main --repeats 3

Each case runs in a fresh interpreter with the tree's packages first on sys.path; `--before` adds
another checkout (e.g. `git archive <rev> | tar -x -C DIR`), run interleaved with this one so both
see the same load. Prints JSON: per tree and case, the median of the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cases(run: str, chart: str) -> dict[str, str]:
    return {
        "import": "import pipeline.ledger.finish, pipeline.ledger.catalog_cost, jobs.report, jobs.cost",
        "report": f"import sys; sys.argv = ['op4ksr', 'report', {run!r}]; from jobs.cli import main; main()",
        "cost": f"import sys; sys.argv = ['op4ksr', 'cost', {run!r}, '--chart', {chart!r}]; from jobs.cli import main; main()",
    }


def _once(root: str, code: str) -> dict:
    probe = (f"import sys; sys.path.insert(0, {root!r})\n{code}\nimport resource\n"
             "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'torch' in sys.modules, file=sys.stderr)")
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    _, rss, torch = [line for line in done.stderr.splitlines() if line.startswith("RSS")][-1].split()
    return {"cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, "wall_s": wall,
            "peak_rss_mb": int(rss) / 1024, "torch": torch == "True"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run folder (runs/<id>/)")
    parser.add_argument("--before", help="another checkout to measure the same way")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = {"this": HERE} | ({"before": os.path.abspath(args.before)} if args.before else {})
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(os.path.abspath(args.run), os.path.join(tmp, "cost.png"))
        runs = {(t, c): [] for t in trees for c in cases}
        for _ in range(args.repeats):
            for case, code in cases.items():
                for tree, root in trees.items():
                    runs[tree, case].append(_once(root, code))
    result = {"load_avg": os.getloadavg(), "repeats": args.repeats}
    for (tree, case), values in runs.items():
        result[f"{tree}/{case}"] = {k: round(statistics.median(v[k] for v in values), 2)
                                    for k in ("cpu_s", "wall_s", "peak_rss_mb")} | {"torch": values[0]["torch"]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
