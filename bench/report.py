"""bench.py's presentation: report.md, the SVG plots, the targets and README.md's Benchmarks
section, all computed from the results alone (`bench.py --report-only` rewrites them). Figures
and met/missed marks only."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from procs import KIB, MIB, human_size  # bench/procs.py, beside this script

SIZES = [64, KIB, 16 * KIB, MIB]
PIPELINE = {64: 16, KIB: 16, 16 * KIB: 4, MIB: 2}
PEERS = ["asio", "uvloop", "asyncio", "thread", "socat"]
ORDER = ["bare", "epoll", "io_uring", "poll", "select", "asio", "uvloop", "asyncio", "thread", "socat"]
COLORS = {"bare": "#555555", "epoll": "#1f77b4", "io_uring": "#b8860b", "poll": "#ff7f0e", "select": "#2ca02c",
          "asio": "#9467bd", "uvloop": "#8c564b", "asyncio": "#e377c2", "thread": "#bcbd22", "socat": "#17becf"}

# The targets' limits.
SYSCALL_RATIO_LIMIT = 1.10  # system calls per message, echoplex epoll ÷ bare loop
INSTRUCTIONS_LIMIT = 400  # user-space instructions per 64 B message, echoplex epoll
CPU_GEOMEAN_LIMIT = 1.05  # CPU per message, echoplex epoll ÷ bare loop, geometric mean of 8 cells
PEER_LIMIT = 1.00  # CPU per message at 16 KiB and 1 MiB, echoplex epoll ÷ uvloop and ÷ Boost.Asio
IDLE_LIMIT = 1.3  # CPU per message with 10,000 idle ÷ with none, echoplex epoll
MEMORY_LIMIT = 256  # bytes of RSS per idle connection, echoplex epoll
URING_SYSCALL_LIMIT = 0.5  # system calls per message, io_uring, 100 and 1,000 connections
URING_CPU_LIMIT = 1 / 1.1  # CPU per message, io_uring ÷ bare loop, 100 and 1,000 connections
URING_SMALL_LIMIT = 1.00  # CPU per message, io_uring ÷ epoll, 8 connections


def num(x: float) -> str:
    """Three significant figures, without scientific notation for the magnitudes we meet."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def spread(values: list[float], fmt=num, unit: str = "") -> str:
    """median (min–max) of values; just the value when there is one."""
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{fmt(med)}{unit}"
    return f"{fmt(med)}{unit} ({fmt(min(values))}–{fmt(max(values))})"


def ratio_fmt(x: float) -> str:
    return f"{x:.2f}×"


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def cell_label(size: int, conns: int, pipeline: int | None = None) -> str:
    return f"{human_size(size)} × {conns:,}" + (f" P{pipeline}" if pipeline is not None else "")


class Results:
    def __init__(self, data: dict) -> None:
        self.data = data
        self.recs = [r for r in data["results"] if r.get("ok")]
        self.failed = [r for r in data["results"] if not r.get("ok")]
        self.by_key: dict[tuple, dict[int, dict]] = defaultdict(dict)
        for r in self.recs:
            self.by_key[self.point(r)][r["round"]] = r

    @staticmethod
    def point(r: dict) -> tuple:
        return (r["exp"], r["server"], r.get("client"), r.get("size"), r.get("connections"), r.get("pipeline"),
                r.get("idle"))

    def get(self, exp, server, client=None, size=None, conns=None, pipeline=None, idle=None) -> dict[int, dict]:
        return self.by_key.get((exp, server, client, size, conns, pipeline, idle), {})

    def values(self, rounds: dict[int, dict], field: str) -> list[float]:
        out = []
        for r in rounds.values():
            v = r
            for part in field.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                out.append(float(v))
        return out

    @staticmethod
    def ratios(num_rounds: dict[int, dict], den_rounds: dict[int, dict], field: str = "cpu_us_per_msg") -> list[float]:
        """num ÷ den of field, per round that measured both."""
        return [num_rounds[k][field] / den_rounds[k][field] for k in sorted(num_rounds)
                if k in den_rounds and num_rounds[k].get(field) is not None and den_rounds[k].get(field)]

    def servers(self, exp: str) -> list[str]:
        present = {r["server"] for r in self.recs if r["exp"] == exp}
        return [s for s in ORDER if s in present]

    def sizes(self, exp: str) -> list[int]:
        return sorted({r["size"] for r in self.recs if r["exp"] == exp and r.get("size")})

    def label(self, key: str) -> str:
        return self.data["servers"].get(key, {}).get("label", key)

    # The points the targets and the main table read.
    def grid(self, key: str, size: int, conns: int, pipeline: int = 1) -> dict[int, dict]:
        return self.get("grid", key, "testecho", size, conns, pipeline, 0)

    def uring(self, key: str, size: int, conns: int) -> dict[int, dict]:
        return self.get("uring", key, "testecho", size, conns, 1, 0)

    def instructions(self, key: str) -> dict[int, dict]:
        return self.get("instructions", key, "testecho", 64, 8, 1, 0)


def uring_points(res: Results) -> list[tuple[int, int]]:
    return sorted({(r["size"], r["connections"]) for r in res.recs if r["exp"] == "uring"})


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    id: str
    name: str
    experiment: str  # the experiment that measures it (--only)
    bound: float
    cells: list[tuple[str, float]]  # (cell, its figure: the median over the rounds)
    fmt: Callable[[float], str] = ratio_fmt
    rule: str = "every"  # every: each cell ≤ bound; geomean: the cells' geometric mean ≤ bound
    note: str = ""  # figures shown beside the cells, not judged

    @property
    def decisive(self) -> float | None:
        if not self.cells:
            return None
        values = [v for _, v in self.cells]
        return geomean(values) if self.rule == "geomean" else max(values)

    @property
    def met(self) -> bool | None:
        d = self.decisive
        return None if d is None else d <= self.bound

    def show(self, v: float) -> str:
        """fmt, with one more decimal when fmt would print the bound for a value beyond it."""
        text = self.fmt(v)
        if v > self.bound and text == self.fmt(self.bound) and self.fmt is ratio_fmt:
            text = f"{v:.3f}×"
        return text


def targets(res: Results) -> list[Target]:
    out = []
    # a. System calls per message, epoll ÷ bare, from the uring experiment's counts.
    cells = []
    for size in SIZES:
        for conns in (8, 100):
            rs = res.ratios(res.uring("epoll", size, conns), res.uring("bare", size, conns), "syscalls_per_msg")
            if rs:
                cells.append((cell_label(size, conns), statistics.median(rs)))
    out.append(Target("syscalls", "System calls per message, echoplex epoll ÷ bare epoll loop, lockstep, 64 B–1 MiB "
                      "× 8 and 100 connections (counted in the uring experiment)", "uring", SYSCALL_RATIO_LIMIT, cells))
    # b. User-space instructions per 64 B message.
    e = median_or_none(res.values(res.instructions("epoll"), "ir_per_msg"))
    b = median_or_none(res.values(res.instructions("bare"), "ir_per_msg"))
    out.append(Target("instructions", "User-space instructions per 64 B message, echoplex epoll (callgrind, 8 lockstep "
                      "connections)", "instructions", INSTRUCTIONS_LIMIT,
                      [("echoplex epoll", e)] if e is not None else [], fmt=lambda v: f"{v:,.0f}",
                      note=f"bare epoll loop {b:,.0f}" if b is not None else ""))
    # c. CPU per message, epoll ÷ bare, geometric mean over 8 grid cells.
    cells = []
    for size in (64, KIB):
        for conns in (8, 100):
            for pipeline in (1, PIPELINE[size]):
                rs = res.ratios(res.grid("epoll", size, conns, pipeline), res.grid("bare", size, conns, pipeline))
                if rs:
                    cells.append((cell_label(size, conns, pipeline), statistics.median(rs)))
    out.append(Target("cpu", "Server CPU per message, echoplex epoll ÷ bare epoll loop, geometric mean over 64 B and "
                      "1 KiB × 8 and 100 connections, lockstep (P1) and pipelined (P16) (grid)", "grid",
                      CPU_GEOMEAN_LIMIT, cells, rule="geomean",
                      note=f"{len(cells)} of 8 cells measured" if 0 < len(cells) < 8 else ""))
    # d. CPU per message at 16 KiB and 1 MiB against uvloop and Boost.Asio.
    cells = []
    for size in (16 * KIB, MIB):
        e_rounds = res.get("peers", "epoll", "testecho", size, 100, 1, 0)
        for peer in ("uvloop", "asio"):
            rs = res.ratios(e_rounds, res.get("peers", peer, "testecho", size, 100, 1, 0))
            if rs:
                cells.append((f"{human_size(size)} ÷ {res.label(peer)}", statistics.median(rs)))
    out.append(Target("peers", "Server CPU per message at 16 KiB and 1 MiB, echoplex epoll ÷ uvloop (protocol) and ÷ "
                      "Boost.Asio (peers, testecho, 100 lockstep connections)", "peers", PEER_LIMIT, cells))
    # The idle curve.
    rs = res.ratios(res.get("idle", "epoll", "testecho", 64, 8, 1, 10000), res.get("idle", "epoll", "testecho", 64, 8, 1, 0))
    out.append(Target("idle", "Server CPU per message with 10,000 idle connections ÷ with none, echoplex epoll "
                      "(idle, 8 lockstep connections, 64 B)", "idle", IDLE_LIMIT,
                      [("10,000 idle", statistics.median(rs))] if rs else []))
    # e. Memory per idle connection.
    m = median_or_none(res.values(res.get("memory", "epoll", None, None, None, None, 10000), "bytes_per_conn"))
    out.append(Target("memory", "RSS per idle connection, echoplex epoll, 10,000 idle connections (memory)", "memory",
                      MEMORY_LIMIT, [("10,000 idle", m)] if m is not None else [], fmt=lambda v: f"{v:,.0f} B"))
    # The three io_uring targets.
    points = uring_points(res)
    cells = [(cell_label(s, c), statistics.median(v)) for s, c in points if c >= 100
             for v in [res.values(res.uring("io_uring", s, c), "syscalls_per_msg")] if v]
    out.append(Target("uring_syscalls", "System calls per message, echoplex io_uring, 100 and 1,000 connections "
                      "(uring)", "uring", URING_SYSCALL_LIMIT, cells, fmt=num))
    for tid, name, den, bound, want in (
            ("uring_cpu", "Server CPU per message, echoplex io_uring ÷ bare epoll loop, 100 and 1,000 connections "
             "(uring)", "bare", URING_CPU_LIMIT, lambda c: c >= 100),
            ("uring_small", "Server CPU per message, echoplex io_uring ÷ echoplex epoll, 8 connections (uring)", "epoll",
             URING_SMALL_LIMIT, lambda c: c == 8)):
        cells = [(cell_label(s, c), statistics.median(rs)) for s, c in points if want(c)
                 for rs in [res.ratios(res.uring("io_uring", s, c), res.uring(den, s, c))] if rs]
        out.append(Target(tid, name, "uring", bound, cells))
    return out


def targets_table(res: Results) -> list[str]:
    lines = ["| target | limit | per cell (median over rounds; bold: beyond the limit) | deciding figure | |",
             "| --- | ---: | --- | ---: | :---: |"]
    for t in targets(res):
        limit = f"≤ {t.fmt(t.bound)}"
        if not t.cells:
            lines.append(f"| {t.name} | {limit} | not measured (`--only {t.experiment}`) | — | — |")
            continue
        cells = " · ".join(f"{label} **{t.show(v)}**" if t.rule == "every" and v > t.bound else f"{label} {t.show(v)}"
                           for label, v in t.cells)
        if t.note:
            cells += f" ({t.note})"
        deciding = f"{'geometric mean' if t.rule == 'geomean' else 'worst'} {t.show(t.decisive)}" \
            if len(t.cells) > 1 else t.show(t.decisive)
        lines.append(f"| {t.name} | {limit} | {cells} | {deciding} | {'✅' if t.met else '❌'} |")
    return lines


def echo_table(res: Results) -> list[str]:
    """Per size × connections: CPU per message of the bare loop and echoplex epoll (grid, lockstep)
    and their system calls per message (uring experiment, lockstep), with the ratios."""
    points = sorted({(r["size"], r["connections"]) for r in res.recs
                     if (r["exp"] == "grid" and r.get("pipeline") == 1) or r["exp"] == "uring"})
    if not points:
        return []
    lines = ["| size | connections | CPU µs/msg bare | CPU µs/msg epoll | CPU epoll ÷ bare | system calls/msg bare | "
             "system calls/msg epoll | system calls epoll ÷ bare |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size, conns in points:
        cells = []
        for exp_rounds, field in ((res.grid, "cpu_us_per_msg"), (res.uring, "syscalls_per_msg")):
            b, e = exp_rounds("bare", size, conns), exp_rounds("epoll", size, conns)
            vb, ve = res.values(b, field), res.values(e, field)
            rs = res.ratios(e, b, field)
            cells += [num(statistics.median(vb)) if vb else "—", num(statistics.median(ve)) if ve else "—",
                      ratio_fmt(statistics.median(rs)) if rs else "—"]
        lines.append(f"| {human_size(size)} | {conns:,} | " + " | ".join(cells) + " |")
    return lines


def plots(out: Path, res: Results) -> list[tuple[str, str]]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "echoplex-bench", "font.size": 9})
    made = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, format="svg", metadata={"Date": None})
        plt.close(fig)
        made.append((name, caption))

    def med(rounds: dict, field: str = "cpu_us_per_msg") -> float | None:
        vals = res.values(rounds, field)
        return statistics.median(vals) if vals else None

    # 1. CPU per message against size, per server, one panel per connection count.
    grid_servers = res.servers("grid")
    conns_list = sorted({r["connections"] for r in res.recs if r["exp"] == "grid"})
    if grid_servers and conns_list:
        with_bare = "bare" in grid_servers
        rows = 2 if with_bare else 1
        fig, axes = plt.subplots(rows, len(conns_list), figsize=(3.3 * len(conns_list), 2.9 * rows), sharey="row",
                                 sharex=True, squeeze=False)
        for col, conns in enumerate(conns_list):
            for key in grid_servers:
                for pipelined in (False, True):
                    xs, ys, rs = [], [], []
                    for size in res.sizes("grid"):
                        rounds = res.get("grid", key, "testecho", size, conns, PIPELINE[size] if pipelined else 1, 0)
                        y = med(rounds)
                        if y is not None:
                            xs.append(size)
                            ys.append(y)
                            if with_bare:
                                rr = res.ratios(rounds, res.get("grid", "bare", "testecho", size, conns,
                                                                PIPELINE[size] if pipelined else 1, 0))
                                rs.append(statistics.median(rr) if rr else float("nan"))
                    style = dict(marker="o", ms=3, color=COLORS[key], linestyle="--" if pipelined else "-",
                                 label=f"{res.label(key)}{' pipelined' if pipelined else ''}")
                    if xs:
                        axes[0][col].plot(xs, ys, **style)
                        if with_bare and key != "bare":
                            axes[1][col].plot(xs, rs, **style)
            axes[0][col].set_title(f"{conns} connections")
            for row in range(rows):
                ax = axes[row][col]
                ax.set_xscale("log", base=2)
                ax.set_xticks([64, KIB, 16 * KIB, MIB], ["64 B", "1 KiB", "16 KiB", "1 MiB"])
                ax.grid(True, which="major", alpha=0.3)
            axes[0][col].set_yscale("log")
            axes[rows - 1][col].set_xlabel("message size")
            if with_bare:
                axes[1][col].axhline(1.0, color=COLORS["bare"], lw=0.8)
                axes[1][col].axhline(CPU_GEOMEAN_LIMIT, color="red", lw=0.8, ls=":")
        axes[0][0].set_ylabel("server CPU µs per message")
        if with_bare:
            axes[1][0].set_ylabel("÷ bare epoll loop, same run")
        axes[0][-1].legend(fontsize=6, loc="upper left")
        save(fig, "cpu_per_message.svg", "Server CPU per echoed message against message size, and its ratio to the "
             f"bare epoll loop (solid lockstep, dashed pipelined; red: {CPU_GEOMEAN_LIMIT:.2f}×, the geometric-mean target)")

    # 2. The idle curve.
    idle_servers = res.servers("idle")
    if idle_servers:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
        for key in idle_servers:
            xs, ys, rs = [], [], []
            base = res.get("idle", key, "testecho", 64, 8, 1, 0)
            for idle in sorted({r["idle"] for r in res.recs if r["exp"] == "idle"}):
                rounds = res.get("idle", key, "testecho", 64, 8, 1, idle)
                y = med(rounds)
                if y is not None:
                    xs.append(max(idle, 1))
                    ys.append(y)
                    rr = res.ratios(rounds, base)
                    rs.append(statistics.median(rr) if rr else float("nan"))
            ax1.plot(xs, ys, marker="o", ms=3, color=COLORS[key], label=res.label(key))
            ax2.plot(xs, rs, marker="o", ms=3, color=COLORS[key], label=res.label(key))
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel("idle connections (0 drawn at 1)")
            ax.grid(True, alpha=0.3)
        ax1.set_yscale("log")
        ax1.set_ylabel("server CPU µs per message")
        ax2.set_yscale("log")
        ax2.set_ylabel("÷ same server with 0 idle")
        ax2.axhline(IDLE_LIMIT, color="red", lw=0.8, ls=":")
        ax1.set_title("8 active lockstep clients, 64 B")
        ax2.set_title("ratio to none idle (red: 1.3× target)")
        ax1.legend(fontsize=7)
        save(fig, "idle_curve.svg", "CPU per message against idle connections; select ends at FD_SETSIZE (1024)")

    # 3. Peers: grouped bars per size, one panel per load tool.
    peer_servers = res.servers("peers")
    clients = [c for c in ("testecho", "echoclient") if any(r["exp"] == "peers" and r["client"] == c for r in res.recs)]
    if peer_servers and clients:
        fig, axes = plt.subplots(1, len(clients), figsize=(5 * len(clients), 3.4), squeeze=False)
        sizes = res.sizes("peers")
        width = 0.8 / len(peer_servers)
        for ax, client in zip(axes[0], clients):
            conns = 100 if client == "testecho" else 3
            for i, key in enumerate(peer_servers):
                ys = [med(res.get("peers", key, client, size, conns, 1, 0)) or 0 for size in sizes]
                ax.bar([j + i * width for j in range(len(sizes))], ys, width, color=COLORS[key], label=res.label(key))
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], [human_size(s) for s in sizes])
            ax.set_yscale("log")
            ax.set_ylabel("server CPU µs per message")
            ax.set_title(f"{client}: {conns} connections, lockstep")
            ax.grid(True, axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=6)
        save(fig, "peers.svg", "Server CPU per message, echoplex (epoll) beside the peers, same runs")

    # 4. Memory per idle connection.
    mem_servers = res.servers("memory")
    if mem_servers:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        labels, vals, colors = [], [], []
        for key in mem_servers:
            rounds = {k: v for (exp, s, *_), rs in res.by_key.items() if exp == "memory" and s == key for k, v in rs.items()}
            v = res.values(rounds, "bytes_per_conn")
            if v:
                n = next(iter(rounds.values()))["idle"]
                labels.append(f"{res.label(key)} ({n:,})")
                vals.append(max(statistics.median(v), 1))
                colors.append(COLORS[key])
        ax.barh(labels, vals, color=colors)
        ax.set_xscale("log")
        ax.axvline(MEMORY_LIMIT, color="red", lw=0.8, ls=":")
        ax.set_xlabel(f"bytes of RSS per idle connection (red: the {MEMORY_LIMIT} B target)")
        ax.invert_yaxis()
        save(fig, "memory_per_idle.svg", "Server memory per idle connection (idle connections held in brackets)")

    # 5. io_uring beside epoll and the bare loop: CPU, ratios, system calls, per connection count.
    points = uring_points(res)
    if points:
        conns_list = sorted({c for _, c in points})
        keys = [k for k in ("bare", "epoll", "io_uring") if k in res.servers("uring")]
        fig, axes = plt.subplots(3, len(conns_list), figsize=(3.3 * len(conns_list), 7.6), sharex=True,
                                 sharey="row", squeeze=False)
        for col, conns in enumerate(conns_list):
            sizes = [s for s, c in points if c == conns]
            for key in keys:
                cpu = [med(res.uring(key, s, conns)) for s in sizes]
                calls = [med(res.uring(key, s, conns), "syscalls_per_msg") for s in sizes]
                style = dict(marker="o", ms=3, color=COLORS[key], label=res.label(key))
                axes[0][col].plot([s for s, y in zip(sizes, cpu) if y], [y for y in cpu if y], **style)
                axes[2][col].plot([s for s, y in zip(sizes, calls) if y], [y for y in calls if y], **style)
            for den, ls in (("epoll", "-"), ("bare", "--")) if "io_uring" in keys else ():
                rs = [res.ratios(res.uring("io_uring", s, conns), res.uring(den, s, conns)) for s in sizes]
                axes[1][col].plot([s for s, r in zip(sizes, rs) if r], [statistics.median(r) for r in rs if r],
                                  marker="o", ms=3, color=COLORS["io_uring"], linestyle=ls, label=f"io_uring ÷ {res.label(den)}")
            axes[0][col].set_title(f"{conns} connections, lockstep")
            axes[1][col].axhline(1.0, color=COLORS["bare"], lw=0.8)
            axes[1][col].axhline(URING_CPU_LIMIT, color="red", lw=0.8, ls=":")
            axes[2][col].axhline(URING_SYSCALL_LIMIT, color="red", lw=0.8, ls=":")
            for row in range(3):
                ax = axes[row][col]
                ax.set_xscale("log", base=2)
                ax.set_xticks([64, KIB, 16 * KIB, MIB], ["64 B", "1 KiB", "16 KiB", "1 MiB"])
                ax.grid(True, which="major", alpha=0.3)
            axes[0][col].set_yscale("log")
            axes[2][col].set_yscale("log")
            axes[2][col].set_xlabel("message size")
        axes[0][0].set_ylabel("server CPU µs per message")
        axes[1][0].set_ylabel("CPU ratio, same round")
        axes[2][0].set_ylabel("system calls per message")
        axes[0][-1].legend(fontsize=6, loc="upper left")
        if "io_uring" in keys:
            axes[1][-1].legend(fontsize=6, loc="upper left")
        save(fig, "uring.svg", "echoplex io_uring beside echoplex epoll and the bare epoll loop: CPU per message, "
             "io_uring's ratio to each (red: 0.91×, the 1.1× target against the bare loop) and system calls per "
             "message (red: 0.5)")
    return made


# ---------------------------------------------------------------------------------------------
# Markdown


def write(out: Path, data: dict, readme: Path | None = None) -> None:
    """Writes report.md and the plots into out; with readme, replaces its `## Benchmarks` section
    (or appends one at the end), leaving every other line as it is on disk at that moment."""
    res = Results(data)
    made = plots(out, res)
    (out / "report.md").write_text(render(res, made))
    if readme is None:
        return
    section = readme_section(res, made, out.resolve().relative_to(readme.resolve().parent).as_posix())
    text = readme.read_text()
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == "## Benchmarks"), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        text = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    readme.write_text(text)


def machine_line(data: dict) -> str:
    m = data["machine"]
    pin = (f"server on CPU {m['server_cpu']}, load on CPU {m['load_cpu']}" if m["pinned"] else "not pinned (one CPU)")
    after = data.get("load_after") or {}
    steps = (" (after " + ", ".join(f"{k} {v:.2f}" for k, v in after.items()) + ")") if after else ""
    return (f"{m['cpu']}, {m['nproc']} CPUs, {m['mem_gib']} GiB, Linux {m['kernel']} ({m['os']}); {pin}; "
            f"1-minute load average {data['load_start'][0]:.2f} at start, {data['load_end'][0]:.2f} at end{steps}")


def run_line(run: dict) -> str:
    waited = f", {run['waited_s']:.0f} s waited for load average < 0.7" if run.get("waited_s") else ""
    return (f"`{run['command']}`, {run['started']}, commit {run['machine']['commit']}, "
            f"{run['elapsed_s'] / 60:.1f} min{waited}, {run['runs']} × {run['duration_s']:g} s per point")


def runs_of(data: dict) -> list[dict]:
    """The runs whose results the data holds, oldest first, each with the experiments it measured."""
    return data.get("measured_by") or [{**data, "experiments": data.get("experiments") or []}]


def run_of(data: dict, exp: str) -> dict | None:
    return next((r for r in runs_of(data) if exp in r["experiments"]), None)


def provenance(data: dict, exp: str) -> list[str]:
    """A section's line naming the run that measured it, when the results merge several runs."""
    run = run_of(data, exp)
    if run is None or len(runs_of(data)) < 2:
        return []
    return [f"*Measured by {run_line(run)}.*", ""]


def header(data: dict) -> list[str]:
    runs = runs_of(data)
    if len(runs) == 1:
        L = [f"Run: {run_line(runs[0])}.", "", f"Machine: {machine_line(runs[0])}.", ""]
    else:
        L = [f"- **{', '.join(run['experiments'])}**: {run_line(run)}. Machine: {machine_line(run)}." for run in runs]
        L += [""]
    if any(run.get("quick") for run in runs):
        L += ["> Quick run (`--quick`): one run of 0.5 s per point.", ""]
    return L


def readme_section(res: Results, made: list[tuple[str, str]], rel: str) -> str:
    """README.md's `## Benchmarks` section: the targets, the echo cost table and the plots."""
    lines = ["## Benchmarks", "",
             "`bench/run.sh` (`--help`) installs the Debian packages it needs, builds `build-bench/` (release), runs "
             f"the loopback experiments and writes [{rel}/report.md]({rel}/report.md), its plots and this section. "
             "`--quick` is a smoke test that writes to `build-bench/bench-quick/` only; `--profile` runs the profiler "
             "(perf, strace, callgrind, massif) instead.", ""]
    lines += header(res.data)
    lines += ["### Targets", ""] + targets_table(res) + [""]
    table = echo_table(res)
    if table:
        lines += ["### Echo cost, lockstep", "",
                  "CPU from the grid experiment, system calls from the uring experiment; medians, ratios per round.",
                  ""] + table + [""]
    for name, caption in made:
        lines += [f"![{caption}]({rel}/{name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def render(res: Results, made: list[tuple[str, str]]) -> str:
    data = res.data
    clk = data["machine"]["clk_tck"]
    counts = next((r.get("counts") for r in res.recs if r["exp"] == "instructions"), None) or [5000, 25000]
    L: list[str] = ["# echoplex benchmark report", ""] + header(data)
    L += ["## Method", "",
          "- Rounds: every point runs `--runs` times; a round runs each server of a point back to back, in an order "
          "rotated each round. Cells: median (min–max) over the rounds; a ratio is taken per round, then summarised "
          "the same way.",
          f"- CPU per message: the server's utime+stime (+ reaped children's: socat) from `/proc/PID/stat` over the "
          f"load, ÷ messages testecho verified as echoed; tick 1/{clk} s; the load's connection setup and teardown "
          "included. Server on one CPU, load on the other.",
          "- System calls per message (uring experiment): after each timed load, a second load of half its length on "
          f"the same server, its calls counted on the server alone with {data.get('syscall_counter') or 'perf or strace'}, "
          "÷ messages echoed in it; calls made once per connection included.",
          f"- Instructions per message: `valgrind --tool=callgrind` on the server, testecho `-s 64 -c 8 -P 1 -n N` for "
          f"N = {counts[0]:,} and {counts[1]:,}; (Ir(N₂) − Ir(N₁)) ÷ (N₂ − N₁), Ir from the output file's `totals:` line.",
          "- Memory per idle connection: `VmRSS` after opening N idle connections minus before, ÷ N (socat: its "
          "process tree, N = 100; PSS beside).",
          "- Load: `testecho --json`, every byte verified. Lockstep `-P 1`; pipelined `-P 16` (64 B, 1 KiB), `-P 4` "
          "(16 KiB), `-P 2` (1 MiB); 1 MiB × 1,000 connections not run. Peers also with uvloop's `echoclient.py` "
          f"(`{data.get('uvloop_examples') or 'not found'}`, 3 workers, lengths checked only).",
          "- Servers: " + "; ".join(f"{s['label']} `{s['command']}`" for _, s in sorted(
              data["servers"].items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER))) + ".",
          ""]
    L += ["## Targets", ""] + targets_table(res) + [""]
    table = echo_table(res)
    if table:
        L += ["## Echo cost, lockstep: bare epoll loop and echoplex epoll", "",
              "CPU from the grid experiment, system calls from the uring experiment; medians, ratios per round.", ""]
        L += table + [""]
    L += grid_section(res, made) + idle_section(res, made) + peers_section(res, made) + memory_section(res, made)
    L += uring_section(res, made) + instructions_section(res)
    L += ["## Skipped and failed", ""]
    skipped = list(data.get("skipped") or [])
    skipped.append("select beyond FD_SETSIZE (1024 descriptors): 5,000 and 10,000 idle, and the memory experiment")
    L += [f"- {s}" for s in skipped]
    for r in res.failed:
        if r["exp"] == "memory" and r["server"] == "select":
            continue
        L.append(f"- failed: {r['exp']} {r['server']} {r.get('client') or ''} "
                 f"{human_size(r['size']) if r.get('size') else ''} c={r.get('connections')} P={r.get('pipeline')} "
                 f"idle={r.get('idle')} round {r['round']}: {r.get('error')}")
    for r in res.recs:
        if r.get("syscall_error"):
            L.append(f"- system calls not counted: {r['exp']} {r['server']} {human_size(r['size'])} "
                     f"c={r['connections']} round {r['round']}: {r['syscall_error']}")
    return "\n".join(L).rstrip() + "\n"


def plot_link(made, name: str) -> list[str]:
    for n, caption in made:
        if n == name:
            return [f"![{caption}]({n})", ""]
    return []


def detail_row(res: Results, rounds: dict, head: list[str]) -> str:
    def med(field: str) -> str:
        v = res.values(rounds, field)
        return num(statistics.median(v)) if v else "—"

    rss = res.values(rounds, "peak_rss_kib")
    return ("| " + " | ".join(head) + " | " + " | ".join([
        med("cpu_us_per_msg"), spread(res.values(rounds, "rps")), med("mib_per_s"),
        med("latency_ms.p50"), med("latency_ms.p90"), med("latency_ms.p99"), med("latency_ms.p99_9"),
        num(statistics.median(rss) / 1024) if rss else "—"]) + " |")


DETAIL_HEAD = "µs/msg | messages/s | MiB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | peak RSS MiB |"


def grid_section(res: Results, made) -> list[str]:
    if not res.servers("grid"):
        return []
    L = ["## Grid: backends × sizes × connections", ""] + provenance(res.data, "grid") + [
         "Server CPU µs per message, median (min–max); ratios per round.", ""]
    L += plot_link(made, "cpu_per_message.svg")
    conns_list = sorted({r["connections"] for r in res.recs if r["exp"] == "grid"})
    uring = "io_uring" in res.servers("grid")
    for size in res.sizes("grid"):
        L += [f"### {human_size(size)}", "",
              "| connections | pipeline | bare µs/msg | epoll µs/msg | epoll ÷ bare | "
              + ("io_uring ÷ epoll | " if uring else "") + "poll ÷ epoll | select ÷ epoll |",
              "| ---: | ---: | ---: | ---: | ---: | " + ("---: | " if uring else "") + "---: | ---: |"]
        for conns in conns_list:
            for pipeline in (1, PIPELINE[size]):
                rounds = {k: res.grid(k, size, conns, pipeline) for k in ("bare", "epoll", "io_uring", "poll", "select")}
                if not any(rounds.values()):
                    continue
                cells = [spread(res.values(rounds["bare"], "cpu_us_per_msg")),
                         spread(res.values(rounds["epoll"], "cpu_us_per_msg")),
                         spread(res.ratios(rounds["epoll"], rounds["bare"]), ratio_fmt)]
                if uring:
                    cells.append(spread(res.ratios(rounds["io_uring"], rounds["epoll"]), ratio_fmt))
                cells += [spread(res.ratios(rounds["poll"], rounds["epoll"]), ratio_fmt),
                          spread(res.ratios(rounds["select"], rounds["epoll"]), ratio_fmt) if rounds["select"]
                          else "— (FD_SETSIZE)" if conns + 16 > 1024 else "—"]
                L.append(f"| {conns:,} | {pipeline} | " + " | ".join(cells) + " |")
        L += [""]
    L += ["### Throughput, latency, memory (medians)", "",
          "| size | conns | P | server | " + DETAIL_HEAD,
          "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in res.sizes("grid"):
        for conns in conns_list:
            for pipeline in (1, PIPELINE[size]):
                for key in res.servers("grid"):
                    rounds = res.grid(key, size, conns, pipeline)
                    if rounds:
                        L.append(detail_row(res, rounds, [human_size(size), f"{conns:,}", str(pipeline), res.label(key)]))
    return L + [""]


def idle_section(res: Results, made) -> list[str]:
    servers = res.servers("idle")
    if not servers:
        return []
    idles = sorted({r["idle"] for r in res.recs if r["exp"] == "idle"})
    L = ["## Idle connections", ""] + provenance(res.data, "idle") + [
         "8 active lockstep connections, 64 B, beside N idle connections opened first and held silent. Server CPU µs "
         "per message, and ÷ the same server with none idle (per round).", ""]
    L += plot_link(made, "idle_curve.svg")
    L += ["| idle | " + " | ".join(f"{res.label(s)} µs/msg" for s in servers) + " | "
          + " | ".join(f"{res.label(s)} ÷ none" for s in servers) + " |",
          "| ---: | " + " | ".join("---:" for _ in servers) + " | " + " | ".join("---:" for _ in servers) + " |"]
    for idle in idles:
        vals, ratios = [], []
        for key in servers:
            rounds = res.get("idle", key, "testecho", 64, 8, 1, idle)
            if not rounds:
                vals.append("— (FD_SETSIZE)" if key == "select" else "—")
                ratios.append("—")
                continue
            vals.append(spread(res.values(rounds, "cpu_us_per_msg")))
            ratios.append(spread(res.ratios(rounds, res.get("idle", key, "testecho", 64, 8, 1, 0)), ratio_fmt))
        L.append(f"| {idle:,} | " + " | ".join(vals) + " | " + " | ".join(ratios) + " |")
    L += ["", "| idle | server | messages/s | p50 ms | p99 ms | peak RSS MiB |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for idle in idles:
        for key in servers:
            rounds = res.get("idle", key, "testecho", 64, 8, 1, idle)
            if rounds:
                p50 = res.values(rounds, "latency_ms.p50")
                p99 = res.values(rounds, "latency_ms.p99")
                rss = res.values(rounds, "peak_rss_kib")
                L.append(f"| {idle:,} | {res.label(key)} | {spread(res.values(rounds, 'rps'))} | {num(statistics.median(p50))} | "
                         f"{num(statistics.median(p99))} | {num(statistics.median(rss) / 1024)} |")
    return L + [""]


def peers_section(res: Results, made) -> list[str]:
    servers = res.servers("peers")
    if not servers:
        return []
    L = ["## Peers", ""] + provenance(res.data, "peers") + [
         "testecho: 100 lockstep connections; echoclient.py: 3 worker processes, blocking ping-pong. Server CPU µs per "
         "message, median (min–max), and in bold ÷ echoplex epoll (per round).", ""]
    L += plot_link(made, "peers.svg")
    for client, conns in (("testecho", 100), ("echoclient", 3)):
        if not any(r["exp"] == "peers" and r["client"] == client for r in res.recs):
            continue
        L += [f"### {client}", "",
              "| size | " + " | ".join(res.label(s) for s in servers) + " |",
              "| --- | " + " | ".join("---:" for _ in servers) + " |"]
        for size in res.sizes("peers"):
            e = res.get("peers", "epoll", client, size, conns, 1, 0)
            cells = []
            for key in servers:
                rounds = res.get("peers", key, client, size, conns, 1, 0)
                if not rounds:
                    cells.append("—")
                    continue
                cell = spread(res.values(rounds, "cpu_us_per_msg"))
                rs = res.ratios(rounds, e) if key != "epoll" else []
                if rs:
                    cell += f"<br>**{spread(rs, ratio_fmt)}**"
                cells.append(cell)
            L.append(f"| {human_size(size)} | " + " | ".join(cells) + " |")
        L += [""]
        if client == "testecho":
            L += ["| size | server | " + DETAIL_HEAD,
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for size in res.sizes("peers"):
                for key in servers:
                    rounds = res.get("peers", key, client, size, conns, 1, 0)
                    if rounds:
                        L.append(detail_row(res, rounds, [human_size(size), res.label(key)]))
        else:
            L += ["| size | server | messages/s | peak RSS MiB |", "| --- | --- | ---: | ---: |"]
            for size in res.sizes("peers"):
                for key in servers:
                    rounds = res.get("peers", key, client, size, conns, 1, 0)
                    if rounds:
                        rss = res.values(rounds, "peak_rss_kib")
                        L.append(f"| {human_size(size)} | {res.label(key)} | {spread(res.values(rounds, 'rps'))} | "
                                 f"{num(statistics.median(rss) / 1024)} |")
        L += [""]
    return L


def memory_section(res: Results, made) -> list[str]:
    servers = res.servers("memory")
    if not servers:
        return []
    L = ["## Memory per idle connection", ""] + provenance(res.data, "memory")
    L += plot_link(made, "memory_per_idle.svg")
    L += ["| server | idle connections | RSS before, MiB | RSS after, MiB | bytes per idle connection |",
          "| --- | ---: | ---: | ---: | ---: |"]
    for key in servers:
        rounds = {k: v for (exp, s, *_), rs in res.by_key.items() if exp == "memory" and s == key for k, v in rs.items()}
        n = next(iter(rounds.values()))["idle"]
        per = spread(res.values(rounds, "bytes_per_conn"), lambda x: f"{x:,.0f}")
        pss = res.values(rounds, "pss_bytes_per_conn")
        if pss:
            per += f" (PSS {statistics.median(pss):,.0f})"
        L.append(f"| {res.label(key)} | {n:,} | {num(statistics.median(res.values(rounds, 'rss0_kib')) / 1024)} | "
                 f"{num(statistics.median(res.values(rounds, 'rss1_kib')) / 1024)} | {per} |")
    return L + [""]


def uring_section(res: Results, made) -> list[str]:
    points = uring_points(res)
    if not points:
        return []
    keys = [k for k in ("io_uring", "epoll", "bare") if k in res.servers("uring")]
    L = ["## io_uring, echoplex epoll and the bare loop (uring experiment)", ""] + provenance(res.data, "uring") + [
         "Lockstep. Server CPU µs per message and system calls per echoed message, median (min–max); ratios per "
         "round. “w/o conn.”: without the calls made once per connection (accept, setsockopt, getpeername, shutdown, "
         "close).", ""]
    L += plot_link(made, "uring.svg")
    head = ["size", "conns"] + [f"{res.label(k)} µs/msg" for k in keys]
    if "io_uring" in keys:
        head += [f"io_uring ÷ {k}" for k in ("epoll", "bare") if k in keys]
    head += [f"{res.label(k)} calls/msg" for k in keys]
    if "io_uring" in keys:
        head += ["io_uring calls/msg w/o conn."]
    L += ["| " + " | ".join(head) + " |", "| --- | ---: | " + " | ".join("---:" for _ in head[2:]) + " |"]
    for size, conns in points:
        r = {k: res.uring(k, size, conns) for k in keys}
        cells = [spread(res.values(r[k], "cpu_us_per_msg")) for k in keys]
        if "io_uring" in keys:
            cells += [spread(res.ratios(r["io_uring"], r[k]), ratio_fmt) for k in ("epoll", "bare") if k in keys]
        cells += [spread(res.values(r[k], "syscalls_per_msg")) for k in keys]
        if "io_uring" in keys:
            cells.append(spread(res.values(r["io_uring"], "echo_syscalls_per_msg")))
        L.append(f"| {human_size(size)} | {conns:,} | " + " | ".join(cells) + " |")
    L += ["", "Timed loads, medians:", "",
          "| size | conns | " + " | ".join(f"{res.label(k)} messages/s" for k in keys) + " | "
          + " | ".join(f"{res.label(k)} p99 ms" for k in keys) + " |",
          "| --- | ---: | " + " | ".join("---:" for _ in keys * 2) + " |"]
    for size, conns in points:
        r = {k: res.uring(k, size, conns) for k in keys}

        def med(rounds: dict, field: str) -> str:
            v = res.values(rounds, field)
            return num(statistics.median(v)) if v else "—"

        L.append(f"| {human_size(size)} | {conns:,} | " + " | ".join(
            [med(r[k], "rps") for k in keys] + [med(r[k], "latency_ms.p99") for k in keys]) + " |")
    return L + [""]


def instructions_section(res: Results) -> list[str]:
    servers = res.servers("instructions")
    if not servers:
        return []
    L = ["## User-space instructions per message (instructions experiment)", ""] + provenance(res.data, "instructions")
    L += ["callgrind, 64 B, 8 lockstep connections. Ir: total instructions of each run.", "",
          "| server | round | messages N₁ | Ir(N₁) | messages N₂ | Ir(N₂) | Ir per message |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in servers:
        for rnd, r in sorted(res.instructions(key).items()):
            L.append(f"| {res.label(key)} | {rnd} | {r['ir_messages'][0]:,} | {r['ir'][0]:,} | {r['ir_messages'][1]:,} | "
                     f"{r['ir'][1]:,} | {r['ir_per_msg']:,.0f} |")
    return L + [""]
