#!/usr/bin/env python3
"""What --workers buys on this machine: echoplex with 1 and 2 workers under the same testecho
load (1 and 2 load processes), interleaved rounds, medians. Prints a Markdown table.

Usage: bash scripts/build.sh && python3 bench/workers.py [--build DIR] [--rounds N] [--duration S] [--connections N]
                                [--sizes 64,16k]

Nothing is pinned: the server's workers and the load share every CPU, as they would on a real
two-core machine running both. The figures that matter are the ratio of messages per second
(2 workers / 1, within one round) and the CPU per message (server and load apart), read from
/proc (the server: the master and its workers summed) and from wait4 (the load).
"""
import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        out += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    return out


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([km]?)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]


def one_run(build: Path, workers: int, procs: int, size: int, conns: int, duration: float) -> dict:
    server = subprocess.Popen([str(build / "src/echoplex"), "-p", "0", f"--workers={workers}", "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        line = server.stdout.readline().decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"no startup line: {line!r}")
        pids = tree(server.pid)
        before = cpu_s(pids)
        load = subprocess.Popen([str(build / "src/testecho"), "-p", m.group(1), "-c", str(conns), "-s", str(size),
                                 "--procs", str(procs), "-d", f"{duration}s", "--json", "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, err = load.communicate(timeout=duration + 60)  # reaps the load: its CPU joins RUSAGE_CHILDREN
        server_cpu = cpu_s(pids) - before
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = json.loads(out)
        if not report.get("verified"):
            raise RuntimeError(f"testecho: {report.get('first_error')} {err.decode()[-200:]}")
        load_cpu = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
        return {"msgs": report["messages"], "rps": report["rps"], "server_us": server_cpu / report["messages"] * 1e6,
                "load_us": load_cpu / report["messages"] * 1e6}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=ROOT / "build", help="build directory (default build: scripts/build.sh)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--sizes", default="64,16k")
    a = p.parse_args()
    sizes = [parse_size(s) for s in a.sizes.split(",")]
    configs = [(1, 1), (2, 1), (1, 2), (2, 2)]  # (workers, load processes)
    runs: dict = {}
    for r in range(a.rounds):
        for size in sizes:
            for workers, procs in configs[r % len(configs):] + configs[:r % len(configs)]:
                res = one_run(a.build, workers, procs, size, a.connections, a.duration)
                runs.setdefault((size, workers, procs), []).append(res)
                print(f"round {r + 1} size {size} workers {workers} procs {procs}: {res['rps']:.0f} msg/s, "
                      f"server {res['server_us']:.2f} us/msg, load {res['load_us']:.2f} us/msg", file=sys.stderr)
    print(f"{a.connections} connections, {a.duration:g} s per run, medians of {a.rounds} rounds "
          f"({os.cpu_count()} CPUs, nothing pinned)\n")
    print("| size | load procs | msg/s, 1 worker | msg/s, 2 workers | 2 ÷ 1 (per round) | server µs/msg 1 → 2 | load µs/msg 1 → 2 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for procs in (1, 2):
            one, two = runs[(size, 1, procs)], runs[(size, 2, procs)]
            ratios = [t["rps"] / o["rps"] for o, t in zip(one, two)]
            med = lambda rs, k: statistics.median(x[k] for x in rs)  # noqa: E731
            print(f"| {size} B | {procs} | {med(one, 'rps'):,.0f} | {med(two, 'rps'):,.0f} | "
                  f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
                  f"{med(one, 'server_us'):.2f} → {med(two, 'server_us'):.2f} | "
                  f"{med(one, 'load_us'):.2f} → {med(two, 'load_us'):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
