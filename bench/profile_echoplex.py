#!/usr/bin/env python3
"""echoplex's profiles, run by hand (or by `bench/run.sh --profile`), apart from the benchmark.

Writes figures and tables to docs/bench/profile.md (--quick: build-bench/bench-quick/profile.md):
- syscalls: system calls per message by name (perf stat on a syscalls:sys_enter_NAME tracepoint
  each, or strace -c), io_uring requests and TCP segments per message; bare loop, echoplex epoll
  and io_uring, at 64 B x 100 and 1 MiB x 8 connections, lockstep.
- perf: server CPU per message under the kernel's main paths (perf record -e cpu-clock -g), same
  servers and points, and echoplex epoll's symbols by self cost.
- callgrind: user-space instructions per 64 B message by function, echoplex epoll and the bare
  loop, (Ir(N2) - Ir(N1)) / (N2 - N1) per function over two runs of N1 and N2 messages.
- massif: echoplex epoll's heap at its largest with N idle connections, by allocation site.
A tool that is missing or refuses to run is reported as such. Imports bench/procs.py only."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import (CONNECTION_SYSCALLS, MIB, IdleConnections, Machine, PerfSession, RunningServer,  # noqa: E402
                   ServerSpec, SyscallCounter, bare_spec, callgrind_load, echoplex_backends, echoplex_spec,
                   exclusive, human_size, log, testecho)

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["syscalls", "perf", "callgrind", "massif"]
POINTS = [(64, 100), (MIB, 8)]  # (size, lockstep connections) for syscalls and perf
# Functions whose inclusive cost (callees included) says where a loopback echo's CPU goes; a name
# ending in * sums the symbols beginning with any of its |-separated prefixes. The rows nest.
PATHS = [
    ("tcp_sendmsg", "tcp_sendmsg (sending, all under it)"),
    ("net_rx_action", "  net_rx_action (loopback delivery, softirq)"),
    ("_copy_from_iter", "  _copy_from_iter (copy in)"),
    ("tcp_recvmsg", "tcp_recvmsg (receiving, all under it)"),
    ("_copy_to_iter", "  _copy_to_iter (copy out)"),
    ("__memmove|__memcpy*", "libc memmove, memcpy"),
    ("do_epoll_wait", "do_epoll_wait"),
    ("io_cqring_wait", "io_cqring_wait (io_uring_enter's wait)"),
    ("__io_run_local_work", "__io_run_local_work (io_uring task work)"),
    ("__schedule", "__schedule"),
]


class Profiler:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.build = Path(args.build).resolve()
        self.testecho = self.build / "src" / "testecho"
        self.machine = Machine()
        self.logdir = Path(tempfile.mkdtemp(prefix="echoplex-profile-"))
        echoplex = str(self.build / "src" / "echoplex")
        self.specs: dict[str, ServerSpec] = {}
        bare = bare_spec(self.build)
        if bare:
            self.specs["bare"] = bare
        for backend in ("epoll", "io_uring"):
            if backend in echoplex_backends(echoplex):
                spec = echoplex_spec(echoplex, backend)
                try:
                    RunningServer(spec, self.machine, self.logdir).stop()
                    self.specs[backend] = spec
                except Exception as e:  # noqa: BLE001 - a kernel without io_uring
                    log(f"profile: echoplex {backend} does not start here: {e}")
        self.counter = SyscallCounter()

    def label(self, key: str) -> str:
        return self.specs[key].label

    def load(self, port: int, args: list[str]) -> dict:
        report = testecho(self.testecho, self.machine, port, ["--timeout", "60s"] + args)
        if not report.get("verified"):
            raise RuntimeError(f"testecho: {report.get('first_error') or 'not verified'}")
        return report

    # -- system calls ---------------------------------------------------------------------------

    def syscalls(self) -> list[str]:
        L = ["## System calls per message, by name", ""]
        if self.counter.tool is None:
            return L + ["Not run: neither perf nor strace works here.", ""]
        how = ("perf stat, one syscalls:sys_enter_NAME tracepoint per call" if self.counter.tool == "perf"
               else "strace -c -f (slows the server)")
        L += [f"Counted with {how} over a fixed load (`-n`), connection setup and teardown included, ÷ messages "
              "echoed. TCP segments: /proc/net/snmp OutSegs, machine-wide (both ends).", ""]
        submitted = submissions_event()
        # IORING_OP_SENDMSG is 9, IORING_OP_RECV 27 (the kernel's ABI).
        extra = {"requests": (submitted, None), "sendmsg": (submitted, "opcode == 9"),
                 "recv": (submitted, "opcode == 27")} if submitted and self.counter.tool == "perf" else {}
        for size, conns in POINTS:
            requests = (20000 if self.quick else 100000) if size < MIB else (300 if self.quick else 2000)
            keys = list(self.specs)
            calls: dict[str, dict[str, float]] = {}
            per_conn: dict[str, dict[str, float]] = {}
            others: dict[str, dict[str, float]] = {}
            for key in keys:
                server = RunningServer(self.specs[key], self.machine, self.logdir)
                try:
                    segments = tcp_out_segments()
                    with self.counter.window(server.pid, breakdown=True, extra=extra) as window:
                        report = self.load(server.port, ["-c", str(conns), "-s", str(size), "-n", str(requests)])
                    segments = tcp_out_segments() - segments
                finally:
                    server.stop()
                messages = max(report["messages"], 1)
                calls[key] = {n: c / messages for n, c in window.by_call.items()}
                calls[key]["total"] = (window.total or 0) / messages
                per_conn[key] = {n: c / conns for n, c in window.by_call.items() if n in CONNECTION_SYSCALLS}
                others[key] = {"TCP segments": segments / messages}
                for kind, count in window.extra.items():
                    others[key][f"io_uring {kind}"] = count / messages
            names = sorted({n for t in calls.values() for n in t if n != "total"},
                           key=lambda n: -max(t.get(n, 0) for t in calls.values()))
            L += [f"### {human_size(size)}, {conns} lockstep connections, {requests:,} messages", "",
                  "| per message | " + " | ".join(self.label(k) for k in keys) + " |",
                  "| --- | " + " | ".join("---:" for _ in keys) + " |"]
            for n in names + ["total"]:
                if n == "total" or max(t.get(n, 0) for t in calls.values()) >= 0.0005:
                    name = f"**{n}**" if n == "total" else n
                    L.append(f"| {name} | " + " | ".join(f"{calls[k].get(n, 0):.4f}" for k in keys) + " |")
            for what in sorted({w for t in others.values() for w in t}):
                L.append(f"| {what} | " + " | ".join(f"{others[k].get(what, 0):.2f}" for k in keys) + " |")
            once = sorted({n for t in per_conn.values() for n in t})
            if once:
                L += ["", "Calls made once per connection, per connection:", "",
                      "| per connection | " + " | ".join(self.label(k) for k in keys) + " |",
                      "| --- | " + " | ".join("---:" for _ in keys) + " |"]
                L += [f"| {n} | " + " | ".join(f"{per_conn[k].get(n, 0):.2f}" for k in keys) + " |" for n in once]
            L += [""]
        return L

    # -- perf record ----------------------------------------------------------------------------

    def perf(self) -> list[str]:
        L = ["## Where the CPU goes, kernel included (perf record)", ""]
        if not shutil.which("perf"):
            return L + ["Not run: perf is not installed.", ""]
        probe = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            return L + [f"Not run: `perf record -e cpu-clock` fails here: {probe.stderr.strip()[-200:]}", ""]
        seconds = 1.0 if self.quick else 3.0
        freq = 2000
        L += [f"`perf record -e cpu-clock -F {freq} -g` over one {seconds:g} s timed load per server. Server CPU µs "
              "per message sampled under each function, callees included (rows nest).", ""]
        for size, conns in POINTS:
            keys = list(self.specs)
            table: dict[str, dict] = {}
            top = ""
            with tempfile.TemporaryDirectory() as tmp:
                for key in keys:
                    data_file = f"{tmp}/{key}.data"
                    server = RunningServer(self.specs[key], self.machine, self.logdir)
                    try:
                        session = PerfSession(["perf", "record", "-e", "cpu-clock", "-F", str(freq), "-g", "-p",
                                               str(server.pid), "-o", data_file])
                        try:
                            session.command("enable")
                            report = self.load(server.port, ["-c", str(conns), "-s", str(size), "-d", f"{seconds}s"])
                        finally:
                            session.finish()
                    finally:
                        server.stop()
                    messages = max(report["messages"], 1)
                    by_dso: dict[str, int] = {}
                    for line in perf_lines(data_file, "--no-children", "--sort", "dso", "-n"):
                        parts = line.split()  # overhead, samples, dso
                        if len(parts) >= 3 and parts[0].endswith("%") and parts[1].isdigit():
                            by_dso[parts[2]] = by_dso.get(parts[2], 0) + int(parts[1])
                    samples = sum(by_dso.values())
                    cpu_us = samples / freq / messages * 1e6
                    kernel = sum(n for d, n in by_dso.items() if d.startswith("[kernel")) / max(samples, 1)
                    inclusive: dict[str, float] = {}
                    for line in perf_lines(data_file, "--children", "--sort", "sym", "--percent-limit", "0.2"):
                        m = re.match(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
                        if m:
                            inclusive.setdefault(m.group(4), float(m.group(1)))

                    def share(fn: str) -> float:
                        if fn.endswith("*"):
                            return sum(v for name, v in inclusive.items() if name.startswith(tuple(fn[:-1].split("|"))))
                        return inclusive.get(fn, 0.0)
                    table[key] = {"cpu": cpu_us, "kernel": kernel, "samples": samples,
                                  "paths": {fn: share(fn) / 100 * cpu_us for fn, _ in PATHS}}
                    if key == "epoll":
                        top = "\n".join(perf_lines(data_file, "--no-children", "--sort", "dso,sym",
                                                   "--percent-limit", "1")[:30])
            L += [f"### {human_size(size)}, {conns} lockstep connections", "",
                  "| µs per message | " + " | ".join(self.label(k) for k in keys) + " |",
                  "| --- | " + " | ".join("---:" for _ in keys) + " |",
                  "| all CPU sampled | " + " | ".join(f"{table[k]['cpu']:.2f}" for k in keys) + " |",
                  "| in the kernel | " + " | ".join(f"{table[k]['cpu'] * table[k]['kernel']:.2f}" for k in keys) + " |",
                  "| in user space | " + " | ".join(f"{table[k]['cpu'] * (1 - table[k]['kernel']):.2f}" for k in keys) + " |"]
            for fn, what in PATHS:
                if any(table[k]["paths"][fn] > 0 for k in keys):
                    L.append(f"| {what.replace('  ', '&nbsp;&nbsp;')} | "
                             + " | ".join(f"{table[k]['paths'][fn]:.2f}" for k in keys) + " |")
            L.append("| samples | " + " | ".join(f"{table[k]['samples']:,}" for k in keys) + " |")
            if top:
                L += ["", "echoplex epoll, by binary and symbol, self cost ≥ 1% of samples:", "", "```", top, "```"]
            L += [""]
        return L

    # -- callgrind ------------------------------------------------------------------------------

    def callgrind(self) -> list[str]:
        L = ["## User-space instructions per message, by function (callgrind)", ""]
        if not shutil.which("valgrind"):
            return L + ["Not run: valgrind is not installed.", ""]
        counts = (2000, 10000) if self.quick else (5000, 25000)
        L += [f"`valgrind --tool=callgrind` on the server; testecho `-s 64 -c 8 -P 1 -n N` for N₁ = {counts[0]:,} and "
              f"N₂ = {counts[1]:,}; per function (self cost, `callgrind_annotate --inclusive=no`), "
              "(Ir(N₂) − Ir(N₁)) ÷ (N₂ − N₁). The release build has no debug information: inlined functions count "
              "in their callers.", ""]
        totals: dict[str, float] = {}
        by_fn: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for key in ("epoll", "bare"):
                if key not in self.specs:
                    continue
                runs = []
                for n in counts:
                    out_file = Path(tmp) / f"{key}-{n}.out"
                    total, report = callgrind_load(self.specs[key], self.machine, self.logdir, self.testecho,
                                                   ["-c", "8", "-s", "64", "-P", "1", "-n", str(n)], out_file)
                    runs.append((total, int(report["messages"]), annotate(out_file)))
                (t1, m1, f1), (t2, m2, f2) = runs
                totals[key] = (t2 - t1) / (m2 - m1)
                by_fn[key] = {fn: (f2.get(fn, 0) - f1.get(fn, 0)) / (m2 - m1) for fn in set(f1) | set(f2)}
        L += ["| server | Ir per message |", "| --- | ---: |"]
        L += [f"| {self.label(k)} | {v:,.1f} |" for k, v in totals.items()]
        for key, fns in by_fn.items():
            rows = sorted(((v, fn) for fn, v in fns.items() if v >= 0.5), reverse=True)[:30 if key == "epoll" else 10]
            L += ["", f"{self.label(key)}, functions with ≥ 0.5 Ir per message:", "",
                  "| Ir per message | function |", "| ---: | --- |"]
            L += [f"| {v:,.1f} | `{fn[:140]}` |" for v, fn in rows]
        return L + [""]

    # -- massif ---------------------------------------------------------------------------------

    def massif(self) -> list[str]:
        L = ["## Heap with idle connections (massif)", ""]
        if not shutil.which("valgrind"):
            return L + ["Not run: valgrind is not installed.", ""]
        if "epoll" not in self.specs:
            return L + ["Not run: no echoplex epoll server.", ""]
        idle = 500 if self.quick else 2000
        with tempfile.TemporaryDirectory() as tmp:
            out_file = f"{tmp}/massif.out"
            server = RunningServer(self.specs["epoll"], self.machine, self.logdir, idle=idle,
                                   prefix=["valgrind", "--tool=massif", "--quiet", "--detailed-freq=1", "--depth=6",
                                           f"--massif-out-file={out_file}"], ready_timeout=120)
            held = None
            try:
                held = IdleConnections(server, idle, timeout=60)
                time.sleep(0.5)
            finally:
                server.stop(timeout=120)
                if held:
                    held.close()
            raw = Path(out_file).read_text()
        # The largest detailed snapshot (massif's own peak is taken lazily, at a later free).
        best, best_heap = "", -1
        for snap in raw.split("snapshot=")[1:]:
            heap = re.search(r"^mem_heap_B=(\d+)", snap, re.M)
            if heap and "heap_tree=detailed" in snap and int(heap.group(1)) > best_heap:
                best, best_heap = snap, int(heap.group(1))
        extra = re.search(r"^mem_heap_extra_B=(\d+)", best, re.M)
        extra_b = int(extra.group(1)) if extra else 0
        L += [f"`valgrind --tool=massif` on echoplex epoll holding {idle:,} idle connections; the largest detailed "
              "snapshot. Heap bytes requested, and malloc's headers and padding (extra), ÷ idle connections.", "",
              "| | bytes | per idle connection |", "| --- | ---: | ---: |",
              f"| heap | {best_heap:,} | {best_heap / idle:,.0f} |",
              f"| extra | {extra_b:,} | {extra_b / idle:,.0f} |", "",
              "By allocation site (≥ 1% of the heap; callers indented):", "", "```",
              f"{'bytes':>10} {'per conn':>9}  site"]
        for line in best.split("heap_tree=detailed", 1)[-1].splitlines():
            m = re.match(r"^( *)n\d+: (\d+) (.*)$", line)
            if not m or len(m.group(1)) > 3 or int(m.group(2)) < best_heap / 100:
                continue
            site = re.sub(r"^0x[0-9A-F]+: ", "", m.group(3))
            site = re.sub(r" \(in /[^)]*\)", "", site)
            site = re.sub(r"std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
                          "std::string", site)
            L.append(f"{int(m.group(2)):>10,} {int(m.group(2)) / idle:>9.0f}  {'  ' * len(m.group(1))}{site[:120]}")
        return L + ["```", ""]


def annotate(out_file: Path) -> dict[str, int]:
    """Self Ir per function of a callgrind output file (callgrind_annotate --inclusive=no)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out_file)],
                          capture_output=True, text=True).stdout
    fns: dict[str, int] = {}
    for line in text.split("file:function", 1)[-1].splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:\?\?\?:)?(.*?)(?: \[[^\]]*\])?$", line)
        if m:
            fns[m.group(2)] = fns.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return fns


def perf_lines(data_file: str, *options: str) -> list[str]:
    rep = subprocess.run(["perf", "report", "-i", data_file, "--stdio", "-g", "none", *options],
                         capture_output=True, text=True)
    return [line for line in rep.stdout.splitlines() if line.strip() and not line.startswith("#")]


def submissions_event() -> str | None:
    """The tracepoint of each request io_uring takes from its submission queue: io_uring_submit_req
    since Linux 6.1, io_uring_submit_sqe before; None if neither."""
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        for name in ("io_uring_submit_req", "io_uring_submit_sqe"):
            if Path(f"{root}/events/io_uring/{name}").is_dir():
                return f"io_uring:{name}"
    return None


def tcp_out_segments() -> int:
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    return int(dict(zip(rows[0], rows[1]))["OutSegs"])


def run_line(started: datetime.datetime, elapsed: float, quick: bool) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!docs/bench", ":!README.md"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    command = os.environ.get("BENCH_COMMAND") or "bench/profile_echoplex.py " + " ".join(sys.argv[1:])
    return (f"Run: `{command.strip()}`, {started.strftime('%Y-%m-%d %H:%M UTC')}, commit {commit}"
            f"{' + uncommitted changes' if dirty else ''}, {elapsed / 60:.1f} min"
            f"{', quick' if quick else ''}. Machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}.")


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/run.sh --profile", description=__doc__.split("\n")[0],
                                epilog="Steps: " + ", ".join(STEPS) + ". Takes about a minute (--quick: about 40 s).")
    p.add_argument("--build", default=str(ROOT / "build-bench"), help="build directory (default build-bench)")
    p.add_argument("--out", help="the Markdown file to write (default docs/bench/profile.md; "
                   "build-bench/bench-quick/profile.md with --quick)")
    p.add_argument("--quick", action="store_true", help="shorter loads, output in build-bench/bench-quick")
    p.add_argument("--only", default=",".join(STEPS), help=f"steps, comma-separated: {','.join(STEPS)} (default all)")
    args = p.parse_args()
    steps = [s for s in args.only.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error(f"--only: unknown step {unknown[0]!r} ({', '.join(STEPS)})")
    out = Path(args.out) if args.out else (Path(args.build).resolve() / "bench-quick" / "profile.md" if args.quick
                                           else ROOT / "docs" / "bench" / "profile.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = exclusive(3600)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prof = Profiler(args)
    if prof.machine.pinned:
        os.sched_setaffinity(0, {prof.machine.load_cpu})
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    body: list[str] = []
    for step in steps:
        log(f"profile: {step}")
        try:
            body += getattr(prof, step)()
        except Exception as e:  # noqa: BLE001 - one tool failing must not lose the others
            body += [f"## {step}", "", f"Failed: {e}", ""]
            log(f"profile: {step} failed: {e}")
    text = ["# echoplex profile", "", run_line(started, time.monotonic() - t0, args.quick), ""]
    place = (f"Server on CPU {prof.machine.server_cpu}, load on CPU {prof.machine.load_cpu}. " if prof.machine.pinned
             else "")
    text += [place + "Servers: " + "; ".join(f"{s.label} `{s.command}`" for s in prof.specs.values()) + ".", ""]
    out.write_text("\n".join(text + body).rstrip() + "\n")
    lock.close()
    print(f"profile: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
