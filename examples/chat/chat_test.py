#!/usr/bin/env python3
"""chat_server end to end: the real binary on an ephemeral loopback port, driven by plain sockets.

Checks that a line reaches every other client (not its sender) with the sender's prefix, that a
partial line waits for its LF, that joins and leaves are announced, that a line longer than the
input limit closes its client, that a client that never reads holds the sender (the server's
memory stays bounded while 20 MiB of lines are sent) and gets every line once it reads, that the
sender resumes when such a client leaves instead, and that SIGTERM drains and exits 0. Every wait is a poll with a deadline; no sleeps.

Usage: chat_test.py CHAT_SERVER_BINARY   (CHAT_TEST_SANITIZED=1: report the RSS, don't bound it)
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

STEP_TIMEOUT = 30.0  # seconds for any one wait; a healthy run takes milliseconds per step
FLOOD_BYTES = 20 * 1024 * 1024
LINE_BYTES = 100
# The sender counts as paused once the kernel has taken none of its bytes for this long while
# the reading client has been kept drained. Only a bound on how long to look: a pause that is
# really CPU starvation makes the checks below weaker, never wrong.
QUIET_PERIOD = 1.5
# Peak RSS growth allowed during the flood. What the server holds for the non-reader is its high
# watermark (256 KiB) plus one read budget of lines (64 KiB, ~75 KiB prefixed); the reader's
# queue, the sender's input (<= 64 KiB input limit) and a batch's strings add about as much
# again, and the block pool keeps at most what was in use: about 1 MiB in all, 2 with malloc's
# slack. Without backpressure the server would have to keep what the non-reader's kernel buffers
# cannot (20 MiB minus at most 4 MiB of tcp_wmem), so 8 MiB separates the two clearly.
RSS_GROWTH_LIMIT = 8 * 1024 * 1024


def deadline(seconds=STEP_TIMEOUT):
    return time.monotonic() + seconds


def fail(message):
    raise AssertionError(message)


class Client:
    def __init__(self, port, rcvbuf=None, sndbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.name = "%s:%d" % self.sock.getsockname()
        self.buffer = b""

    def send_all(self, data):
        end = deadline()
        view = memoryview(data)
        while view:
            if time.monotonic() > end:
                fail(f"{self.name}: could not send {len(view)} bytes in time")
            select.select([], [self.sock], [], end - time.monotonic())
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                pass

    def fill(self, timeout):
        """Reads what arrives within `timeout`; False on EOF."""
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not readable:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        self.buffer += data
        return bool(data)

    def lines(self, count):
        """The next `count` lines, without their LF."""
        end = deadline()
        while self.buffer.count(b"\n") < count:
            if time.monotonic() > end:
                fail(f"{self.name}: waited for {count} lines, have {self.buffer!r}")
            if not self.fill(end - time.monotonic()):
                fail(f"{self.name}: connection closed while waiting for lines; have {self.buffer!r}")
        *got, self.buffer = self.buffer.split(b"\n", count)
        return [line.decode() for line in got]

    def line(self):
        return self.lines(1)[0]

    def wait_closed(self):
        end = deadline()
        while self.fill(end - time.monotonic()):
            if time.monotonic() > end:
                fail(f"{self.name}: the server did not close the connection")

    def close(self):
        self.sock.close()


def vm_status(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    fail(f"no {field} in /proc/{pid}/status")


def start_server(binary):
    proc = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE)
    end = deadline()
    out = b""
    while b"\n" not in out:
        if time.monotonic() > end or proc.poll() is not None:
            fail(f"no startup line from {binary} (exit {proc.poll()}): {out!r}")
        if select.select([proc.stdout], [], [], end - time.monotonic())[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    line = out.decode().splitlines()[0]
    print("server:", line)
    match = re.fullmatch(r"chat_server: listening on 127\.0\.0\.1:(\d+) \(chat\); backend \w+", line)
    if not match:
        fail(f"unexpected startup line {line!r}")
    return proc, int(match.group(1))


def join(port, members, **options):
    """Connects a client and waits until every member saw it join (so it is in the room)."""
    client = Client(port, **options)
    for member in members:
        expect(member.line(), f"* {client.name} joined")
    return client


def expect(got, wanted):
    if got != wanted:
        fail(f"expected {wanted!r}, got {got!r}")


def check_lines(port, a, b, c):
    a.send_all(b"hello\n")
    expect(b.line(), f"[{a.name}] hello")
    expect(c.line(), f"[{a.name}] hello")
    # The sender hears nothing of its own line: the next thing it hears is B's.
    b.send_all(b"after\n")
    expect(a.line(), f"[{b.name}] after")
    expect(c.line(), f"[{b.name}] after")
    print("a line reaches the two others, with the sender's prefix, not the sender")

    # A partial line waits. Loopback has queued A's bytes at the server by the time send()
    # returns, so the server reads them no later than in the batch that carries B's next line:
    # once C has that line, the partial one would have been delivered if it were going to be.
    a.send_all(b"par")
    b.send_all(b"sync\n")
    expect(c.line(), f"[{b.name}] sync")
    expect(a.line(), f"[{b.name}] sync")
    a.send_all(b"tial\n")
    expect(b.line(), f"[{a.name}] partial")
    expect(c.line(), f"[{a.name}] partial")
    print("a partial line is delivered only once its LF arrives")

    # A line that never ends is closed at the input limit (64 KiB), and its leave announced.
    d = join(port, [a, b, c])
    d.sock.setblocking(True)
    try:
        d.sock.sendall(b"x" * (256 * 1024))
    except (BrokenPipeError, ConnectionResetError):
        pass
    d.sock.setblocking(False)
    d.wait_closed()
    for member in (a, b, c):
        expect(member.line(), f"* {d.name} left")
    d.close()
    print("an endless line closes its client at the input limit; the leave is announced")


def flood(pid, sender, readers, idle, idle_leaves=False):
    """`sender` sends FLOOD_BYTES of lines past `idle`, which does not read, until the sender is
    stopped; then `idle` reads (or, with `idle_leaves`, closes) and `readers` and `idle` must get
    every line, in order."""
    count = FLOOD_BYTES // LINE_BYTES
    data = b"".join(b"%08d " % i + b"x" * (LINE_BYTES - 10) + b"\n" for i in range(count))
    prefix = f"[{sender.name}] ".encode()
    wanted = b"".join(prefix + data[i:i + LINE_BYTES] for i in range(0, len(data), LINE_BYTES))
    left = f"* {idle.name} left\n".encode()  # reaches `readers` somewhere among the lines

    base_rss = vm_status(pid, "VmRSS")
    view = memoryview(data)
    sent = 0
    received = {client: bytearray() for client in readers + [idle]}

    def pump(reading, timeout):
        """One wait: reads what `reading` clients have and sends what the sender's socket takes."""
        nonlocal sent
        writers = [sender.sock] if sent < len(data) else []
        readable, writable, _ = select.select([c.sock for c in reading], writers, [], max(0.0, timeout))
        for client in reading:
            if client.sock in readable:
                try:
                    data_in = client.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data_in:
                    fail(f"{client.name}: closed by the server during the flood")
                received[client] += data_in
        if writable:
            try:
                n = sender.sock.send(view[sent:sent + (1 << 20)])
            except BlockingIOError:
                n = 0
            sent += n
            return n > 0
        return False

    # Phase 1: `idle` does not read. The sender must come to a stop.
    end = deadline()
    last_progress = time.monotonic()
    while time.monotonic() - last_progress < QUIET_PERIOD and sent < len(data):
        if time.monotonic() > end:
            fail(f"the sender never paused: sent {sent} of {len(data)} bytes")
        if pump(readers, QUIET_PERIOD - (time.monotonic() - last_progress)):
            last_progress = time.monotonic()
    peak_growth = vm_status(pid, "VmHWM") - base_rss
    print(f"stopped: the sender got {sent / 2**20:.1f} of {len(data) / 2**20:.0f} MiB into the kernel;"
          f" each reader has {len(received[readers[0]]) / 2**20:.1f} MiB; server RSS {base_rss / 2**20:.1f} MiB"
          f" before, peak growth {peak_growth / 2**20:.2f} MiB (limit {RSS_GROWTH_LIMIT / 2**20:.0f} MiB)")
    if sent == len(data):
        fail(f"the sender was never paused: all {sent} bytes were taken while a client did not read")
    if os.environ.get("CHAT_TEST_SANITIZED") == "1":
        print("sanitized build: the RSS bound is not checked (shadow memory and quarantine)")
    elif peak_growth > RSS_GROWTH_LIMIT:
        fail(f"server RSS grew by {peak_growth} bytes while a client did not read")

    # Phase 2: `idle` reads, or leaves. Either way the sender resumes and every line arrives.
    if idle_leaves:
        idle.close()
        reading, complete = readers, {c: len(wanted) + len(left) for c in readers}
    else:
        reading, complete = readers + [idle], {c: len(wanted) for c in readers + [idle]}
    end = deadline(60)
    while sent < len(data) or any(len(received[c]) < n for c, n in complete.items()):
        if time.monotonic() > end:
            fail(f"flood did not complete: sent {sent} of {len(data)}, received "
                 + ", ".join(f"{len(received[c])} of {n}" for c, n in complete.items()))
        pump(reading, end - time.monotonic())
    for client in reading:
        got = received[client]
        if idle_leaves:
            at = got.find(left)
            if at < 0 or (at > 0 and got[at - 1] != ord("\n")):
                fail(f"{client.name}: no line announcing that {idle.name} left")
            del got[at:at + len(left)]
        if got != wanted:
            at = next(i for i in range(min(len(got), len(wanted))) if got[i] != wanted[i])
            fail(f"{client.name}: wrong bytes at offset {at}: {bytes(got[at:at + 120])!r}")
    if idle_leaves:
        print(f"released: the non-reader left, and all {count} lines reached the readers")
    else:
        print(f"resumed: the others got all {count} lines ({len(wanted)} bytes) once the idle client read")


def main():
    binary = sys.argv[1]
    proc, port = start_server(binary)
    clients = []
    try:
        a = Client(port, sndbuf=64 * 1024)
        b = join(port, [a])
        c = join(port, [a, b], rcvbuf=64 * 1024)
        clients = [a, b, c]
        print("joins are announced to those already in the room")
        check_lines(port, a, b, c)
        flood(proc.pid, sender=a, readers=[b], idle=c)
        e = join(port, [a, b, c], rcvbuf=64 * 1024)
        flood(proc.pid, sender=a, readers=[b, c], idle=e, idle_leaves=True)
        expect(a.line(), f"* {e.name} left")

        proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.wait_closed()  # drained: the server's FIN after all that was queued
            client.close()
        status = proc.wait(timeout=STEP_TIMEOUT)
        if status != 0:
            fail(f"exit status {status} after SIGTERM")
        print("SIGTERM: drained and exited 0")
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
