#!/usr/bin/env python3
"""Installs this build into a temporary tree and builds examples/ against it as an outside user
would: through pkg-config's echoplex.pc, with nothing from the source tree but examples/. Then
runs the chat server built that way once: it must print its startup line, pass a line between two
clients, and exit 0 on SIGTERM. Everything is written under one temporary directory, removed at
the end (meson install also writes its usual meson-logs/install-log.txt in the build dir).

Usage: install_examples_test.py --source S --build B --meson M --ninja N --pkg-config P
                                --cxx "CXX..." --sanitize none|address,...
"""
import argparse
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

STEP_TIMEOUT = 30.0


def run(cmd, env=None, timeout=120):
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        raise AssertionError(f"failed ({done.returncode}): {shlex.join(cmd)}")
    print(f"{time.monotonic() - started:5.1f} s  {shlex.join(cmd)}")
    return done.stdout


def find_file(root, name):
    for folder, _, files in os.walk(root):
        if name in files:
            return os.path.join(folder, name)
    raise AssertionError(f"{name} was not installed under {root}")


def check_pkg_config(args, env, destdir):
    flags = run([args.pkg_config, "--cflags", "--libs", "echoplex"], env=env).split()
    print("pkg-config --cflags --libs echoplex:", " ".join(flags))
    includes = [f[2:] for f in flags if f.startswith("-I")]
    if not includes or not all(i.startswith(destdir) for i in includes):
        raise AssertionError(f"include directories outside the installed tree: {includes}")
    libs = [f for f in flags if f.startswith("-l")]
    # Static libraries: each tier before the ones it uses, fmt last.
    order = ["-lechoplex_services", "-lechoplex_net", "-lechoplex_io", "-lfmt"]
    if [lib for lib in libs if lib in order] != order:
        raise AssertionError(f"libraries missing or out of order: {libs}")
    return includes[0]


def check_headers(source, include_dir):
    """Every header of include/echoplex is installed, in its tier folder, with config.h."""
    wanted = {"echoplex/config.h"}
    for folder, _, files in os.walk(os.path.join(source, "include")):
        wanted |= {os.path.relpath(os.path.join(folder, f), os.path.join(source, "include"))
                   for f in files if f.endswith(".hpp")}
    installed = set()
    for folder, _, files in os.walk(os.path.join(include_dir, "echoplex")):
        installed |= {os.path.relpath(os.path.join(folder, f), include_dir) for f in files}
    if installed != wanted:
        raise AssertionError(f"headers: missing {sorted(wanted - installed)}, extra {sorted(installed - wanted)}")
    print(f"{len(installed)} headers installed under {include_dir}")


def check_compile_commands(build, source, destdir):
    """The example was compiled with the installed headers, not the source tree's."""
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = [entry["command"] for entry in json.load(f)]
    own_include = os.path.join(source, "include")
    if not any(destdir in c for c in commands) or any(own_include in c for c in commands):
        raise AssertionError(f"unexpected include paths: {commands}")


def read_line(sock, buffer, end):
    while b"\n" not in buffer:
        if time.monotonic() > end:
            raise AssertionError(f"no line in time; have {buffer!r}")
        if select.select([sock], [], [], end - time.monotonic())[0]:
            data = sock.recv(4096)
            if not data:
                raise AssertionError(f"closed; have {buffer!r}")
            buffer += data
    line, _, rest = buffer.partition(b"\n")
    return line.decode(), rest


def run_chat(binary):
    proc = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE)
    try:
        end = time.monotonic() + STEP_TIMEOUT
        out = b""
        while b"\n" not in out:
            if time.monotonic() > end or proc.poll() is not None:
                raise AssertionError(f"no startup line (exit {proc.poll()}): {out!r}")
            if select.select([proc.stdout], [], [], end - time.monotonic())[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        line = out.decode().splitlines()[0]
        print("installed-built chat:", line)
        match = re.fullmatch(r"chat_server: listening on 127\.0\.0\.1:(\d+) \(chat\); backend \w+", line)
        if not match:
            raise AssertionError(f"unexpected startup line {line!r}")
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port)) as a, socket.create_connection(("127.0.0.1", port)) as b:
            joined, _ = read_line(a, b"", end)  # b is in the room once a hears it join
            if not joined.endswith(" joined"):
                raise AssertionError(f"unexpected {joined!r}")
            a.sendall(b"hi\n")
            got, _ = read_line(b, b"", end)
            name = "%s:%d" % a.getsockname()
            if got != f"[{name}] hi":
                raise AssertionError(f"unexpected {got!r}")
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=STEP_TIMEOUT)
        if status != 0:
            raise AssertionError(f"exit status {status} after SIGTERM")
        print("it passed a line between two clients and exited 0 on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser()
    for name in ("source", "build", "meson", "ninja", "pkg-config", "cxx", "sanitize"):
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="echoplex-install-test-")
    try:
        destdir = os.path.join(tmp, "root")
        run([args.meson, "install", "-C", args.build, "--no-rebuild", "--quiet", "--destdir", destdir])
        pc = find_file(destdir, "echoplex.pc")
        # The .pc names the configured prefix (/usr/local, say); the sysroot puts its paths
        # under destdir, as if the tree were installed there.
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc), PKG_CONFIG_SYSROOT_DIR=destdir,
                   CXX=args.cxx)
        include_dir = check_pkg_config(args, env, destdir)
        check_headers(args.source, include_dir)

        build = os.path.join(tmp, "build-examples")
        run([args.meson, "setup", build, os.path.join(args.source, "examples"), "--wrap-mode=nodownload",
             "-Db_sanitize=" + args.sanitize], env=env)
        run([args.ninja, "-C", build, "-j", "2", "chat/chat_server"], env=env)
        check_compile_commands(build, args.source, destdir)
        run_chat(os.path.join(build, "chat", "chat_server"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
