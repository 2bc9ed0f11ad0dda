#!/usr/bin/env python3
"""echoplex's benchmark: bounded loopback experiments, a Markdown report and SVG plots.

bench/run.sh installs what is missing, builds, then runs this. The main figure is the server's CPU
time (utime+stime, plus reaped children's for fork-per-connection, from /proc/PID/stat) during the
measured load, divided by the messages the load tool counted as echoed. The server runs pinned to
CPU 0, the load (and this script) to CPU 1 when the machine has two CPUs. Every point is repeated
--runs times in rounds: a round runs every server of a point back to back (in rotated order), and a
ratio is taken per round; tables give the median of those ratios with their min-max.

Experiments (--only picks some): grid (echoplex's backends and the bare epoll loop, sizes x
connections x lockstep/pipelined), idle (cost per message beside idle connections), peers (other
servers, driven by testecho and by uvloop's echoclient.py), memory (RSS per idle connection), uring
(echoplex io_uring, echoplex epoll and the bare loop in lockstep, each followed by a load whose
system calls are counted: SyscallCounter), instructions (user-space instructions per 64 B message
under callgrind, echoplex epoll and the bare loop).

The results go to build-bench/results.json (not committed): a run of some experiments (--only)
replaces those experiments' results there and keeps the others', so the report always shows every
experiment, each with the run that measured it. Profiling is separate: bench/profile_echoplex.py.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import (CLK_TCK, KIB, MIB, IdleConnections, exclusive, Machine, RunningServer,  # noqa: E402
                   ServerSpec, SyscallCounter, bare_spec, cpu_seconds, echoplex_backends, echoplex_spec,
                   human_size, instructions_per_message, log, parse_size, reset_peak_rss, status_kib,
                   testecho, tree_kib, tree_pss_kib)

ROOT = Path(__file__).resolve().parent.parent

SIZES = [64, KIB, 16 * KIB, MIB]
CONNECTIONS = [8, 100, 1000]
# Messages in flight per connection when pipelined: deep for small messages, shallow for big ones,
# so the data in flight stays near a few hundred MiB at most.
PIPELINE = {64: 16, KIB: 16, 16 * KIB: 4, MIB: 2}
# 1 MiB x 1,000 connections is left out: 1 GiB in flight, every connection echoes about one message
# in a 2 s run, and the point measures connection setup rather than echo.
SKIP_GRID = {(MIB, 1000)}
IDLE_COUNTS = [0, 100, 1000, 5000, 10000]
IDLE_ACTIVE = 8  # active lockstep connections beside the idle ones, 64 B messages
PEER_CONNECTIONS = 100
MEMORY_IDLE = 10000
# The instructions experiment: 64 B lockstep on 8 connections, two message totals (-n).
INSTRUCTION_COUNTS = (5000, 25000)
INSTRUCTION_COUNTS_QUICK = (2000, 10000)
EXPERIMENTS = ["grid", "idle", "peers", "memory", "uring", "instructions"]
# echoplex's backends, in the order the report shows them.
BACKENDS = ["epoll", "io_uring", "poll", "select"]


class PeakSampler:
    """Peak of a fork-per-connection server's summed RSS, sampled every 0.2 s during a load."""

    def __init__(self, server: RunningServer) -> None:
        self.server, self.peak, self.stop_flag = server, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        if server.spec.model == "fork":
            self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.wait(0.2):
            self.peak = max(self.peak, tree_kib(self.server.pid))

    def finish(self) -> int:
        if self.server.spec.model != "fork":
            return status_kib(self.server.pid, "VmHWM")
        self.stop_flag.set()
        self.thread.join()
        return max(self.peak, tree_kib(self.server.pid))


# ---------------------------------------------------------------------------------------------
# One measurement


@dataclass
class Load:
    client: str  # testecho | echoclient
    size: int
    connections: int
    pipeline: int = 1
    idle: int = 0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.machine = Machine()
        self.build = Path(args.build).resolve()
        self.testecho = self.build / "src" / "testecho"
        self.logdir = Path(tempfile.mkdtemp(prefix="echoplex-bench-"))
        self.results: list[dict] = []
        self.skipped: list[str] = []
        # Servers that are missing, with why: reported only by a run whose experiments asked for
        # them (have()), so that `--only uring` does not report the peers it never wanted.
        self.server_notes: list[tuple[tuple[str, ...], str]] = []
        self.asked: set[str] = set()
        self.echoclient_num: dict[tuple[str, int], int] = {}
        self.uvloop_dir, self.uvloop_python = find_uvloop_examples(self.logdir)
        self.specs = self._server_specs()
        self.counter = SyscallCounter()

    # -- servers --------------------------------------------------------------------------------

    def _server_specs(self) -> dict[str, ServerSpec]:
        b = self.build
        specs: dict[str, ServerSpec] = {}
        echoplex = str(b / "src" / "echoplex")
        bare = bare_spec(b)
        if bare:
            specs["bare"] = bare
        compiled = echoplex_backends(echoplex)
        for backend in BACKENDS:
            if backend not in compiled:
                why = "; io_uring needs liburing-dev at configure time" if backend == "io_uring" else ""
                self.server_notes.append(((backend,), f"echoplex {backend}: `echoplex --version` does not list it "
                                                      f"(compiled out{why})"))
                continue
            specs[backend] = echoplex_spec(echoplex, backend)
        asio = b / "bench" / "asio_echo"
        if asio.exists():
            specs["asio"] = ServerSpec("asio", "Boost.Asio", lambda port, idle: [str(asio), "--port", str(port)],
                                       command="bench/asio_echo")
        else:
            self.server_notes.append((("asio",), "Boost.Asio server: Boost headers not found at configure time "
                                                  "(libboost-dev)"))
        if self.uvloop_dir:
            server_py = str(self.uvloop_dir / "echoserver.py")
            py = self.uvloop_python
            specs["uvloop"] = ServerSpec(
                "uvloop", "uvloop (protocol)",
                lambda port, idle: [py, server_py, "--uvloop", "--proto", "--addr", f"127.0.0.1:{port}"],
                announces=False, command="echoserver.py --uvloop --proto")
            specs["asyncio"] = ServerSpec(
                "asyncio", "asyncio (protocol)",
                lambda port, idle: [py, server_py, "--proto", "--addr", f"127.0.0.1:{port}"],
                announces=False, command="echoserver.py --proto")
        else:
            self.server_notes.append((("uvloop", "asyncio"), "uvloop and asyncio servers, and echoclient.py: "
                                      "python3-uvloop's examples/bench not found"))
        thread = b / "bench" / "thread_echo"
        if thread.exists():
            specs["thread"] = ServerSpec("thread", "thread per connection",
                                         lambda port, idle: [str(thread), "--port", str(port)],
                                         model="threads", command="bench/thread_echo")
        socat = shutil.which("socat")
        if socat:
            specs["socat"] = ServerSpec(
                "socat", "socat fork+cat",
                lambda port, idle: [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024,nodelay",
                                    "EXEC:cat"],
                announces=False, model="fork",
                command="socat TCP-LISTEN:PORT,bind=127.0.0.1,fork,reuseaddr,backlog=1024,nodelay EXEC:cat")
        else:
            self.server_notes.append((("socat",), "socat: not installed"))
        wanted = self.args.servers
        specs = {k: v for k, v in specs.items() if not wanted or k in wanted}
        if "io_uring" in specs:
            refused = self._refuses_to_start(specs["io_uring"])
            if refused:
                del specs["io_uring"]
                self.server_notes.append((("io_uring",), f"echoplex io_uring: the server refuses to start here "
                                                         f"({refused})"))
        return specs

    def _refuses_to_start(self, spec: ServerSpec) -> str | None:
        """Why spec's server does not start (a kernel without io_uring, a seccomp filter, a
        sysctl), from its stderr; None when it starts and listens."""
        try:
            RunningServer(spec, self.machine, self.logdir).stop()
            return None
        except Exception as e:  # noqa: BLE001
            log_text = spec_log(self.logdir, spec).strip().splitlines()
            return (log_text[-1] if log_text else str(e))[:300]

    def have(self, *keys: str) -> list[str]:
        self.asked.update(keys)
        return [k for k in keys if k in self.specs]

    def skip_notes(self) -> list[str]:
        return [note for keys, note in self.server_notes if self.asked & set(keys)] + self.skipped

    # -- loads ----------------------------------------------------------------------------------

    def run_testecho(self, port: int, load: Load, duration: float | None = None) -> dict:
        d = duration or self.args.duration
        timeout = 20
        report = testecho(self.testecho, self.machine, port,
                          ["-c", str(load.connections), "-s", str(load.size), "-P", str(load.pipeline), "-d", f"{d}s",
                           "--timeout", f"{timeout}s"], timeout=d + 4 * timeout + 30)
        lat = report["latency_ms"]
        return {
            "messages": report["messages"],
            "rps": report["rps"],
            "mib_per_s": report["mib_per_s"],
            "latency_ms": {k: lat[k] for k in ("avg", "p50", "p90", "p99", "p99_9", "max")},
            "verified": bool(report["verified"]),
            "first_error": report.get("first_error"),
        }

    def run_echoclient(self, port: int, size: int, num: int, expect_s: float | None = None) -> dict:
        assert self.uvloop_dir is not None
        argv = self.machine.load([self.uvloop_python, str(self.uvloop_dir / "echoclient.py"),
                                  "--addr", f"127.0.0.1:{port}", "--msize", str(size), "--num", str(num)])
        t0 = time.monotonic()
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        wall = time.monotonic() - t0
        text = out.stdout.decode()
        m = re.search(r"^(\d+) in ([\d.]+)$", text, re.M)
        r = re.search(r"^([\d.]+) requests/sec$", text, re.M)
        if out.returncode != 0 or not m or not r:
            raise RuntimeError(f"echoclient.py exit {out.returncode}: {(text + out.stderr.decode())[-300:]}")
        # echoclient.py checks lengths, not bytes, and its process pool drops worker exceptions:
        # an error shows up only as a traceback on stderr.
        # A run far shorter than the trial predicted means workers quit early: not counted.
        ok = "Traceback" not in out.stderr.decode() and (expect_s is None or wall > 0.3 * expect_s)
        return {"messages": int(m.group(1)), "rps": float(r.group(1)),
                "mib_per_s": float(r.group(1)) * size / MIB, "latency_ms": None,
                "verified": ok, "first_error": None if ok else out.stderr.decode()[-300:], "wall_s": wall}

    def measure(self, exp: str, key: str, load: Load, round_no: int, num: int | None = None,
                count_syscalls: bool = False) -> dict:
        spec = self.specs[key]
        rec: dict = {"exp": exp, "server": key, "client": load.client, "size": load.size,
                     "connections": load.connections, "pipeline": load.pipeline, "idle": load.idle,
                     "round": round_no, "ok": False}
        server = None
        idle = None
        try:
            server = RunningServer(spec, self.machine, self.logdir, idle=load.idle)
            if load.idle:
                idle = IdleConnections(server, load.idle)
                time.sleep(0.2)
            rec["rss_before_kib"] = server.rss_kib()
            reset_peak_rss(server.pid)
            sampler = PeakSampler(server)
            cpu0 = cpu_seconds(server.pid)
            if load.client == "testecho":
                out = self.run_testecho(server.port, load)
            else:
                assert num is not None
                out = self.run_echoclient(server.port, load.size, num, self.args.duration)
            server.wait_children_gone()
            cpu1 = cpu_seconds(server.pid)
            rec["peak_rss_kib"] = sampler.finish()
            rec.update(out)
            rec["cpu_s"] = cpu1 - cpu0
            if not server.alive():
                raise RuntimeError(f"{key} died during the load")
            if out["messages"] > 0:
                rec["cpu_us_per_msg"] = rec["cpu_s"] / out["messages"] * 1e6
            rec["ok"] = bool(out["verified"]) and out["messages"] > 0
            if not rec["ok"]:
                rec["error"] = out.get("first_error") or "not verified"
            elif count_syscalls:
                try:
                    self.count_syscalls(server, load, rec)
                except Exception as e:  # noqa: BLE001 - the CPU figure stands without its count
                    rec["syscall_error"] = str(e)
        except Exception as e:  # noqa: BLE001 - one failed point must not end the benchmark
            rec["error"] = str(e)
        finally:
            if idle:
                idle.close()
            if server:
                server.stop()
        status = f"{rec.get('cpu_us_per_msg', 0):8.2f} us/msg" if rec["ok"] else f"FAILED: {rec.get('error')}"
        if rec["ok"] and "syscalls_per_msg" in rec:
            status += f" {rec['syscalls_per_msg']:6.3f} syscalls/msg"
        log(f"{exp:6} r{round_no} {key:8} {load.client:10} {human_size(load.size):>7} c={load.connections:<4} "
            f"P={load.pipeline:<2} idle={load.idle:<5} {status}")
        self.results.append(rec)
        return rec

    def count_syscalls(self, server: RunningServer, load: Load, rec: dict) -> None:
        """A second, shorter load of the same kind on the same server, with its system calls
        counted: calls per echoed message over a window like the CPU figure's (the load's
        connection setup and teardown included). Counted apart from the timed load because
        counting makes each call dearer (see SyscallCounter)."""
        duration = self.count_duration()
        with self.counter.window(server.pid) as window:
            out = self.run_testecho(server.port, load, duration)
        if not server.alive():
            raise RuntimeError(f"{server.spec.key} died during the counted load")
        if not out["verified"] or not out["messages"] or window.total is None:
            raise RuntimeError(f"counted load: {out.get('first_error') or 'nothing counted'}")
        rec.update({"syscalls": window.total, "syscall_messages": out["messages"],
                    "syscalls_per_msg": window.total / out["messages"], "syscall_counter": self.counter.tool,
                    "syscall_window_s": duration})
        if window.connection is not None:
            # The calls made once per connection (accept, setsockopt, close...), apart: in a short
            # window with few big messages they are a large share of the total.
            rec["connection_syscalls"] = window.connection
            rec["echo_syscalls_per_msg"] = (window.total - window.connection) / out["messages"]

    def count_duration(self) -> float:
        # A count needs no long window (and the rounds give its spread): half the timed load.
        return max(self.args.duration / 2, min(self.args.duration, 0.5))

    # -- experiments ----------------------------------------------------------------------------

    def rounds(self) -> range:
        return range(1, self.args.runs + 1)

    def rotated(self, keys: list[str], round_no: int) -> list[str]:
        k = round_no % len(keys) if keys else 0
        return keys[k:] + keys[:k]

    def exp_grid(self) -> None:
        keys = self.have("bare", *BACKENDS)
        points = []
        for size in self.args.sizes:
            for conns in CONNECTIONS:
                if (size, conns) in SKIP_GRID:
                    continue
                for pipeline in (1, PIPELINE[size]):
                    points.append(Load("testecho", size, conns, pipeline))
        for r in self.rounds():
            for load in points:
                for key in self.rotated(keys, r):
                    if self.specs[key].fd_limit and load.connections + 16 > self.specs[key].fd_limit:
                        continue
                    self.measure("grid", key, load, r)

    def exp_idle(self) -> None:
        keys = self.have("bare", *BACKENDS)
        for r in self.rounds():
            for idle in IDLE_COUNTS:
                for key in self.rotated(keys, r):
                    limit = self.specs[key].fd_limit
                    if limit and idle + IDLE_ACTIVE + 16 > limit:
                        continue
                    self.measure("idle", key, Load("testecho", 64, IDLE_ACTIVE, 1, idle), r)

    def exp_peers(self) -> None:
        keys = self.have("bare", "epoll", "io_uring", "asio", "uvloop", "asyncio", "thread", "socat")
        with_echoclient = self.uvloop_dir is not None
        for r in self.rounds():
            for size in self.args.sizes:
                for key in self.rotated(keys, r):
                    self.measure("peers", key, Load("testecho", size, PEER_CONNECTIONS), r)
                if not with_echoclient:
                    continue
                for key in self.rotated(keys, r):
                    num = self.echoclient_messages(key, size)
                    self.measure("peers", key, Load("echoclient", size, 3), r, num=num)

    def exp_uring(self) -> None:
        """io_uring beside epoll and the bare loop: lockstep, sizes x connections, each measurement
        followed by a counted one (measure's count_syscalls) on the same server. Without io_uring
        epoll and the bare loop still run: their system call counts decide a target."""
        keys = self.have("io_uring", "epoll", "bare")
        if not keys:
            self.skipped.append("the uring experiment: none of its servers to measure")
            return
        if self.counter.tool is None:
            self.skipped.append("system calls per message: neither perf nor strace works here")
        points = [Load("testecho", size, conns) for size in self.args.sizes for conns in CONNECTIONS
                  if (size, conns) not in SKIP_GRID]
        for r in self.rounds():
            for load in points:
                for key in self.rotated(keys, r):
                    self.measure("uring", key, load, r, count_syscalls=self.counter.tool is not None)

    def exp_instructions(self) -> None:
        """User-space instructions per 64 B message (callgrind), echoplex epoll and the bare loop,
        8 lockstep connections, by the difference of two runs with different message totals."""
        keys = self.have("epoll", "bare")
        if not shutil.which("valgrind"):
            self.skipped.append("the instructions experiment: valgrind is not installed")
            return
        counts = INSTRUCTION_COUNTS_QUICK if self.args.quick else INSTRUCTION_COUNTS
        for r in self.rounds():
            for key in self.rotated(keys, r):
                rec: dict = {"exp": "instructions", "server": key, "client": "testecho", "size": 64, "connections": 8,
                             "pipeline": 1, "idle": 0, "round": r, "ok": False, "counts": list(counts)}
                try:
                    rec.update(instructions_per_message(self.specs[key], self.machine, self.logdir, self.testecho,
                                                        64, 8, counts))
                    rec["ok"] = True
                except Exception as e:  # noqa: BLE001
                    rec["error"] = str(e)
                log(f"instr  r{r} {key:8} 64 B c=8 -n {counts[0]},{counts[1]} "
                    + (f"{rec['ir_per_msg']:8.0f} Ir/msg" if rec["ok"] else f"FAILED: {rec.get('error')}"))
                self.results.append(rec)

    def echoclient_messages(self, key: str, size: int) -> int:
        """Messages per echoclient.py worker that fill about --duration, from one short trial."""
        if (key, size) not in self.echoclient_num:
            trial = 2000 if size <= 16 * KIB else 100
            num = trial
            server = None
            try:
                server = RunningServer(self.specs[key], self.machine, self.logdir)
                out = self.run_echoclient(server.port, size, trial)
                rate = out["messages"] / max(out["wall_s"] - 0.15, 0.05) / 3
                num = int(min(max(rate * self.args.duration, 50), 500000))
            except Exception as e:  # noqa: BLE001
                log(f"echoclient trial on {key} failed: {e}")
            finally:
                if server:
                    server.stop()
            self.echoclient_num[(key, size)] = num
        return self.echoclient_num[(key, size)]

    def exp_memory(self) -> None:
        keys = self.have(*BACKENDS, "bare", "asio", "uvloop", "asyncio", "thread", "socat")
        for r in self.rounds():
            for key in self.rotated(keys, r):
                spec = self.specs[key]
                n = 100 if spec.model == "fork" else MEMORY_IDLE
                rec: dict = {"exp": "memory", "server": key, "idle": n, "round": r, "ok": False}
                if spec.fd_limit and n + 16 > spec.fd_limit:
                    rec["error"] = f"cannot hold {n} connections: FD_SETSIZE is {spec.fd_limit}"
                    self.results.append(rec)
                    continue
                server = idle = None
                try:
                    server = RunningServer(spec, self.machine, self.logdir, idle=n)
                    time.sleep(0.2)
                    rss0 = server.rss_kib()
                    pss0 = tree_pss_kib(server.pid)
                    idle = IdleConnections(server, n)
                    time.sleep(0.5)
                    rss1 = server.rss_kib()
                    rec.update({"rss0_kib": rss0, "rss1_kib": rss1, "ok": True,
                                "bytes_per_conn": (rss1 - rss0) * KIB / n})
                    if spec.model == "fork":
                        rec["pss_bytes_per_conn"] = (tree_pss_kib(server.pid) - pss0) * KIB / n
                except Exception as e:  # noqa: BLE001
                    rec["error"] = str(e)
                finally:
                    if idle:
                        idle.close()
                    if server:
                        server.stop()
                log(f"memory r{r} {key:8} idle={n:<5} "
                    + (f"{rec['bytes_per_conn']:8.0f} B/conn" if rec["ok"] else f"FAILED: {rec.get('error')}"))
                self.results.append(rec)


def spec_log(logdir: Path, spec: ServerSpec) -> str:
    try:
        return (logdir / f"{spec.key}.stderr").read_text(errors="replace")
    except OSError:
        return ""


def find_uvloop_examples(scratch: Path) -> tuple[Path | None, str]:
    """Where Debian's python3-uvloop put echoserver.py and echoclient.py (dpkg -L), and a Python
    that imports uvloop. Compressed copies are unpacked into scratch, never into the tree."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    try:
        listing = subprocess.run(["dpkg", "-L", "python3-uvloop"], capture_output=True, text=True).stdout.split()
    except OSError:
        return None, python
    found: dict[str, Path] = {}
    for path in listing:
        name = Path(path).name
        for want in ("echoserver.py", "echoclient.py"):
            if name in (want, want + ".gz"):
                found[want] = Path(path)
    if len(found) < 2:
        return None, python
    if subprocess.run([python, "-c", "import uvloop"], capture_output=True).returncode != 0:
        return None, python
    if found["echoserver.py"].parent == found["echoclient.py"].parent and found["echoserver.py"].suffix == ".py" \
            and found["echoclient.py"].suffix == ".py":
        return found["echoserver.py"].parent, python
    target = scratch / "uvloop-bench"
    target.mkdir(exist_ok=True)
    for want, path in found.items():
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        (target / want).write_bytes(data)
    return target, python


# ---------------------------------------------------------------------------------------------
# Environment


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    waited = 0.0
    while load_average() >= threshold and waited < max_wait:
        log(f"load average {load_average():.2f} >= {threshold}: waiting ({waited:.0f}/{max_wait:.0f} s)")
        time.sleep(30)
        waited += 30
    return waited


def machine_description(machine: Machine) -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = status_line("/proc/meminfo", "MemTotal")
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    # Changes to what this script writes itself (the report, README.md) do not make the code dirty.
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!docs/bench", ":!README.md"], capture_output=True, text=True).stdout.strip()
    os_name = "Linux"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "os": os_name,
        "mem_gib": round(mem_kib / MIB, 1),
        "commit": (git.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty else ""),
        "pinned": machine.pinned,
        "server_cpu": machine.server_cpu,
        "load_cpu": machine.load_cpu,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "clk_tck": CLK_TCK,
    }


def status_line(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_meta(data: dict) -> dict:
    """What the report says about the run that measured an experiment."""
    keys = ("command", "started", "elapsed_s", "waited_s", "load_start", "load_end", "load_after",
            "elapsed_by_experiment_s", "runs", "duration_s", "quick", "machine", "skipped", "experiments",
            "syscall_counter")
    return {k: data.get(k) for k in keys}


def merge_previous(data: dict, previous: dict) -> dict:
    """This run's data, plus the results of every experiment it did not measure from the previous
    results.json, each experiment with the run that measured it (measured_by). An experiment that
    runs now replaces all its earlier results: rounds are never paired across runs."""
    ran = set(data["experiments"])
    kept_runs = []
    for meta in previous.get("measured_by") or [run_meta(previous)]:
        exps = [e for e in meta["experiments"] if e not in ran]
        if exps:
            kept_runs.append({**meta, "experiments": exps})
    kept = {e for meta in kept_runs for e in meta["experiments"]}
    data["results"] = [r for r in previous["results"] if r["exp"] in kept] + data["results"]
    data["measured_by"] = kept_runs + data["measured_by"]
    data["experiments"] = [e for e in EXPERIMENTS if e in kept | ran]
    data["servers"] = {**previous.get("servers", {}), **data["servers"]}
    data["skipped"] = list(dict.fromkeys(s for meta in data["measured_by"] for s in meta.get("skipped") or []))
    if "peers" not in ran:
        data["uvloop_examples"] = previous.get("uvloop_examples")  # the Method names the peers' client
    if "uring" not in ran:
        data["syscall_counter"] = previous.get("syscall_counter")
    return data



def main() -> int:
    p = argparse.ArgumentParser(
        prog="bench/run.sh", description=__doc__.split("\n")[0],
        epilog="bench/run.sh installs the Debian packages, builds build-bench/ and passes these options to "
               "bench/bench.py. A full run writes docs/bench/report.md, its SVG plots and README.md's Benchmarks "
               "section, and keeps its results in build-bench/results.json. --quick writes everything to "
               "build-bench/bench-quick/ instead and leaves README.md and docs/ alone. Profiling is apart: "
               "bench/run.sh --profile [--quick] runs bench/profile_echoplex.py (perf, strace, callgrind, "
               "massif), which writes docs/bench/profile.md (--quick: build-bench/bench-quick/profile.md); "
               "bench/run.sh --profile --help for its options.")
    p.add_argument("--build", default=str(ROOT / "build-bench"), help="build directory (default build-bench)")
    p.add_argument("--out", help="report directory (default docs/bench; build-bench/bench-quick with --quick)")
    p.add_argument("--results", help="results file, read to keep the experiments not run and rewritten (default "
                   "BUILD/results.json; BUILD/bench-quick/results.json with --quick)")
    p.add_argument("--runs", type=int, default=3, help="runs per point (default 3)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of load per point (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="one 0.5 s run per point, no waiting for a quiet machine, output in build-bench/bench-quick "
                   "(README.md and docs/ untouched): a smoke test")
    p.add_argument("--only", default=",".join(EXPERIMENTS),
                   help=f"experiments to run, comma-separated: {','.join(EXPERIMENTS)} (default all); the "
                   "others' results stay in the results file and the report as they were")
    p.add_argument("--fresh", action="store_true",
                   help="start a new results file instead of keeping the experiments this run does not measure")
    p.add_argument("--servers", default="", help="servers to include, comma-separated "
                   "(bare,epoll,io_uring,poll,select,asio,uvloop,asyncio,thread,socat; default all found)")
    p.add_argument("--sizes", default="64,1k,16k,1m",
                   help="message sizes for grid, peers and uring (default 64,1k,16k,1m)")
    p.add_argument("--quiet-load", type=float, default=0.7, help="wait until the 1-minute load average is below this")
    p.add_argument("--max-wait", type=float, default=1200, help="longest wait for a quiet machine, seconds (default 1200)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the report (and README.md's section) from the results file")
    p.add_argument("--no-readme", action="store_true",
                   help="leave README.md alone (by default a run into docs/bench with every server and size "
                   "rewrites its Benchmarks section)")
    args = p.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    unknown = [x for x in args.only if x not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment {unknown[0]!r} ({', '.join(EXPERIMENTS)})")
    if args.runs < 1 or args.duration <= 0:
        p.error("--runs and --duration must be positive")
    if args.quick:
        args.runs, args.duration, args.max_wait = 1, 0.5, 0
    build = Path(args.build).resolve()
    out = Path(args.out) if args.out else (build / "bench-quick" if args.quick else ROOT / "docs" / "bench")
    out.mkdir(parents=True, exist_ok=True)
    results_path = Path(args.results) if args.results else (
        build / "bench-quick" / "results.json" if args.quick else build / "results.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)

    import report  # bench/report.py: tables, plots, targets

    readme = None
    # Only a full-length run of every server and size into docs/bench refreshes README.md.
    if not args.no_readme and not args.quick and not args.servers and args.sizes == SIZES \
            and out.resolve() == (ROOT / "docs" / "bench").resolve():
        readme = ROOT / "README.md"
    if args.report_only:
        data = json.loads(results_path.read_text())
        report.write(out, data, readme)
        print(f"bench: wrote {out / 'report.md'} from {results_path}"
              + (f"; updated the Benchmarks section of {readme}" if readme else ""))
        return 0

    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(f"bench: SIG{signal.Signals(signo).name[3:]}"))
    lock = exclusive(3600)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers and testecho inherit it
    bench = Bench(args)
    if bench.machine.pinned:
        os.sched_setaffinity(0, {bench.machine.load_cpu})  # this script holds the idle connections
    if hard < MEMORY_IDLE + 2500:
        bench.skipped.append(f"10,000 idle connections: the descriptor limit is {hard}")

    waited = wait_for_quiet(args.quiet_load, args.max_wait)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    log(f"bench: {', '.join(args.only)}; servers: {', '.join(bench.specs)}; {args.runs} run(s) of {args.duration} s; "
        f"load average {load_start[0]:.2f}; scratch {bench.logdir}")
    experiments = {"grid": bench.exp_grid, "idle": bench.exp_idle, "peers": bench.exp_peers, "memory": bench.exp_memory,
                   "uring": bench.exp_uring, "instructions": bench.exp_instructions}
    loads, took = {}, {}
    for name in args.only:
        t1 = time.monotonic()
        experiments[name]()
        loads[name] = round(os.getloadavg()[0], 2)
        took[name] = round(time.monotonic() - t1)
        log(f"bench: {name} took {took[name] / 60:.1f} min")
    elapsed = time.monotonic() - t0

    data = {
        "machine": machine_description(bench.machine),
        "command": os.environ.get("BENCH_COMMAND") or "bench/bench.py " + " ".join(sys.argv[1:]),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(elapsed),
        "waited_s": waited,
        "load_start": list(load_start),
        "load_end": list(os.getloadavg()),
        "load_after": loads,  # 1-minute load average after each experiment
        "elapsed_by_experiment_s": took,
        "runs": args.runs,
        "duration_s": args.duration,
        "quick": args.quick,
        "experiments": args.only,
        "servers": {k: {"label": s.label, "command": s.command, "model": s.model} for k, s in bench.specs.items()},
        "uvloop_examples": str(bench.uvloop_dir) if bench.uvloop_dir else None,
        "skipped": bench.skip_notes(),
        "results": bench.results,
        "syscall_counter": bench.counter.describe() if "uring" in args.only else None,
    }
    data["measured_by"] = [run_meta(data)]
    if results_path.exists() and not args.fresh:
        try:
            data = merge_previous(data, json.loads(results_path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            log(f"bench: {results_path} is not a results file this script can keep ({e}): starting afresh")
    results_path.write_text(json.dumps(data, indent=1) + "\n")
    report.write(out, data, readme)
    lock.close()
    log(f"bench: done in {elapsed / 60:.1f} min")
    print(f"bench: wrote {out / 'report.md'} and its plots, results in {results_path}"
          + (f"; updated the Benchmarks section of {readme}" if readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
