"""Process helpers shared by bench.py, profile_echoplex.py and compare.py; imports none of them.

Servers on a free loopback port (pinned when the machine has two CPUs), /proc readers, idle
connections, testecho runs, perf's control-pipe session, system call counting and callgrind's
instruction totals."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KIB = 1024
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
FD_SETSIZE = 1024


def human_size(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} B"


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": KIB, "m": MIB}.get(t[-1:], 1)
    return int(t[:-1] if mult != 1 else t) * mult


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def exclusive(max_wait: float):
    """One benchmark or profile per machine at a time: two would share the two CPUs and spoil each other's
    figures. Waits (up to max_wait seconds) for a running one to finish; the lock lasts until exit."""
    lock = open(os.path.join(tempfile.gettempdir(), "echoplex-bench.lock"), "a+")
    deadline = time.monotonic() + max_wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                sys.exit("another benchmark is still running on this machine; try again later")
            lock.seek(0)
            log(f"another benchmark is running (pid {lock.read().strip() or '?'}): waiting for it")
            time.sleep(30)
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


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


def echoplex_backends(echoplex: str) -> list[str]:
    """The backends `echoplex --version` lists: "echoplex 0.1.0 [backends: epoll, poll, ...]"."""
    try:
        out = subprocess.run([echoplex, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    m = re.search(r"backends:\s*([^\]]*)\]", out)
    return [b.strip() for b in m.group(1).split(",")] if m else []


def echoplex_spec(echoplex: str, backend: str) -> ServerSpec:
    return ServerSpec(backend, f"echoplex {backend}",
                      lambda port, idle: [echoplex, f"--backend={backend}", "-p", str(port), "-q",
                                          f"--max-connections={max(10000, idle + 2000)}"],
                      fd_limit=FD_SETSIZE if backend == "select" else None,
                      command=f"echoplex --backend={backend} -q")


def bare_spec(build: Path) -> ServerSpec | None:
    bare = build / "bench" / "bare_epoll_echo"
    if not bare.exists():
        return None
    return ServerSpec("bare", "bare epoll loop", lambda port, idle: [str(bare), "--port", str(port)],
                      command="bench/bare_epoll_echo")


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
    """spec's server, started in its own session on a free port (prefix: a tool to run it under,
    such as valgrind, which keeps the pid). stop() ends it and anything it forked."""

    def __init__(self, spec: ServerSpec, machine: Machine, logdir: Path, idle: int = 0,
                 prefix: list[str] | None = None, ready_timeout: float = 15) -> None:
        self.spec = spec
        port = 0 if spec.announces else free_port()
        argv = machine.server((prefix or []) + spec.argv(port, idle))
        self.errlog = logdir / f"{spec.key}.stderr"
        with open(self.errlog, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
        self.pid = self.proc.pid  # taskset and valgrind exec the server: same pid
        try:
            self.port = self._wait_ready(port, ready_timeout)
        except Exception:
            self.stop()
            raise
        time.sleep(0.1)
        self.base = self._raw_count()

    def _wait_ready(self, port: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
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

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # socat's children, and anything that ignored TERM
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class IdleConnections:
    """Silent connections held by this process, opened in batches the server has accepted before
    the next batch, so a short listen backlog (asyncio's 100) never drops a SYN."""

    def __init__(self, server: RunningServer, count: int, batch: int = 64, timeout: float = 20) -> None:
        self.socks: list[socket.socket] = []
        self.timeout = timeout
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
        pending, deadline = len(fresh), time.monotonic() + self.timeout
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


def testecho(binary: Path, machine: Machine, port: int, args: list[str], timeout: float = 600) -> dict:
    """One testecho run (--json) against 127.0.0.1:port; its parsed report."""
    argv = machine.load([str(binary), "-p", str(port), "--json", "-q"] + args)
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"testecho exit {out.returncode}: {out.stderr.decode()[-300:]}") from e


# ---------------------------------------------------------------------------------------------
# perf and system calls


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


class SyscallCounter:
    """System calls one server process makes over a window, counted from outside the process.

    perf when it works here: `perf stat -e raw_syscalls:sys_enter -p PID` counts in the kernel at
    each system call's entry, and a second copy of the event filtered to the calls made once per
    connection (accept, setsockopt, close...) splits those from the echo path's. Otherwise strace
    -c -f attached to the running server, which stops the server at every call (a fallback)."""

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
            return f"`perf stat -e {self.PERF_EVENT} -p PID`, enabled over perf's control pipe around the load"
        if self.tool == "strace":
            return "`strace -c -f -p PID` attached during the load"
        return "not counted (neither perf nor strace works here)"

    def window(self, pid: int, breakdown: bool = False,
               extra: dict[str, tuple[str, str | None]] | None = None) -> "SyscallWindow":
        """A context manager that counts pid's system calls while its body runs: total, and those
        made once per connection (connection, None when unknown); with breakdown, also by name
        (by_call); with perf, also extra's events, each label: (event, filter or None)."""
        if self.tool is None:
            raise RuntimeError("no system call counter (perf or strace) works here")
        return SyscallWindow(self, pid, breakdown, extra or {})


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


# ---------------------------------------------------------------------------------------------
# callgrind


def callgrind_total(path: Path) -> int:
    """The total instructions executed (Ir) of a callgrind output file: its `totals:` line, or
    its `summary:` line when there is no totals line."""
    found: dict[str, int] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"^(summary|totals):\s+(\d+)", line)
            if m:
                found[m.group(1)] = int(m.group(2))
    if not found:
        raise RuntimeError(f"{path}: no summary or totals line")
    return found.get("totals", found.get("summary", 0))


def callgrind_load(spec: ServerSpec, machine: Machine, logdir: Path, testecho_bin: Path, load: list[str],
                   out_file: Path) -> tuple[int, dict]:
    """spec's server under `valgrind --tool=callgrind` for one testecho load (load: its options),
    stopped by SIGTERM afterwards (valgrind writes the profile then); (total Ir, testecho's report)."""
    server = RunningServer(spec, machine, logdir, prefix=["valgrind", "--tool=callgrind", "--quiet",
                                                          f"--callgrind-out-file={out_file}"], ready_timeout=120)
    try:
        report = testecho(testecho_bin, machine, server.port, ["--timeout", "60s"] + load)
    finally:
        server.stop(timeout=120)
    if not report.get("verified"):
        raise RuntimeError(f"testecho under callgrind: {report.get('first_error') or 'not verified'}")
    return callgrind_total(out_file), report


def instructions_per_message(spec: ServerSpec, machine: Machine, logdir: Path, testecho_bin: Path, size: int,
                             conns: int, counts: tuple[int, int]) -> dict:
    """User-space instructions per echoed message of spec's server: two callgrind runs, lockstep
    (-P 1), with counts[0] and counts[1] messages in total (-n); (Ir(N2) - Ir(N1)) / (N2 - N1), so
    start-up, connection setup and teardown cancel out."""
    ir, messages = [], []
    with tempfile.TemporaryDirectory(prefix="echoplex-callgrind-") as tmp:
        for n in counts:
            total, report = callgrind_load(spec, machine, logdir, testecho_bin,
                                           ["-c", str(conns), "-s", str(size), "-P", "1", "-n", str(n)],
                                           Path(tmp) / f"{spec.key}-{n}.out")
            ir.append(total)
            messages.append(int(report["messages"]))
    if messages[1] <= messages[0]:
        raise RuntimeError(f"message counts {messages} do not grow")
    return {"ir": ir, "ir_messages": messages, "ir_per_msg": (ir[1] - ir[0]) / (messages[1] - messages[0])}
