#!/usr/bin/python3
"""Plots testecho results as one SVG: the latency percentile curve of each run (on HdrHistogram's
log scale of 1/(1-percentile)) and, for runs given as --json results, messages per second and p99
latency per --interval over time. Two or more runs share the axes, for comparing servers.

Usage: scripts/plot-run.py [-o OUT.svg] [--title TEXT] RUN [RUN...]
  RUN is a file testecho wrote with --json (stdout) or --hdr-out, optionally LABEL=PATH
  (the label defaults to the file name without its extension).

Needs Debian's python3-matplotlib (apt-get install python3-matplotlib); runs on /usr/bin/python3,
where Debian installs it.
"""

import argparse
import json
import os
import sys


def fail(message):
    print(f"plot-run: {message}", file=sys.stderr)
    sys.exit(1)


class Run:
    def __init__(self, label):
        self.label = label
        self.percentiles = []  # (percentile 0..100, ms)
        self.intervals = []    # dicts from the JSON


def read_hdr(path, run):
    """The four-column lines of HdrHistogram's percentile distribution (the last, 100% line has
    three: its 1/(1-p) is infinite, so it is not plotted)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) != 4:
                continue
            try:
                value, fraction = float(fields[0]), float(fields[1])
            except ValueError:
                continue  # the header
            run.percentiles.append((fraction * 100.0, value))
    if not run.percentiles:
        fail(f"{path}: no percentile lines (is it an --hdr-out file?)")


def read_json(path, run):
    with open(path, encoding="utf-8") as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as e:
            fail(f"{path}: not a testecho --json result: {e}")
    if "latency_distribution" not in report:
        fail(f"{path}: no latency_distribution (written by an older testecho?)")
    run.percentiles = [(p, ms) for p, ms in report["latency_distribution"] if p < 100.0]
    run.intervals = report.get("intervals", [])
    # The last step is the drain after the window (a few ms): too short for a rate, so only
    # steps at least half an interval long are plotted.
    interval = report.get("settings", {}).get("interval_s", 1.0)
    previous = 0.0
    steps = []
    for step in run.intervals:
        length = step["t"] - previous
        previous = step["t"]
        if length >= interval / 2:
            step["rate"] = step["messages"] / length
            steps.append(step)
    run.intervals = steps


def load(spec):
    label, sep, path = spec.partition("=")
    if not sep:
        path = spec
        label = os.path.splitext(os.path.basename(spec))[0]
    if not os.path.exists(path):
        fail(f"{path}: no such file")
    run = Run(label)
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.read(1)
    if first == "{":
        read_json(path, run)
    else:
        read_hdr(path, run)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a --json or --hdr-out file, or LABEL=PATH")
    parser.add_argument("-o", "--output", default="testecho-run.svg", help="the SVG to write (default testecho-run.svg)")
    parser.add_argument("--title", default="testecho", help="the figure's title")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("needs matplotlib: apt-get install python3-matplotlib (and run it with /usr/bin/python3)")
    matplotlib.rcParams["svg.hashsalt"] = "echoplex"  # the same run gives the same file
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, and searchable

    runs = [load(spec) for spec in args.runs]
    timed = [r for r in runs if r.intervals]
    rows = 3 if timed else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 * rows + 0.6), squeeze=False)
    curve = axes[0][0]
    for run in runs:
        xs = [1.0 / (1.0 - p / 100.0) for p, _ in run.percentiles]
        ys = [ms for _, ms in run.percentiles]
        curve.plot(xs, ys, label=run.label, linewidth=1.5)
    curve.set_xscale("log")
    ticks = [2, 10, 100, 1000, 10000, 100000]
    names = ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
    most = max((1.0 / (1.0 - p / 100.0) for r in runs for p, _ in r.percentiles), default=10)
    shown = [(t, n) for t, n in zip(ticks, names) if t <= most * 1.01] or [(2, "50%")]
    curve.set_xticks([t for t, _ in shown])
    curve.set_xticklabels([n for _, n in shown])
    curve.set_xlabel("percentile")
    curve.set_ylabel("latency (ms)")
    curve.set_title("latency by percentile")
    curve.grid(True, which="both", alpha=0.3)
    curve.legend()

    if timed:
        rate, p99 = axes[1][0], axes[2][0]
        for run in timed:
            ts = [s["t"] for s in run.intervals]
            rate.plot(ts, [s["rate"] for s in run.intervals], label=run.label, linewidth=1.2)
            points = [(s["t"], s["latency_ms"]["p99"]) for s in run.intervals if s["latency_ms"]["p99"] is not None]
            p99.plot([t for t, _ in points], [v for _, v in points], label=run.label, linewidth=1.2)
        rate.set_ylabel("messages/s")
        rate.set_title("throughput per interval")
        p99.set_ylabel("p99 latency (ms)")
        p99.set_title("p99 per interval")
        for ax in (rate, p99):
            ax.set_xlabel("seconds")
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
            ax.legend()
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, format="svg", metadata={"Date": None})
    print(f"plot-run: wrote {args.output}")


if __name__ == "__main__":
    main()
