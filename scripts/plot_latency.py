#!/usr/bin/env python3
"""Latency-percentile plot (PNG) from the JSON that scripts/bench.sh leaves in its OUT folder.

Usage: scripts/plot_latency.py OUT_DIR docs/latency.png
Needs matplotlib (pip install matplotlib). One line per workload: the median run's p50, p90,
p99, p99.9, p99.99 and max, on a log scale.
"""
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PERCENTILES = ["p50", "p90", "p99", "p99.9", "p99.99", "max"]


def median_run(paths):
    runs = [json.load(open(p)) for p in paths]
    rps = statistics.median(r["rps"] for r in runs)
    return min(runs, key=lambda r: abs(r["rps"] - rps))


def main(out_dir, png):
    workloads = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(f"{out_dir}/*.1.json")})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in workloads:
        run = median_run(sorted(glob.glob(f"{out_dir}/{name}.*.json")))
        values = [run["latency_us"][p] / 1000.0 for p in PERCENTILES]
        ax.plot(PERCENTILES, values, marker="o", label=f"{name} ({run['rps']:,.0f} req/s)")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_xlabel("percentile")
    ax.set_title("marconi, 1 shard on CPU 0, loadgen on CPU 1, 64 connections, closed loop")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
