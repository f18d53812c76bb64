"""Pipeline throughput on a multi-node Ray cluster, 1 vs 2 worker nodes holding the model; prints JSON.

Each run starts its own cluster with Ray's test utility `ray.cluster_utils.Cluster`: a head
(the driver's node, with CPUs for the fetch/decode tasks) and N worker nodes, each a separate
raylet on this machine with 1 CPU and one `model_slot`. The model actors ask for a
`model_slot` (`actors.resources.model_slot=1`), so exactly one lands on each worker node, and
`actors.min = actors.max = N`. The run is the real backfill (`run_backfill` with
`UpscaleActor`, tiny model, CPU, one torch thread per actor, the embedded moto S3 server),
timed as bench/pipeline_cpu.py times it. Each run is its own process (Ray allows one cluster
per process); the settings alternate (1, 2, 1, 2, ...) so that drifting load hits both alike.
usage: python bench/scale_out.py [--images 64] [--input-side 128] [--nodes 1,2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import pipeline_cpu  # bench/pipeline_cpu.py: the catalog, the config and the PNG inputs

MODEL_SLOT = "model_slot"  # the custom resource only worker nodes offer
HEAD_CPUS = 2  # logical CPUs on the head: the fetch/decode tasks (0.25 CPU each) run there or beside the actors
OBJECT_STORE_BYTES = 200 * 1024**2  # per node; Ray's default (30% of memory) x 3 raylets would crowd this machine


def _cluster(worker_nodes: int):
    """A started head plus `worker_nodes` nodes with 1 CPU and one model slot each, and ray connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": HEAD_CPUS, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    for _ in range(worker_nodes):
        cluster.add_node(num_cpus=1, resources={MODEL_SLOT: 1}, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    return cluster


def one_run(worker_nodes: int, count: int) -> dict:
    """Throughput of one backfill of `count` images with one model actor on each of `worker_nodes` nodes."""
    import ray

    from actors.upscaler import UpscaleActor
    from jobs.specs import build_run_spec
    from pipeline.run.backfill import run_backfill
    from pipeline.storage.embedded_s3 import EmbeddedS3

    load_before = os.getloadavg()[0]
    with EmbeddedS3() as server:
        cfg, _ = pipeline_cpu._setup(server, count, f"scale-{worker_nodes}", f"actors.min={worker_nodes}",
                                     f"actors.max={worker_nodes}", f"actors.resources.{MODEL_SLOT}=1",
                                     "actors.torch_threads=1")
        spec = build_run_spec(cfg, "bench", "", credentials=server.credentials)
        start = time.perf_counter()
        cluster = _cluster(worker_nodes)
        cluster_start_s = time.perf_counter() - start
        first_output: list[tuple[float, int]] = []
        slots_free: list[float] = []  # free model slots seen at each progress line: 0 = every node holds an actor

        def on_progress(progress) -> None:
            if not first_output:
                first_output.append((time.perf_counter(), progress.done))
            slots_free.append(ray.available_resources().get(MODEL_SLOT, 0.0))

        start = time.perf_counter()
        summary = run_backfill(spec, UpscaleActor, on_progress)
        end = time.perf_counter()
        ray.shutdown()
        cluster.shutdown()
    t_first, done_first = first_output[0]
    steady = (count - done_first) / (end - t_first) if end > t_first else None
    return {"worker_nodes": worker_nodes, "images": count, "ok": summary.ok,
            "cluster_start_seconds": round(cluster_start_s, 2), "pipeline_seconds": round(end - start, 2),
            "images_per_s": round(count / (end - start), 3),
            "steady_images_per_s": round(steady, 3) if steady else None,
            "model_slots_in_use_at_most": worker_nodes - min(slots_free, default=worker_nodes),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # before, after


def _child(worker_nodes: int, count: int, input_side: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(worker_nodes), "--images", str(count),
                          "--input-side", str(input_side)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"run with {worker_nodes} worker node(s) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict], nodes: list[int]) -> dict:
    """Medians per node count, and the ratio of the largest to the smallest: of the medians, and the
    median of the ratios within each repeat (runs back to back, so less moved by drifting load)."""
    low, high = min(nodes), max(nodes)
    out = {}
    for key, name in (("images_per_s", "end_to_end"), ("steady_images_per_s", "steady_state")):
        # a run too short for a steady state has None there: it counts in no figure
        medians = {n: statistics.median(r[key] for r in runs if r["worker_nodes"] == n and r[key]) for n in nodes}
        repeats = [{r["worker_nodes"]: r[key] for r in runs[i:i + len(nodes)]} for i in range(0, len(runs), len(nodes))]
        within = [rates[high] / rates[low] for rates in repeats if rates[high] and rates[low]]
        out[f"median_images_per_s_{name}"] = {str(n): round(v, 3) for n, v in medians.items()}
        out[f"ratio_{high}_vs_{low}_{name}"] = round(medians[high] / medians[low], 3)
        out[f"ratio_{high}_vs_{low}_{name}_per_repeat"] = [round(r, 3) for r in within]
        out[f"ratio_{high}_vs_{low}_{name}_median_of_repeats"] = round(statistics.median(within), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--input-side", type=int, default=128, help="input images are N x N (output 4N x 4N)")
    parser.add_argument("--nodes", default="1,2", help="worker-node counts to compare")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pipeline_cpu.INPUT_SIDE = args.input_side
    if args.child:
        print(json.dumps(one_run(args.child, args.images)))
        return
    import ray
    import torch

    nodes = [int(n) for n in args.nodes.split(",")]
    report = {"bench": "scale_out", "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
              "preset": "tiny", "torch_threads_per_actor": 1, "actor_batch": 4, "head_cpus": HEAD_CPUS,
              "worker_node": {"CPU": 1, MODEL_SLOT: 1}, "input": f"{args.input_side}x{args.input_side} png",
              "output": f"{4 * args.input_side}x{4 * args.input_side} png",
              "load_average_1m_before": round(os.getloadavg()[0], 2), "runs": []}
    for _ in range(args.repeats):
        for n in nodes:
            report["runs"].append(_child(n, args.images, args.input_side))
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    report.update(_summary(report["runs"], nodes))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
