"""Compares two echoplex server binaries on the same machine in the same run: server CPU per
echoed message (medians of interleaved rounds, the order alternating so that drift favours
neither), user-space instructions per message (valgrind --tool=callgrind, two runs of N1 and N2
messages: (Ir(N2) - Ir(N1)) / (N2 - N1)) and system calls per message (strace -c).
bench/compare.sh builds the two binaries. Imports bench/procs.py only.

Usage: bench/compare.py --before BIN --after BIN --testecho BIN [--sizes 64,1k,16k,1m]
       [--connections 8,100] [--rounds 5] [--duration 2] [--out FILE.md]"""
from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import (CLK_TCK, Machine, RunningServer, ServerSpec, cpu_seconds, human_size,  # noqa: E402
                   instructions_per_message as callgrind_per_message, parse_size)
from procs import testecho as run_testecho  # noqa: E402

LOGDIR = Path(tempfile.mkdtemp(prefix="echoplex-compare-"))


def spec(binary: str) -> ServerSpec:
    return ServerSpec(Path(binary).name, binary, lambda port, idle: [binary, "-p", str(port), "-q"])


class Server(RunningServer):
    def __init__(self, machine: Machine, binary: str) -> None:
        super().__init__(spec(binary), machine, LOGDIR)


def testecho(args: argparse.Namespace, machine: Machine, port: int, extra: list[str]) -> dict:
    report = run_testecho(Path(args.testecho), machine, port, ["--timeout", "60s"] + extra, timeout=900)
    if not report["verified"]:
        raise RuntimeError(f"testecho did not verify: {report['first_error']}")
    return report


def cpu_per_message(args: argparse.Namespace, machine: Machine, binary: str, size: int, conns: int) -> float:
    server = Server(machine, binary)
    try:
        time.sleep(0.1)
        before = cpu_seconds(server.pid)
        report = testecho(args, machine, server.port,
                          ["-c", str(conns), "-s", str(size), "-d", f"{args.duration}s"])
        used = cpu_seconds(server.pid) - before
    finally:
        server.stop()
    return used / max(report["messages"], 1) * 1e6


def instructions_per_message(args: argparse.Namespace, machine: Machine, binary: str, size: int, conns: int,
                             requests: int) -> float | None:
    if not shutil.which("valgrind"):
        return None
    got = callgrind_per_message(spec(binary), machine, LOGDIR, Path(args.testecho), size, conns,
                                (requests // 5, requests))
    return got["ir_per_msg"]


def syscalls_per_message(args: argparse.Namespace, machine: Machine, binary: str, size: int, conns: int,
                         requests: int) -> float | None:
    if not shutil.which("strace"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out_file = f"{tmp}/strace.out"
        server = Server(machine, binary)
        # Attached to the running server, so that its startup is not counted; strace says when.
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out_file, "-p", str(server.pid)],
                                  stderr=subprocess.PIPE, text=True)
        assert tracer.stderr is not None
        for line in tracer.stderr:
            if "attached" in line:
                break
        try:
            report = testecho(args, machine, server.port, ["-c", str(conns), "-s", str(size), "-n", str(requests)])
        finally:
            tracer.send_signal(signal.SIGINT)  # detaches and writes the table
            tracer.wait(timeout=30)
            server.stop()
        calls = 0
        for line in Path(out_file).read_text().splitlines():
            parts = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(parts) >= 5 and parts[-1] not in ("syscall", "total") and parts[3].isdigit():
                calls += int(parts[3])
        return calls / report["messages"] if calls else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="the echoplex binary to compare against")
    p.add_argument("--after", required=True, help="the echoplex binary under test")
    p.add_argument("--testecho", required=True, help="the load generator")
    p.add_argument("--sizes", default="64,1k,16k,1m")
    p.add_argument("--connections", default="8,100")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per point (default 5)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of load per measurement (default 2)")
    p.add_argument("--label-before", default="before")
    p.add_argument("--label-after", default="after")
    p.add_argument("--out", help="also write the Markdown table to this file")
    args = p.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    conns_list = [int(c) for c in args.connections.split(",") if c]
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds and --duration must be positive")
    machine = Machine()
    started = time.time()

    lines = [f"Server CPU per echoed message in µs, median of {args.rounds} interleaved rounds of "
             f"{args.duration:g} s (min–max), lockstep testecho; server on CPU {machine.server_cpu}, load on CPU "
             f"{machine.load_cpu}; clock tick {1000 / CLK_TCK:g} ms.", "",
             f"| size | connections | {args.label_before} | {args.label_after} | {args.label_after} ÷ {args.label_before} |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        for conns in conns_list:
            if size >= 1024 * 1024 and conns > 8:
                continue  # 100 MiB in flight per round: the grid skips it too
            runs: dict[str, list[float]] = {"before": [], "after": []}
            ratios = []
            for r in range(args.rounds):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                got = {}
                for which in order:
                    got[which] = cpu_per_message(args, machine, getattr(args, which), size, conns)
                    runs[which].append(got[which])
                ratios.append(got["after"] / got["before"] if got["before"] > 0 else float("nan"))
            b, a = statistics.median(runs["before"]), statistics.median(runs["after"])
            lines.append(f"| {human_size(size)} | {conns} | {b:.2f} ({min(runs['before']):.2f}–{max(runs['before']):.2f}) "
                         f"| {a:.2f} ({min(runs['after']):.2f}–{max(runs['after']):.2f}) "
                         f"| {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")
            print(lines[-1], flush=True)

    lines += ["", "Counts that do not drift (8 lockstep connections; instructions: (Ir(N) - Ir(N/5)) / (0.8 N); "
              "system calls: one run of N, connection setup included):", "",
              "| size | messages | instructions/msg before | after | system calls/msg before | after |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for size, requests in ((64, 40000), (16 * 1024, 10000), (1024 * 1024, 200)):
        ib = instructions_per_message(args, machine, args.before, size, 8, requests)
        ia = instructions_per_message(args, machine, args.after, size, 8, requests)
        sb = syscalls_per_message(args, machine, args.before, size, 8, requests)
        sa = syscalls_per_message(args, machine, args.after, size, 8, requests)
        fmt = lambda v, d=0: "n/a" if v is None else f"{v:,.{d}f}"  # noqa: E731
        lines.append(f"| {human_size(size)} | {requests:,} | {fmt(ib)} | {fmt(ia)} | {fmt(sb, 2)} | {fmt(sa, 2)} |")
        print(lines[-1], flush=True)
    lines += ["", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
              f"{(time.time() - started) / 60:.1f} minutes."]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
