#!/usr/bin/env python3
"""echoplex's benchmark: bounded loopback experiments, a Markdown report and SVG plots.

bench/run.sh installs what is missing, builds, then runs this. Each figure is the server's CPU time
(utime+stime, plus reaped children's for fork-per-connection, from /proc/PID/stat) spent during the
measured load, divided by the messages the load tool counted as echoed. The server runs pinned to
CPU 0, the load (and this script) to CPU 1 when the machine has two CPUs. Every point is repeated
--runs times in rounds: a round runs every server of a point back to back (in rotated order), so a
ratio is always taken between measurements made seconds apart; tables give the median of those
per-round ratios with their min-max.

Experiments (--only picks some): grid (echoplex's backends and the bare epoll loop, sizes x
connections x lockstep/pipelined), idle (cost per message against idle connections), peers (other
servers, driven by testecho and by uvloop's echoclient.py), memory (RSS per idle connection), uring
(echoplex io_uring beside echoplex epoll and the bare loop, lockstep, with the system calls per
echoed message of each, counted on the server alone: see SyscallCounter).

results.json keeps every experiment: a run of some (--only) replaces those experiments' results and
keeps the others', each experiment with the run that measured it (the report says which). Points are
never mixed across runs: a ratio always pairs measurements of one round.
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
import select
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
EXPERIMENTS = ["grid", "idle", "peers", "memory", "uring"]
# The target each report.py target id belongs to, so that a run profiles only what it measured.
TARGET_EXPERIMENT = {"bare": "grid", "peers": "peers", "idle": "idle", "memory": "memory",
                     "uring_syscalls": "uring", "uring_cpu": "uring", "uring_small": "uring"}
# echoplex's backends, in the order the report shows them.
BACKENDS = ["epoll", "io_uring", "poll", "select"]


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


# The system calls a breakdown names (perf: one tracepoint each; perf takes about 35 ms to close
# each, ten seconds for all of syscalls:*): the echo path's, and those made once per connection.
ECHO_SYSCALLS = ["io_uring_enter", "epoll_wait", "epoll_pwait", "epoll_ctl", "read", "readv", "recvfrom",
                 "recvmsg", "write", "writev", "sendto", "sendmsg"]
CONNECTION_SYSCALLS = ["accept", "accept4", "setsockopt", "getsockopt", "getpeername", "getsockname", "shutdown",
                       "close"]


def syscall_numbers(names: list[str]) -> dict[str, int]:
    """This machine's numbers for names, from the kernel headers (linux-libc-dev); {} when absent."""
    arch = {"x86_64": "64", "i686": "32", "i386": "32"}.get(platform.machine())
    if not arch:
        return {}
    for header in (f"/usr/include/{platform.machine()}-linux-gnu/asm/unistd_{arch}.h", f"/usr/include/asm/unistd_{arch}.h"):
        try:
            text = Path(header).read_text()
        except OSError:
            continue
        found = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^#define __NR_(\w+) (\d+)$", text, re.M))
        return {n: found[n] for n in names if n in found}
    return {}


class SyscallCounter:
    """System calls one server process makes over a window, counted from outside the process.

    perf when it works here: `perf stat -e raw_syscalls:sys_enter -p PID` counts in the kernel at
    each system call's entry, so the server runs at close to full speed, and a second copy of the
    event filtered to the calls made once per connection (accept, setsockopt, close...) splits
    those from the echo path's. Otherwise strace -c -f attached to the running server, as
    bench/compare.py does: strace stops the server at every call, which slows it and can change
    how many events one wait returns, so its counts are a fallback only.

    Even perf's counting makes every traced system call dearer, and the servers compared make 10x
    different numbers of them: the CPU figures are therefore never taken in a counted window."""

    PERF_EVENT = "raw_syscalls:sys_enter"

    def __init__(self) -> None:
        self.tool: str | None = None
        if shutil.which("perf") and self._perf_works():
            self.tool = "perf"
        elif shutil.which("strace"):
            self.tool = "strace"
        numbers = syscall_numbers(CONNECTION_SYSCALLS)
        self.connection_filter = " || ".join(f"id == {n}" for n in numbers.values()) if numbers else None

    def _perf_works(self) -> bool:
        try:
            out = subprocess.run(["perf", "stat", "-x,", "-e", self.PERF_EVENT, "--", "true"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        last = out.stderr.strip().splitlines()[-1:] or [""]
        return out.returncode == 0 and last[0].split(",")[0].isdigit()

    def describe(self) -> str:
        if self.tool == "perf":
            return (f"`perf stat -e {self.PERF_EVENT} -p PID`, its events enabled over perf's control pipe just "
                    "around the load" + (", with a second copy filtered (`--filter 'id == ...'`) to the calls made "
                                         "once per connection" if self.connection_filter else ""))
        if self.tool == "strace":
            return ("`strace -c -f -p PID` attached during the load (perf's syscall tracepoint does not work here; "
                    "strace slows the server, so it may batch more per wait than it would)")
        return "not counted: neither perf nor strace works here"

    def window(self, pid: int, breakdown: bool = False,
               extra: dict[str, tuple[str, str | None]] | None = None) -> "SyscallWindow":
        """A context manager that counts pid's system calls while its body runs: total, and those
        made once per connection (connection, None when unknown); with breakdown, also by name
        (by_call; perf: one syscalls:sys_enter_NAME tracepoint each; strace: always); with perf,
        also extra's events, each label: (event, filter or None), counted into extra[label]."""
        if self.tool is None:
            raise RuntimeError("no system call counter (perf or strace) works here")
        return SyscallWindow(self, pid, breakdown, extra or {})


class PerfSession:
    """perf stat or perf record attached to a process, its events off (-D -1) until enable(): the
    window opens and closes over perf's control pipe (--control), and perf's acknowledgement says
    the events are on, so a window misses nothing and counts none of perf's own start-up."""

    def __init__(self, argv: list[str]) -> None:
        ctl_r, self.ctl_w = os.pipe()
        self.ack_r, ack_w = os.pipe()
        self.proc = subprocess.Popen(argv[:2] + ["-D", "-1", "--control", f"fd:{ctl_r},{ack_w}"] + argv[2:],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=(ctl_r, ack_w))
        os.close(ctl_r)
        os.close(ack_w)

    def command(self, word: str) -> None:
        """Sends a control command (enable, disable) and waits up to 10 s for its acknowledgement."""
        os.write(self.ctl_w, word.encode() + b"\n")
        ready, _, _ = select.select([self.ack_r], [], [], 10)
        if not ready or not os.read(self.ack_r, 64).startswith(b"ack"):
            raise RuntimeError(f"perf did not acknowledge '{word}'")

    def finish(self) -> None:
        """Turns the events off, then stops perf, which writes its output (-o) as it goes."""
        try:
            self.command("disable")
        finally:
            # SIGINT before the control pipe closes: perf record ends without writing its data
            # when the pipe's end reaches it first.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            os.close(self.ctl_w)
            os.close(self.ack_r)


class SyscallWindow:
    def __init__(self, counter: SyscallCounter, pid: int, breakdown: bool,
                 extra: dict[str, tuple[str, str | None]]) -> None:
        self.tool, self.pid, self.breakdown = counter.tool, pid, breakdown
        self.extra_events = extra
        self.extra: dict[str, int] = {}
        # perf's output has a line per event, in the order they were given: what each one is.
        self.lines: list[tuple[str, str]] = []
        self.connection_filter = counter.connection_filter
        self.total: int | None = None
        self.connection: int | None = None
        self.by_call: dict[str, int] = {}
        fd, name = tempfile.mkstemp(prefix="echoplex-syscalls-")
        os.close(fd)
        self.out = Path(name)

    def __enter__(self) -> "SyscallWindow":
        if self.tool == "perf":
            events = ["-e", SyscallCounter.PERF_EVENT]
            self.lines.append(("total", ""))
            if self.connection_filter:
                events += ["-e", SyscallCounter.PERF_EVENT, "--filter", self.connection_filter]
                self.lines.append(("connection", ""))
            if self.breakdown:
                names = ECHO_SYSCALLS + CONNECTION_SYSCALLS
                events += ["-e", ",".join(f"syscalls:sys_enter_{n}" for n in names)]
                self.lines += [("call", n) for n in names]
            for label, (event, expr) in self.extra_events.items():
                events += ["-e", event] + (["--filter", expr] if expr else [])
                self.lines.append(("extra", label))
            self.perf = PerfSession(["perf", "stat", "-x,", "-o", str(self.out), "-p", str(self.pid)] + events)
            try:
                self.perf.command("enable")
            except Exception:
                self.perf.finish()
                raise
        else:
            self.proc = subprocess.Popen(["strace", "-c", "-f", "-o", str(self.out), "-p", str(self.pid)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
            assert self.proc.stderr is not None
            for line in self.proc.stderr:  # "strace: Process N attached": from here on it counts
                if "attached" in line:
                    break
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.tool == "perf":
                self.perf.finish()
            else:
                self.proc.send_signal(signal.SIGINT)  # strace writes its table and detaches
                self.proc.communicate(timeout=30)
            self._parse(self.out.read_text())
        finally:
            self.out.unlink(missing_ok=True)

    def _parse(self, text: str) -> None:
        if self.tool == "perf":
            counts = []
            for line in text.splitlines():
                fields = line.split(",")  # count,unit,event,run time,% running,...
                if len(fields) >= 3 and not line.startswith("#"):
                    counts.append(int(fields[0]) if fields[0].isdigit() else 0)  # "<not counted>": none
            if len(counts) != len(self.lines):
                raise RuntimeError(f"perf stat printed {len(counts)} counts for {len(self.lines)} events")
            for (kind, name), count in zip(self.lines, counts):
                if kind == "total":
                    self.total = count
                elif kind == "connection":
                    self.connection = count
                elif kind == "call" and count:
                    self.by_call[name] = count
                elif kind == "extra":
                    self.extra[name] = count
            return
        for line in text.splitlines():
            parts = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(parts) >= 5 and parts[-1] not in ("syscall", "total") and parts[3].isdigit():
                self.by_call[parts[-1]] = int(parts[3])
        self.total = sum(self.by_call.values())
        self.connection = sum(n for name, n in self.by_call.items() if name in CONNECTION_SYSCALLS)


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

        def echoplex_argv(backend: str) -> Callable[[int, int], list[str]]:
            return lambda port, idle: [echoplex, f"--backend={backend}", "-p", str(port), "-q",
                                       f"--max-connections={max(10000, idle + 2000)}"]

        bare = b / "bench" / "bare_epoll_echo"
        if bare.exists():
            specs["bare"] = ServerSpec("bare", "bare epoll loop", lambda port, idle: [str(bare), "--port", str(port)],
                                       command="bench/bare_epoll_echo")
        compiled = echoplex_backends(echoplex)
        for backend in BACKENDS:
            if backend not in compiled:
                why = "; io_uring needs liburing-dev at configure time" if backend == "io_uring" else ""
                self.server_notes.append(((backend,), f"echoplex {backend}: `echoplex --version` does not list it "
                                                      f"(compiled out{why})"))
                continue
            specs[backend] = ServerSpec(backend, f"echoplex {backend}", echoplex_argv(backend),
                                        fd_limit=FD_SETSIZE if backend == "select" else None,
                                        command=f"echoplex --backend={backend} -q")
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
        followed by a counted one (measure's count_syscalls) on the same server."""
        keys = self.have("io_uring", "epoll", "bare")
        if "io_uring" not in keys:
            self.skipped.append("the uring experiment: no echoplex io_uring server to measure")
            return
        if self.counter.tool is None:
            self.skipped.append("system calls per message: neither perf nor strace works here")
        points = [Load("testecho", size, conns) for size in self.args.sizes for conns in CONNECTIONS
                  if (size, conns) not in SKIP_GRID]
        for r in self.rounds():
            for load in points:
                for key in self.rotated(keys, r):
                    self.measure("uring", key, load, r, count_syscalls=self.counter.tool is not None)

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


def echoplex_backends(echoplex: str) -> list[str]:
    """The backends `echoplex --version` lists: "echoplex 0.1.0 [backends: epoll, poll, ...]"."""
    try:
        out = subprocess.run([echoplex, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    m = re.search(r"backends:\s*([^\]]*)\]", out)
    return [b.strip() for b in m.group(1).split(",")] if m else []


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


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": KIB, "m": MIB}.get(t[-1:], 1)
    return int(t[:-1] if mult != 1 else t) * mult


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
        data["uring_profile"] = previous.get("uring_profile")
        data["syscall_counter"] = previous.get("syscall_counter")
    if not data.get("profile") and previous.get("profile"):
        # The missed-target profile of the earlier run, minus blocks about experiments re-run now.
        blocks = [b for b in previous["profile"].get("blocks", [])
                  if not any(TARGET_EXPERIMENT.get(t) in ran for t in b.get("targets", []))]
        if blocks:
            data["profile"] = {**previous["profile"], "blocks": blocks}
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=str(ROOT / "build-bench"), help="build directory (default build-bench)")
    p.add_argument("--out", help="report directory (default docs/bench; build-bench/bench-quick with --quick)")
    p.add_argument("--runs", type=int, default=3, help="runs per point (default 3)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of load per point (default 2)")
    p.add_argument("--quick", action="store_true", help="one 0.5 s run per point, no waiting: a smoke test")
    p.add_argument("--only", default=",".join(EXPERIMENTS),
                   help=f"experiments to run, comma-separated: {','.join(EXPERIMENTS)} (default all); the "
                   "others' results stay in results.json and the report as they were")
    p.add_argument("--fresh", action="store_true",
                   help="start a new results.json instead of keeping the experiments this run does not measure")
    p.add_argument("--servers", default="", help="servers to include, comma-separated "
                   "(bare,epoll,io_uring,poll,select,asio,uvloop,asyncio,thread,socat; default all found)")
    p.add_argument("--sizes", default="64,1k,16k,1m",
                   help="message sizes for grid, peers and uring (default 64,1k,16k,1m)")
    p.add_argument("--quiet-load", type=float, default=0.7, help="wait until the 1-minute load average is below this")
    p.add_argument("--max-wait", type=float, default=1200, help="longest wait for a quiet machine, seconds (default 1200)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the profiles (of missed targets, and the uring experiment's of two points)")
    p.add_argument("--report-only", metavar="RESULTS_JSON", help="rewrite the report from a results.json")
    p.add_argument("--no-readme", action="store_true",
                   help="leave README.md alone (by default a complete run into docs/bench rewrites its Benchmarks section)")
    args = p.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    unknown = [x for x in args.only if x not in EXPERIMENTS]
    if unknown:
        p.error(f"--only: unknown experiment {unknown[0]!r} ({', '.join(EXPERIMENTS)})")
    if args.runs < 1 or args.duration <= 0:
        p.error("--runs and --duration must be positive")
    complete = set(args.only) == set(EXPERIMENTS) and not args.servers \
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
    experiments = {"grid": bench.exp_grid, "idle": bench.exp_idle, "peers": bench.exp_peers, "memory": bench.exp_memory,
                   "uring": bench.exp_uring}
    loads, took = {}, {}
    for name in args.only:
        t1 = time.monotonic()
        experiments[name]()
        loads[name] = round(os.getloadavg()[0], 2)
        took[name] = round(time.monotonic() - t1)
        log(f"bench: {name} took {took[name] / 60:.1f} min")
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
        "elapsed_by_experiment_s": took,
        "runs": args.runs,
        "duration_s": args.duration,
        "quick": args.quick,
        "experiments": args.only,
        "servers": {k: {"label": s.label, "command": s.command, "model": s.model} for k, s in bench.specs.items()},
        "uvloop_examples": str(bench.uvloop_dir) if bench.uvloop_dir else None,
        "skipped": bench.skip_notes(),
        "results": bench.results,
        "profile": profile,
        "syscall_counter": bench.counter.describe() if "uring" in args.only else None,
        "uring_profile": None,
    }
    data["measured_by"] = [run_meta(data)]
    previous = out / "results.json"
    if previous.exists() and not args.fresh:
        try:
            data = merge_previous(data, json.loads(previous.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            log(f"bench: {previous} is not a results.json this script can keep ({e}): starting afresh")
    if not args.no_profile:
        import profile_echoplex  # bench/profile_echoplex.py

        # Only the targets of experiments measured now: the others keep the profile of their run.
        missed = [t for t in report.missed_targets(data)
                  if TARGET_EXPERIMENT.get(t) in args.only and TARGET_EXPERIMENT.get(t) != "uring"]
        if missed:
            log(f"targets missed ({', '.join(missed)}): profiling")
            fresh = profile_echoplex.run(bench, missed)
            old = data.get("profile") or {}
            # Blocks about the targets of experiments not measured now stay, from their run.
            kept = [b for b in old.get("blocks", [])
                    if not any(TARGET_EXPERIMENT.get(t) in args.only for t in b.get("targets", []))]
            data["profile"] = {"intro": fresh["intro"], "blocks": fresh["blocks"] + kept}
        if "uring" in args.only and "io_uring" in bench.specs:
            log("uring: profiling io_uring, epoll and the bare loop at " + ", ".join(
                f"{report.human_size(s)} x {c}" for s, c in profile_echoplex.URING_POINTS))
            data["uring_profile"] = profile_echoplex.uring(bench)
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
