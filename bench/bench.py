#!/usr/bin/env python3
"""echoplex's benchmark: bounded loopback experiments, a Markdown report and SVG plots.

bench/run.sh installs what is missing, builds, then runs this. Each figure is the server's CPU time
(utime+stime, plus reaped children's for fork-per-connection, from /proc/PID/stat) spent during the
measured load, divided by the messages the load tool counted as echoed. The server runs pinned to
CPU 0, the load (and this script) to CPU 1 when the machine has two CPUs. Every point is repeated
--runs times in rounds: a round runs every server of a point back to back (in rotated order), so a
ratio is always taken between measurements made seconds apart; tables give the median of those
per-round ratios with their min-max.

Experiments (--only picks some): grid (echoplex's three backends and the bare epoll loop, sizes x
connections x lockstep/pipelined), idle (cost per message against idle connections), peers (other
servers, driven by testecho and by uvloop's echoclient.py), memory (RSS per idle connection).
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import gzip
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from report import KIB, MIB, human_size  # bench/report.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
FD_SETSIZE = 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readers


def cpu_seconds(pid: int) -> float:
    """utime+stime+cutime+cstime of pid: its threads, and children it has reaped (socat's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (proc(5))
    except OSError:
        pass


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = children_map()
    found, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_kib(pid: int, key: str = "VmRSS") -> int:
    total = 0
    for p in [pid] + descendants(pid):
        try:
            total += status_kib(p, key)
        except OSError:
            pass
    return total


def tree_pss_kib(pid: int) -> int:
    total = 0
    for p in [pid] + descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class ServerSpec:
    key: str
    label: str
    argv: Callable[[int, int], list[str]]  # (port, idle connections expected) -> command
    announces: bool = True  # prints "listening on 127.0.0.1:PORT"
    model: str = "loop"  # loop | threads | fork: how connections are counted and memory is read
    fd_limit: int | None = None
    command: str = ""  # as shown in the report


class Machine:
    """CPU placement: server on CPU 0, load on CPU 1, when there are two CPUs to use."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu = cpus[0]
        self.load_cpu = cpus[1] if len(cpus) >= 2 else cpus[0]

    def server(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.server_cpu)] + argv if self.pinned else argv

    def load(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.load_cpu)] + argv if self.pinned else argv


class RunningServer:
    def __init__(self, spec: ServerSpec, machine: Machine, logdir: Path, idle: int = 0) -> None:
        self.spec = spec
        port = 0 if spec.announces else free_port()
        argv = machine.server(spec.argv(port, idle))
        self.errlog = logdir / f"{spec.key}.stderr"
        with open(self.errlog, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        try:
            self.port = self._wait_ready(port)
        except Exception:
            self.stop()
            raise
        time.sleep(0.1)
        self.base = self._raw_count()

    def _wait_ready(self, port: int) -> int:
        deadline = time.monotonic() + 15
        if self.spec.announces:
            assert self.proc.stdout is not None
            sel = selectors.DefaultSelector()
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            buf = b""
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    buf += chunk
                    m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", buf)
                    if m:
                        return int(m.group(1))
            raise RuntimeError(f"{self.spec.key} did not announce its port: {buf[-200:]!r}")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.spec.key} is not accepting on port {port}")

    def _raw_count(self) -> int:
        if self.spec.model == "threads":
            return len(os.listdir(f"/proc/{self.pid}/task"))
        if self.spec.model == "fork":
            return len(children_map().get(self.pid, []))
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def connections(self) -> int:
        """Connections the server holds now, counted from outside (descriptors, threads or children)."""
        return self._raw_count() - self.base

    def wait_children_gone(self, timeout: float = 10) -> None:
        if self.spec.model != "fork":
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and children_map().get(self.pid):
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        return tree_kib(self.pid) if self.spec.model == "fork" else status_kib(self.pid, "VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # socat's children, and anything that ignored TERM
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


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


class IdleConnections:
    """Silent connections held by this script, opened in batches the server has accepted before
    the next batch, so a short listen backlog (asyncio's 100) never drops a SYN."""

    def __init__(self, server: RunningServer, count: int, batch: int = 64) -> None:
        self.socks: list[socket.socket] = []
        try:
            while len(self.socks) < count:
                self._open_batch(server, min(batch, count - len(self.socks)))
        except Exception:
            self.close()
            raise

    def _open_batch(self, server: RunningServer, n: int) -> None:
        fresh = []
        sel = selectors.DefaultSelector()
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            fresh.append(s)
            sel.register(s, selectors.EVENT_WRITE)
        pending, deadline = len(fresh), time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                sel.unregister(key.fileobj)
                pending -= 1
                err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
                if err:
                    raise RuntimeError(f"idle connect failed: {os.strerror(err)}")
        sel.close()
        self.socks += fresh
        if pending:
            raise RuntimeError("idle connects timed out")
        while server.connections() < len(self.socks) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        if server.connections() < len(self.socks) - 1:
            raise RuntimeError(f"server holds {server.connections()} of {len(self.socks)} idle connections")

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []


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
        self.echoclient_num: dict[tuple[str, int], int] = {}
        self.uvloop_dir, self.uvloop_python = find_uvloop_examples(self.logdir)
        self.specs = self._server_specs()

    # -- servers --------------------------------------------------------------------------------

    def _server_specs(self) -> dict[str, ServerSpec]:
        b = self.build
        specs: dict[str, ServerSpec] = {}
        echoplex = str(b / "src" / "echoplex")

        def echoplex_argv(backend: str) -> Callable[[int, int], list[str]]:
            return lambda port, idle: [echoplex, f"--backend={backend}", "-p", str(port), "-q",
                                       f"--max-connections={max(10000, idle + 2000)}"]

        bare = b / "bench" / "bare_epoll_echo"
        if bare.exists():
            specs["bare"] = ServerSpec("bare", "bare epoll loop", lambda port, idle: [str(bare), "--port", str(port)],
                                       command="bench/bare_epoll_echo")
        for backend in ("epoll", "poll", "select"):
            specs[backend] = ServerSpec(backend, f"echoplex {backend}", echoplex_argv(backend),
                                        fd_limit=FD_SETSIZE if backend == "select" else None,
                                        command=f"echoplex --backend={backend} -q")
        asio = b / "bench" / "asio_echo"
        if asio.exists():
            specs["asio"] = ServerSpec("asio", "Boost.Asio", lambda port, idle: [str(asio), "--port", str(port)],
                                       command="bench/asio_echo")
        else:
            self.skipped.append("Boost.Asio server: Boost headers not found at configure time (libboost-dev)")
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
            self.skipped.append("uvloop and asyncio servers, and echoclient.py: python3-uvloop's "
                                "examples/bench not found")
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
            self.skipped.append("socat: not installed")
        wanted = self.args.servers
        return {k: v for k, v in specs.items() if not wanted or k in wanted}

    def have(self, *keys: str) -> list[str]:
        return [k for k in keys if k in self.specs]

    # -- loads ----------------------------------------------------------------------------------

    def run_testecho(self, port: int, load: Load) -> dict:
        d = self.args.duration
        timeout = 20
        argv = self.machine.load([str(self.testecho), "-p", str(port), "-c", str(load.connections),
                                  "-s", str(load.size), "-P", str(load.pipeline), "-d", f"{d}s",
                                  "--timeout", f"{timeout}s", "--json", "-q"])
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=d + 4 * timeout + 30)
        try:
            report = json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"testecho exit {out.returncode}: {out.stderr.decode()[-300:]}") from e
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

    def measure(self, exp: str, key: str, load: Load, round_no: int, num: int | None = None) -> dict:
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
        except Exception as e:  # noqa: BLE001 - one failed point must not end the benchmark
            rec["error"] = str(e)
        finally:
            if idle:
                idle.close()
            if server:
                server.stop()
        status = f"{rec.get('cpu_us_per_msg', 0):8.2f} us/msg" if rec["ok"] else f"FAILED: {rec.get('error')}"
        log(f"{exp:6} r{round_no} {key:8} {load.client:10} {human_size(load.size):>7} c={load.connections:<4} "
            f"P={load.pipeline:<2} idle={load.idle:<5} {status}")
        self.results.append(rec)
        return rec

    # -- experiments ----------------------------------------------------------------------------

    def rounds(self) -> range:
        return range(1, self.args.runs + 1)

    def rotated(self, keys: list[str], round_no: int) -> list[str]:
        k = round_no % len(keys) if keys else 0
        return keys[k:] + keys[:k]

    def exp_grid(self) -> None:
        keys = self.have("bare", "epoll", "poll", "select")
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
        keys = self.have("bare", "epoll", "poll", "select")
        for r in self.rounds():
            for idle in IDLE_COUNTS:
                for key in self.rotated(keys, r):
                    limit = self.specs[key].fd_limit
                    if limit and idle + IDLE_ACTIVE + 16 > limit:
                        continue
                    self.measure("idle", key, Load("testecho", 64, IDLE_ACTIVE, 1, idle), r)

    def exp_peers(self) -> None:
        keys = self.have("bare", "epoll", "asio", "uvloop", "asyncio", "thread", "socat")
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
        keys = self.have("epoll", "poll", "select", "bare", "asio", "uvloop", "asyncio", "thread", "socat")
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


def exclusive(max_wait: float):
    """One benchmark per machine at a time: two would share the two CPUs and spoil each other's
    figures. Waits (up to max_wait seconds) for a running one to finish; the lock lasts until exit."""
    lock = open(os.path.join(tempfile.gettempdir(), "echoplex-bench.lock"), "a+")
    deadline = time.monotonic() + max_wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                sys.exit("bench: another benchmark is still running on this machine; try again later")
            lock.seek(0)
            log(f"another benchmark is running (pid {lock.read().strip() or '?'}): waiting for it")
            time.sleep(30)
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


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
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
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


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": KIB, "m": MIB}.get(t[-1:], 1)
    return int(t[:-1] if mult != 1 else t) * mult


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=str(ROOT / "build-bench"), help="build directory (default build-bench)")
    p.add_argument("--out", help="report directory (default docs/bench; build-bench/bench-quick with --quick)")
    p.add_argument("--runs", type=int, default=3, help="runs per point (default 3)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of load per point (default 2)")
    p.add_argument("--quick", action="store_true", help="one 0.5 s run per point, no waiting: a smoke test")
    p.add_argument("--only", default="grid,idle,peers,memory",
                   help="experiments to run, comma-separated: grid,idle,peers,memory (default all)")
    p.add_argument("--servers", default="", help="servers to include, comma-separated "
                   "(bare,epoll,poll,select,asio,uvloop,asyncio,thread,socat; default all found)")
    p.add_argument("--sizes", default="64,1k,16k,1m", help="message sizes for grid and peers (default 64,1k,16k,1m)")
    p.add_argument("--quiet-load", type=float, default=0.7, help="wait until the 1-minute load average is below this")
    p.add_argument("--max-wait", type=float, default=1200, help="longest wait for a quiet machine, seconds (default 1200)")
    p.add_argument("--no-profile", action="store_true", help="skip profiling when a target is missed")
    p.add_argument("--report-only", metavar="RESULTS_JSON", help="rewrite the report from a results.json")
    p.add_argument("--no-readme", action="store_true",
                   help="leave README.md alone (by default a complete run into docs/bench rewrites its Benchmarks section)")
    args = p.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    unknown = [x for x in args.only if x not in ("grid", "idle", "peers", "memory")]
    if unknown:
        p.error(f"--only: unknown experiment {unknown[0]!r} (grid, idle, peers, memory)")
    if args.runs < 1 or args.duration <= 0:
        p.error("--runs and --duration must be positive")
    complete = set(args.only) == {"grid", "idle", "peers", "memory"} and not args.servers \
        and args.sizes == [64, KIB, 16 * KIB, MIB]
    if args.quick:
        args.runs, args.duration, args.max_wait = 1, 0.5, 0
    out = Path(args.out) if args.out else (ROOT / "build-bench" / "bench-quick" if args.quick else ROOT / "docs" / "bench")
    out.mkdir(parents=True, exist_ok=True)

    import report  # bench/report.py: tables, plots, targets

    readme = None
    # Only a complete, full-length run into docs/bench refreshes README.md.
    if not args.no_readme and not args.quick and complete and out.resolve() == (ROOT / "docs" / "bench").resolve():
        readme = ROOT / "README.md"
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        report.write(out, data, readme)
        print(f"bench: wrote {out / 'report.md'}")
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
    experiments = {"grid": bench.exp_grid, "idle": bench.exp_idle, "peers": bench.exp_peers, "memory": bench.exp_memory}
    loads = {}
    for name in args.only:
        experiments[name]()
        loads[name] = round(os.getloadavg()[0], 2)
    elapsed = time.monotonic() - t0

    profile = None
    data = {
        "machine": machine_description(bench.machine),
        "command": os.environ.get("BENCH_COMMAND") or "bench/bench.py " + " ".join(sys.argv[1:]),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(elapsed),
        "waited_s": waited,
        "load_start": list(load_start),
        "load_end": list(os.getloadavg()),
        "load_after": loads,  # 1-minute load average after each experiment
        "runs": args.runs,
        "duration_s": args.duration,
        "quick": args.quick,
        "experiments": args.only,
        "servers": {k: {"label": s.label, "command": s.command, "model": s.model} for k, s in bench.specs.items()},
        "uvloop_examples": str(bench.uvloop_dir) if bench.uvloop_dir else None,
        "skipped": bench.skipped,
        "results": bench.results,
        "profile": profile,
    }
    if not args.no_profile:
        import profile_echoplex  # bench/profile_echoplex.py

        missed = report.missed_targets(data)
        if missed:
            log(f"targets missed ({', '.join(missed)}): profiling")
            data["profile"] = profile_echoplex.run(bench, missed)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    report.write(out, data, readme)
    lock.close()
    log(f"bench: done in {elapsed / 60:.1f} min")
    print(f"bench: wrote {out / 'report.md'} (plots and results.json beside it)"
          + (f"; updated the Benchmarks section of {readme}" if readme else ""))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
