"""Profiles echoplex where bench.py found a target missed, for the report's profile section.

- CPU targets: system calls per message (strace -c, echoplex beside the bare loop), where the CPU
  goes including the kernel (perf record -e cpu-clock, when perf works here), and user-space
  instructions per message by function (valgrind --tool=callgrind).
- Memory target: the heap at its peak with 10,000 idle connections, by allocation site
  (valgrind --tool=massif).
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
