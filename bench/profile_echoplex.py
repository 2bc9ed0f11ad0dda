"""Profiles echoplex where bench.py found a target missed, for the report's profile section.

- CPU targets: system calls per message (strace -c, echoplex beside the bare loop), where the CPU
  goes including the kernel (perf record -e cpu-clock, when perf works here), and user-space
  instructions per message by function (valgrind --tool=callgrind).
- Memory target: the heap at its peak with 10,000 idle connections, by allocation site
  (valgrind --tool=massif).
- uring (always, when that experiment runs): two points, echoplex io_uring beside echoplex epoll
  and the bare loop: which system calls remain (perf stat on a syscalls:sys_enter_NAME
  tracepoint per call, or strace -c), io_uring requests and TCP segments per message, and where
  the CPU goes, kernel included (perf record -g), as microseconds per message in the kernel's
  main paths.
Each tool that is missing or refuses to run is reported as such, never fatal."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def human_size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


class Server:
    """echoplex or the bare loop on an ephemeral port, optionally under a tool's command prefix."""

    def __init__(self, argv: list[str], timeout: float = 60) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"{argv[0]} did not announce a port")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def load(testecho: Path, machine, port: int, args: list[str]) -> dict:
    import json

    out = subprocess.run(machine.load([str(testecho), "-p", str(port), "--json", "-q", "--timeout", "60s"] + args),
                         capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)


def syscalls(bench, size: int, conns: int, requests: int) -> dict | None:
    """strace -c over a fixed load, per message, for echoplex, the bare loop and uvloop (a peer that
    reads 256 KiB at a time), each started the way bench.py starts it."""
    if not shutil.which("strace"):
        return None
    from bench import RunningServer

    keys = [k for k in ("epoll", "bare", "uvloop") if k in bench.specs]
    tables = {}
    for key in keys:
        server = RunningServer(bench.specs[key], bench.machine, bench.logdir)
        with tempfile.NamedTemporaryFile(suffix=".strace", delete=False) as f:
            out_path = f.name
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out_path, "-p", str(server.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            result = load(bench.testecho, bench.machine, server.port,
                          ["-c", str(conns), "-s", str(size), "-n", str(requests)])
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            server.stop()
        name = bench.specs[key].label
        calls = {}
        for line in Path(out_path).read_text().splitlines():
            parts = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(parts) >= 5 and parts[-1] not in ("syscall", "total") and parts[3].isdigit():
                calls[parts[-1]] = int(parts[3])
        Path(out_path).unlink()
        tables[name] = {k: v / max(result["messages"], 1) for k, v in calls.items()}
    if len(tables) < 2:
        return None
    names = sorted({k for t in tables.values() for k in t}, key=lambda k: -max(t.get(k, 0) for t in tables.values()))
    rows = [f"{'syscall':16}" + "".join(f"{n:>18}" for n in tables)]
    for k in names:
        if max(t.get(k, 0) for t in tables.values()) >= 0.005:
            rows.append(f"{k:16}" + "".join(f"{t.get(k, 0):18.3f}" for t in tables.values()))
    rows.append(f"{'total':16}" + "".join(f"{sum(t.values()):18.3f}" for t in tables.values()))
    e, b = tables[bench.specs["epoll"].label], tables[bench.specs["bare"].label]
    reads = ("read", "recvfrom", "recvmsg", "readv")
    writes = ("write", "sendto", "sendmsg", "writev")
    finding = (f"At {human_size(size)} echoplex makes {sum(e.values()):.2f} system calls per message, the bare loop "
               f"{sum(b.values()):.2f}: {sum(e.get(k, 0) for k in reads):.2f} reads and "
               f"{sum(e.get(k, 0) for k in writes):.2f} writes against {sum(b.get(k, 0) for k in reads):.2f} and "
               f"{sum(b.get(k, 0) for k in writes):.2f}")
    fewest = None
    for name, t in tables.items():
        if t is not e and t is not b:
            finding += f"; {name} {sum(t.values()):.2f} ({sum(t.get(k, 0) for k in reads):.2f} reads)"
            if sum(t.values()) < 0.8 * sum(e.values()):
                fewest = (name, sum(t.values()))
    e_reads, b_reads = sum(e.get(k, 0) for k in reads), sum(b.get(k, 0) for k in reads)
    if e_reads > 1.5 * b_reads:
        finding += (". echoplex reads less per call than the bare loop's 64 KiB; each system call, and each TCP "
                    "window update it causes, is kernel time")
    elif fewest and size >= MIB:
        finding += (f". echoplex now makes the bare loop's calls (64 KiB per read, its per-event budget); "
                    f"{fewest[0]} makes {sum(e.values()) / fewest[1]:.1f}× fewer by reading and writing up to "
                    "256 KiB per call, and at this size the calls, not the copies, are where the servers differ")
    return {"findings": [finding + "."],
            "title": f"System calls per message (strace -c, {human_size(size)}, {conns} lockstep connections, {requests:,} messages)",
            "text": "Counted over the whole load, connection setup included, divided by the messages echoed. "
                    "strace slows the server, so only the counts mean anything here.",
            "code": "\n".join(rows)}


def perf_profile(build: Path, machine, size: int, conns: int, pipeline: int, seconds: float) -> dict | None:
    if not shutil.which("perf"):
        return None
    probe = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], capture_output=True)
    if probe.returncode != 0:
        return {"title": "perf", "text": "perf record -e cpu-clock does not run here: " + probe.stderr.decode()[-200:]}
    server = Server(machine.server([str(build / "src" / "echoplex"), "-p", "0", "-q"]))
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/perf.data"
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-p", str(server.proc.pid), "-o", data,
                                "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load(build / "src" / "testecho", machine, server.port,
             ["-c", str(conns), "-s", str(size), "-P", str(pipeline), "-d", f"{seconds + 0.5}s"])
        rec.wait(timeout=60)
        server.stop()
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                              "--percent-limit", "1"], capture_output=True, text=True)
        dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso"],
                             capture_output=True, text=True)
    lines = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
    split = [l for l in dso.stdout.splitlines() if l.strip() and not l.startswith("#")]
    shares = {}
    for l in split:
        parts = l.split()
        if len(parts) >= 2 and parts[0].endswith("%"):
            shares[parts[1]] = float(parts[0].rstrip("%"))
    kernel = sum(v for k, v in shares.items() if k.startswith("[kernel"))
    user = sum(v for k, v in shares.items() if not k.startswith("[kernel"))
    return {"findings": [f"At {human_size(size)}, {conns} connections: {kernel:.0f}% of echoplex's CPU samples are in the kernel "
                         f"(TCP, the system calls, wakeups), {user:.0f}% in echoplex, libc and libstdc++ together."],
            "title": f"Where echoplex's CPU goes, kernel included (perf record -e cpu-clock, {human_size(size)}, {conns} connections, "
                     f"pipeline {pipeline}, {seconds:g} s)",
            "text": "By binary:\n\n```\n" + "\n".join(split[:8]) + "\n```\n\nBy symbol (≥ 1% of samples):",
            "code": "\n".join(lines[:40])}


def callgrind(build: Path, machine, size: int, conns: int, requests: int) -> dict | None:
    if not shutil.which("valgrind"):
        return None
    results = {}
    top = ""
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in {"echoplex epoll": [str(build / "src" / "echoplex"), "-p", "0", "-q"],
                           "bare epoll loop": [str(build / "bench" / "bare_epoll_echo")]}.items():
            out_file = f"{tmp}/{name.split()[0]}.callgrind"
            server = Server(machine.server(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"] + argv))
            result = load(build / "src" / "testecho", machine, server.port, ["-c", str(conns), "-s", str(size), "-n", str(requests)])
            server.stop()  # valgrind writes its profile when SIGTERM ends the program, handled or not
            if not Path(out_file).exists():
                continue
            ann = subprocess.run(["callgrind_annotate", "--inclusive=no", out_file], capture_output=True, text=True).stdout
            total = re.search(r"^([\d,]+) .*PROGRAM TOTALS", ann, re.M)
            if total:
                results[name] = int(total.group(1).replace(",", "")) / max(result["messages"], 1)
            if name.startswith("echoplex"):
                body = ann.split("file:function", 1)[-1].splitlines()[1:]
                top = "\n".join(l[:150] for l in body if l.strip())
                top = "\n".join(top.splitlines()[:30])
    findings = []
    if "echoplex epoll" in results and "bare epoll loop" in results:
        heads = []
        for l in top.splitlines():
            m = re.match(r"^\s*[\d,]+ \(\s*([\d.]+)%\)\s+\S*?:(echoplex::[\w:~]+)", l)
            if m and len(heads) < 6:
                heads.append(f"{m.group(2).replace('echoplex::', '')} {m.group(1)}%")
        findings.append(f"User space, {human_size(size)} lockstep: echoplex executes {results['echoplex epoll']:,.0f} instructions "
                        f"per message, the bare loop {results['bare epoll loop']:,.0f} (startup included in both). "
                        f"The largest self costs: {', '.join(heads)}.")
    text = "User-space instructions (Ir) per message: " + ", ".join(f"{k} {v:,.0f}" for k, v in results.items()) + \
           ". The system calls themselves are kernel time, which callgrind does not see. " \
           "echoplex's functions by self cost:"
    return {"findings": findings, "title": f"User-space instructions (valgrind --tool=callgrind, {human_size(size)}, {conns} lockstep connections, {requests:,} messages)",
            "text": text, "code": top}


def hold_idle(server: Server, count: int):
    """bench.py's idle connections, opened in batches the server has accepted (valgrind accepts slowly)."""
    import os

    from bench import IdleConnections

    class Counted:
        port = server.port
        base = len(os.listdir(f"/proc/{server.proc.pid}/fd"))

        def connections(self) -> int:
            return len(os.listdir(f"/proc/{server.proc.pid}/fd")) - self.base

    return IdleConnections(Counted(), count)  # type: ignore[arg-type]


def massif(build: Path, machine, idle: int) -> dict | None:
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out_file = f"{tmp}/massif.out"
        server = Server(machine.server(["valgrind", "--tool=massif", "--detailed-freq=1", "--depth=6",
                                        f"--massif-out-file={out_file}", str(build / "src" / "echoplex"), "-p", "0",
                                        "-q", f"--max-connections={idle + 100}"]))
        held = hold_idle(server, idle)
        server.stop()
        held.close()
        raw = Path(out_file).read_text()
    # The largest detailed snapshot (massif's own "peak" is taken lazily, at a later free).
    best, best_heap = "", -1
    for snap in raw.split("snapshot=")[1:]:
        heap = re.search(r"^mem_heap_B=(\d+)", snap, re.M)
        if heap and "heap_tree=detailed" in snap and int(heap.group(1)) > best_heap:
            best, best_heap = snap, int(heap.group(1))
    extra = re.search(r"^mem_heap_extra_B=(\d+)", best, re.M)
    rows = [f"{'bytes':>10} {'per conn':>9}  allocation site (and its callers)"]
    for line in best.split("heap_tree=detailed", 1)[-1].splitlines():
        m = re.match(r"^( *)n\d+: (\d+) (.*)$", line)
        if not m or len(m.group(1)) > 2 or int(m.group(2)) < best_heap / 100:
            continue
        site = re.sub(r"^0x[0-9A-F]+: ", "", m.group(3))
        site = re.sub(r" \(in /[^)]*\)", "", site)
        site = re.sub(r"\(echoplex::EventLoop&, echoplex::UniqueFd.*", "(…)", site)
        site = re.sub(r"std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >", "std::string", site)
        rows.append(f"{int(m.group(2)):>10,} {int(m.group(2)) / idle:>9.0f}  {'  ' * len(m.group(1))}{site[:120]}")
    text = (f"Heap at its largest with {idle:,} idle connections: {best_heap:,} bytes requested"
            + (f", plus {int(extra.group(1)):,} bytes of allocator headers and padding" if extra else "")
            + ". By allocation site, with bytes per idle connection:")
    deque = sum(int(m.group(1)) for m in re.finditer(r"^ n\d+: (\d+) .*_Deque_base.*_M_initialize_map", best, re.M))
    findings = [f"With {idle:,} idle connections echoplex's heap holds {best_heap / idle:,.0f} bytes per connection "
                f"(plus {int(extra.group(1)) / idle if extra else 0:,.0f} of malloc headers); "
                f"{deque / idle:,.0f} of them are the two empty std::deque<Chunk> of its ByteQueues "
                "(libstdc++ allocates a 64-byte map and a 512-byte node for every deque, even an empty one)."]
    return {"findings": findings,
            "title": f"echoplex's heap with {idle:,} idle connections (valgrind --tool=massif)", "text": text,
            "code": "\n".join(rows)}


def run(bench, missed: list[str]) -> dict:
    build, machine = bench.build, bench.machine
    blocks = []
    intro = ("Run automatically because these targets were missed: " + ", ".join(missed) +
             ". The release build has symbols but no debug information, so inlined functions are "
             "charged to their callers.")
    steps: list = []
    if any(t in missed for t in ("bare", "peers", "idle")):
        steps += [(lambda: syscalls(bench, 64, 8, 20000), ["bare", "idle"]),
                  (lambda: syscalls(bench, MIB, 8, 400), ["peers"]),
                  (lambda: perf_profile(build, machine, 64, 100, 1, 3), ["bare", "idle"]),
                  (lambda: perf_profile(build, machine, MIB, 100, 1, 3), ["peers"]),
                  (lambda: callgrind(build, machine, 64, 8, 20000), ["bare", "peers", "idle"])]
    if "memory" in missed:
        steps.append((lambda: massif(build, machine, 2000), ["memory"]))
    for step, concerns in steps:
        try:
            block = step()
        except Exception as e:  # noqa: BLE001 - a profiler failing must not lose the benchmark
            block = {"title": "profiling step failed", "text": str(e)}
        if block:
            block["targets"] = concerns
            blocks.append(block)
    return {"intro": intro, "blocks": blocks}


# ---------------------------------------------------------------------------------------------
# io_uring beside epoll and the bare loop

# Functions whose inclusive cost (callees included) says where a loopback echo's CPU goes, with
# what each stands for; a name ending in * sums the symbols beginning with any of its |-separated
# prefixes (libc's memmove and memcpy variants). Inclusive costs nest (the loopback delivery is
# inside the send), so the rows do not add up to the total.
PATHS = [
    ("tcp_sendmsg", "sending (tcp_sendmsg and all under it)"),
    ("net_rx_action", "  of it, loopback delivery into the client (softirq)"),
    ("_copy_from_iter", "  of it, copying the bytes in (_copy_from_iter)"),
    ("tcp_recvmsg", "receiving (tcp_recvmsg and all under it)"),
    ("_copy_to_iter", "  of it, copying the bytes out (_copy_to_iter)"),
    ("__memmove|__memcpy*", "copying in user space (libc memmove, memcpy)"),
    ("do_epoll_wait", "waiting: epoll_wait"),
    ("io_cqring_wait", "waiting: io_uring_enter's wait for completions"),
    ("__io_run_local_work", "io_uring task work (runs receives, posts completions)"),
    ("__schedule", "sleeping and waking (__schedule)"),
]


# The points profiled: the one the issue names, and the one where io_uring loses most.
URING_POINTS = [(64, 100), (MIB, 8)]


def uring(bench) -> list[dict]:
    """The uring experiment's profiles, one per point of URING_POINTS."""
    counters = hardware_counters()
    return [{**uring_point(bench, size, conns), "hardware_counters": counters} for size, conns in URING_POINTS]


def hardware_counters() -> bool:
    """Whether perf can count cache misses here (virtual machines often expose no PMU)."""
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "cache-misses", "--", "true"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and (out.stderr.strip().splitlines()[-1:] or [""])[0].split(",")[0].isdigit()


def uring_point(bench, size: int, conns: int) -> dict:
    """One point: system calls by name, io_uring submissions and TCP segments per message, and
    the CPU per message in the kernel's main paths, for io_uring, epoll and the bare loop."""
    keys = [k for k in ("io_uring", "epoll", "bare") if k in bench.specs]
    quick = bench.args.quick
    out: dict = {"size": size, "connections": conns, "blocks": [], "findings": []}
    requests = (20000 if quick else 100000) if size < MIB else (300 if quick else 2000)
    steps = [("syscalls", lambda: uring_syscalls(bench, keys, size, conns, requests)),
             ("perf", lambda: uring_perf(bench, keys, size, conns, 1.0 if quick else 3.0))]
    for name, step in steps:
        try:
            got = step()
        except Exception as e:  # noqa: BLE001 - a profiler failing must not lose the benchmark
            got = {"title": f"{name}: profiling step failed", "text": str(e)}
        if got:
            out["findings"] += got.pop("findings", [])
            out[name] = got.pop("table", None)
            out["blocks"].append(got)
    return out


def submissions_event() -> str | None:
    """The tracepoint of each request io_uring takes from the submission queue (a send, a
    receive...): io_uring_submit_req since Linux 6.1, io_uring_submit_sqe before; None if neither."""
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        for name in ("io_uring_submit_req", "io_uring_submit_sqe"):
            if Path(f"{root}/events/io_uring/{name}").is_dir():
                return f"io_uring:{name}"
    return None


def tcp_out_segments() -> int:
    """TCP segments sent by the whole machine so far (/proc/net/snmp Tcp: OutSegs)."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    return int(dict(zip(rows[0], rows[1]))["OutSegs"])


def uring_syscalls(bench, keys: list[str], size: int, conns: int, requests: int) -> dict | None:
    from bench import RunningServer

    if bench.counter.tool is None:
        return None
    tables: dict[str, dict[str, float]] = {}
    extra: dict[str, dict[str, float]] = {}
    submitted = submissions_event()
    # The requests io_uring takes, all and by kind: IORING_OP_SENDMSG is 9, IORING_OP_RECV 27 (the
    # kernel's ABI: these numbers never change).
    requests_by_kind = {"requests": (submitted, None), "sendmsg": (submitted, "opcode == 9"),
                        "recv": (submitted, "opcode == 27")} if submitted else {}
    for key in keys:
        server = RunningServer(bench.specs[key], bench.machine, bench.logdir)
        try:
            segments = tcp_out_segments()
            with bench.counter.window(server.pid, breakdown=True, extra=requests_by_kind) as window:
                result = load(bench.testecho, bench.machine, server.port,
                              ["-c", str(conns), "-s", str(size), "-n", str(requests)])
            segments = tcp_out_segments() - segments
        finally:
            server.stop()
        messages = max(result["messages"], 1)
        tables[key] = {name: n / messages for name, n in window.by_call.items()}
        tables[key]["total"] = (window.total or 0) / messages
        extra[key] = {"segments": segments / messages}
        for kind, count in window.extra.items():
            extra[key][kind] = count / messages
    label = {k: bench.specs[k].label for k in keys}
    names = sorted({n for t in tables.values() for n in t if n != "total"},
                   key=lambda n: -max(t.get(n, 0) for t in tables.values()))
    rows = [f"{'system call':18}" + "".join(f"{label[k]:>18}" for k in keys)]
    for n in names:
        if max(t.get(n, 0) for t in tables.values()) >= 0.001:
            rows.append(f"{n:18}" + "".join(f"{tables[k].get(n, 0):18.4f}" for k in keys))
    rows.append(f"{'total':18}" + "".join(f"{tables[k]['total']:18.4f}" for k in keys))
    for kind, what in (("requests", "io_uring requests"), ("sendmsg", "  of them sendmsg"), ("recv", "  of them recv")):
        if any(kind in extra[k] for k in keys):
            rows.append(f"{what:18}" + "".join(f"{extra[k].get(kind, 0):18.2f}" for k in keys))
    rows.append(f"{'TCP segments':18}" + "".join(f"{extra[k]['segments']:18.1f}" for k in keys))
    findings = []
    if "io_uring" in tables:
        from bench import CONNECTION_SYSCALLS

        u = tables["io_uring"]
        text = (f"At {human_size(size)} with {conns} lockstep connections echoplex io_uring makes {u['total']:.3f} "
                "system calls per message")
        enter = u.get("io_uring_enter", 0)
        if enter:
            text += (f": io_uring_enter {enter:.3f} (one per loop iteration: "
                     + (f"{enter:.1f} iterations per message)" if enter >= 1 else f"{1 / enter:.1f} messages each)"))
        once = [(n, v * requests / conns) for n, v in u.items() if n in CONNECTION_SYSCALLS and v > 0]
        if once:
            text += ", and per connection " + ", ".join(f"{n} {per:.1f}" for n, per in once)
        others = [(n, v) for n, v in u.items() if n not in CONNECTION_SYSCALLS + ["io_uring_enter", "total"] and v >= 0.001]
        if others:
            text += ", and " + ", ".join(f"{n} {v:.3f}" for n, v in others) + " per message"
        for k in ("epoll", "bare"):
            if k in tables:
                t = tables[k]
                top = sorted(((n, v) for n, v in t.items() if n != "total"), key=lambda x: -x[1])[:3]
                text += f"; {label[k]} {t['total']:.2f} (" + ", ".join(f"{n} {v:.2f}" for n, v in top) + ")"
        findings.append(text + ".")
        x = extra["io_uring"]
        if "requests" in x:
            findings.append(
                f"io_uring takes {x['requests']:.1f} requests per message at {human_size(size)}: "
                f"{x.get('sendmsg', 0):.1f} sendmsg and {x.get('recv', 0):.1f} receives (one multishot receive "
                "serves a connection while the client keeps up; once replies wait for it, receives are "
                "single-shot). TCP sends "
                f"{x['segments']:.1f} segments per message with io_uring against " + " and ".join(f"{extra[k]['segments']:.1f} with {label[k]}" for k in keys
                                                         if k != "io_uring")
                + " (both ends, counted machine-wide from /proc/net/snmp during the load).")
    how = ("perf stat, a syscalls:sys_enter_NAME tracepoint per call" if bench.counter.tool == "perf"
           else "strace -c -f (it slows the server, which may batch more per wait than it would)")
    return {"findings": findings, "table": {"calls": tables, "extra": extra},
            "title": f"System calls per message by name ({how}; {human_size(size)}, {conns} lockstep connections, "
                     f"{requests:,} messages)",
            "text": "Counted over the whole load, connections' setup and teardown included, divided by the "
                    "messages echoed.",
            "code": "\n".join(rows)}


def perf_record(bench, key: str, size: int, conns: int, seconds: float, out_file: str) -> tuple[dict, float]:
    """perf record -g of one server over exactly one timed load; (testecho's report, seconds of
    CPU sampled)."""
    from bench import PerfSession, RunningServer

    freq = 2000
    server = RunningServer(bench.specs[key], bench.machine, bench.logdir)
    try:
        perf = PerfSession(["perf", "record", "-e", "cpu-clock", "-F", str(freq), "-g", "-p", str(server.pid),
                            "-o", out_file])
        try:
            perf.command("enable")
            result = load(bench.testecho, bench.machine, server.port,
                          ["-c", str(conns), "-s", str(size), "-d", f"{seconds}s"])
        finally:
            perf.finish()
    finally:
        server.stop()
    return result, freq


def perf_lines(data_file: str, *options: str) -> list[str]:
    rep = subprocess.run(["perf", "report", "-i", data_file, "--stdio", "-g", "none", *options],
                         capture_output=True, text=True)
    return [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]


def uring_perf(bench, keys: list[str], size: int, conns: int, seconds: float) -> dict | None:
    if not shutil.which("perf"):
        return None
    probe = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], capture_output=True)
    if probe.returncode != 0:
        return {"title": "perf", "text": "perf record -e cpu-clock does not run here: " + probe.stderr.decode()[-200:]}
    label = {k: bench.specs[k].label for k in keys}
    table: dict[str, dict] = {}
    top_io_uring = ""
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            data_file = f"{tmp}/{key}.data"
            result, freq = perf_record(bench, key, size, conns, seconds, data_file)
            messages = max(result["messages"], 1)
            # Sample counts by binary (-n): with cpu-clock at freq Hz each sample is 1/freq s of CPU.
            by_dso: dict[str, int] = {}
            for l in perf_lines(data_file, "--no-children", "--sort", "dso", "-n"):
                parts = l.split()  # overhead, samples, dso
                if len(parts) >= 3 and parts[0].endswith("%") and parts[1].isdigit():
                    by_dso[parts[2]] = by_dso.get(parts[2], 0) + int(parts[1])
            samples = sum(by_dso.values())
            cpu_us = samples / freq / messages * 1e6
            kernel = 100 * sum(n for d, n in by_dso.items() if d.startswith("[kernel")) / max(samples, 1)
            inclusive: dict[str, float] = {}
            for l in perf_lines(data_file, "--children", "--sort", "sym", "--percent-limit", "0.2"):
                mm = re.match(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", l)
                if mm:
                    inclusive.setdefault(mm.group(4), float(mm.group(1)))

            def share(fn: str) -> float:
                if fn.endswith("*"):
                    return sum(v for name, v in inclusive.items() if name.startswith(tuple(fn[:-1].split("|"))))
                return inclusive.get(fn, 0.0)
            table[key] = {"cpu_us_per_msg": cpu_us, "kernel_share": kernel, "messages": result["messages"],
                          "samples": samples,
                          "paths_us": {fn: share(fn) / 100 * cpu_us for fn, _ in PATHS}}
            if key == "io_uring":
                top_io_uring = "\n".join(perf_lines(data_file, "--no-children", "--sort", "sym",
                                                    "--percent-limit", "1.5")[:25])
    rows = [f"{'µs per message':56}" + "".join(f"{label[k]:>17}" for k in keys),
            f"{'all of the server CPU sampled':56}" + "".join(f"{table[k]['cpu_us_per_msg']:17.2f}" for k in keys),
            f"{'  in the kernel (share)':56}" + "".join(f"{table[k]['kernel_share']:16.0f}%" for k in keys),
            f"{'  in user space':56}" + "".join(
                f"{table[k]['cpu_us_per_msg'] * (1 - table[k]['kernel_share'] / 100):17.2f}" for k in keys)]
    for fn, what in PATHS:
        if any(table[k]["paths_us"][fn] > 0 for k in keys):
            rows.append(f"{what:56}" + "".join(f"{table[k]['paths_us'][fn]:17.2f}" for k in keys))
    findings = []
    if "io_uring" in table and "epoll" in table:
        u, e = table["io_uring"], table["epoll"]

        def pct(t: dict, fn: str) -> str:
            return f"{100 * t['paths_us'][fn] / max(t['cpu_us_per_msg'], 1e-9):.0f}%"

        findings.append(
            f"perf record, {human_size(size)} with {conns} lockstep connections: {u['kernel_share']:.0f}% of io_uring's "
            f"samples and {e['kernel_share']:.0f}% of epoll's are in the kernel. Sending (tcp_sendmsg, with the "
            f"loopback delivery into the client's socket that runs inside it) takes {pct(u, 'tcp_sendmsg')} of "
            f"io_uring's CPU and {pct(e, 'tcp_sendmsg')} of epoll's, the delivery alone {pct(u, 'net_rx_action')} and "
            f"{pct(e, 'net_rx_action')}; receiving {pct(u, 'tcp_recvmsg')} and {pct(e, 'tcp_recvmsg')}; waiting for "
            f"events {pct(u, 'io_cqring_wait')} (io_uring_enter) and {pct(e, 'do_epoll_wait')} (epoll_wait). In "
            f"this sample io_uring spent {u['cpu_us_per_msg']:.2f} µs per message, epoll {e['cpu_us_per_msg']:.2f}.")
    return {"findings": findings, "table": table,
            "title": f"Where the CPU goes, kernel included (perf record -e cpu-clock -g, {human_size(size)}, {conns} "
                     f"lockstep connections, {seconds:g} s each)",
            "text": "Microseconds of server CPU per message under each kernel function, callees included (so "
                    "the rows nest and do not add up), from the samples of one timed load per server. One short "
                    "sample each: the table shows where the time goes, the experiment's medians what it costs. "
                    "Then io_uring's own functions by self cost (≥ 1.5% of its samples):",
            "code": "\n".join(rows) + "\n\n" + top_io_uring}
