#!/usr/bin/env python3
"""Writes the completion-mode seeds of tests/fuzz/corpus/ (uring-*), each a short script of
turns and answers in the input format of completion_harness.cpp and scripted_ring.cpp.

A turn's picks name an operation by its place among those in flight, in submission order (0 is
the oldest); answers follow ScriptedRing::collect_receive and collect_send. A cancel the kernel
meets in a wait takes one byte (3: it raced its target; else: it found it) when its target is
still in flight. Replay one with a trace: ECHOPLEX_FUZZ_TRACE=1 build/tests/fuzz/connection_fuzz_replay FILE
Usage: tests/fuzz/uring_seeds.py [CORPUS_DIR]   (default: the corpus beside this script)
"""
import sys
from pathlib import Path


def u16(v):
    return bytes([v >> 8, v & 0xFF])


def header(stamp=False, seed=0, high=32768, low=8192, read=16384, write=4096):
    flags = 0x06 | (1 if stamp else 0)  # bits 1-2 = 3: io_uring, bit 3 clear: scripted completions
    return bytes([flags, seed]) + u16(high - 1) + u16(low) + u16(read - 1) + u16(write - 1)


# ---- steps ----
def turn(pick):  # a turn collecting one completion
    return bytes([0]) + pick


def batch(*picks):  # a turn collecting two to five
    return bytes([6, len(picks) - 2]) + b"".join(picks)


def quiet(*cancels):  # a turn collecting none (posted events only); a byte per cancel it meets
    return bytes([10]) + b"".join(cancels)


def drain():
    return bytes([12, 0])


def close():
    return bytes([13, 0])


def teardown():
    return bytes([14, 0])


# ---- answers: a pick (the operation's place among those in flight) and what it says ----
def forced(i):  # an operation whose answer is given: cancelled, or the client is gone
    return bytes([i])


def full(i):  # a receive of a whole 16 KiB buffer
    return bytes([i, 0])


def short(i, n):  # a receive of 1..256 bytes
    return bytes([i, 2, n - 1])


def ends(i, n):  # a receive of 1..256 bytes that ends the multishot receive
    return bytes([i, 6, n - 1])


def enobufs(i):
    return bytes([i, 7])


def eof(i):
    return bytes([i, 9])


def reset(i):
    return bytes([i, 10])


def sent(i):  # a send taken in full
    return bytes([i, 0])


def part(i, b):  # a send of which 1 + b % offered bytes were taken
    return bytes([i, 6, b])


def found(i):  # a cancel met now, finding its target
    return bytes([i, 0])


def raced(i):  # a cancel met now, too late to stop its target (-EALREADY)
    return bytes([i, 3])


def late(i):  # a cancel already met, or whose target had completed (-ENOENT)
    return bytes([i])


SEEDS = {
    # Multishot receives echoed through sends taken in full; reading pauses at the high
    # watermark, which cancels the receive, and the client's EOF arrives before that cancel.
    "uring-echo": header()
    + turn(full(0))  # [recv, send]
    + turn(sent(1))
    + batch(short(0, 100), sent(1), sent(1))
    + batch(full(0), full(0), sent(1), full(0))
    + turn(eof(0)),
    # A send taken in part cancels the multishot receive (the cancel finds it); while a send is
    # in flight the receives are single-shot, and one finds the ring dry.
    "uring-partial-send": header(read=65536)
    + turn(full(0))  # [recv, send]
    + turn(part(1, 99))  # 100 of 4096: [recv, cancel, send]
    + quiet(b"\x00")  # the kernel meets the cancel, which finds the receive
    + batch(forced(0), late(0), sent(0))  # then [single recv, send]
    + batch(short(0, 50), sent(1))
    + batch(enobufs(0), sent(1))
    + turn(sent(1)),
    # A cancel that races its receive (-EALREADY): the cancel completes first, then the
    # receive's own last completion; the next receive is single-shot behind a send.
    "uring-cancel-race": header(read=65536)
    + turn(full(0))
    + turn(part(1, 9))  # [recv, cancel, send]
    + quiet(b"\x03")  # raced
    + batch(late(1), ends(0, 20))  # then [send, single recv]
    + batch(sent(0), full(0)),
    # close_now() with a receive and a send in flight: both are cancelled. The send completes
    # in part before its cancel reaches the kernel (which then finds nothing); the receive's
    # cancel completes before the receive's -ECANCELED; on_closed waits for the last of them.
    "uring-close-in-flight": header(read=65536, write=8192)
    + turn(full(0))  # [recv, send]
    + close()  # [recv, send, cancel recv, cancel send]
    + batch(part(1, 5), found(1), forced(0))
    + turn(late(0)),
    # The connection destroyed with a receive, a send and a cancel in flight (a server's
    # teardown): cancel_now first, and every late completion is dropped by the loop.
    "uring-teardown": header(write=1024)
    + turn(full(0))
    + turn(part(1, 7))  # [recv, cancel, send]
    + teardown(),
    # The stamped reply with a small high watermark: reading pauses and the receive is
    # cancelled; sends drain the queue to the low watermark and a single-shot receive is armed;
    # it finds the ring dry once; a receive's reset closes the connection with a send in flight.
    "uring-stamp-backpressure": header(stamp=True, high=512, low=128, read=200, write=128)
    + turn(short(0, 150))  # [recv, send]
    + turn(short(0, 150))
    + turn(short(0, 150))  # paused: [recv, send, cancel]
    + batch(sent(1), found(1), forced(0))  # [send]
    + turn(sent(0))
    + turn(sent(0))
    + turn(sent(0))  # resumed: [send, single recv]
    + batch(enobufs(1), sent(0))  # [single recv]
    + turn(short(0, 30))  # [send, single recv]
    + turn(reset(1)),
    # drain(): the receive is cancelled, the output delivered, FIN; lingering arms a receive
    # again, whose bytes are discarded until the client's EOF closes the connection as drained.
    "uring-drain": header()
    + turn(short(0, 200))  # [recv, send]
    + drain()  # [recv, send, cancel]
    + batch(sent(1), found(1))  # FIN: [recv]
    + turn(forced(0))  # [recv]
    + batch(short(0, 40), full(0), eof(0)),
    # A receive's reset arrives behind bytes the read budget leaves waiting; the send fails
    # (EPIPE) before the connection reads that far: it closes as 'peer went away'.
    "uring-reset-behind-bytes": header(read=100)
    + batch(full(0), reset(0))
    + batch(late(1), forced(0)),
}


def main():
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus"
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
        print(f"{corpus / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
