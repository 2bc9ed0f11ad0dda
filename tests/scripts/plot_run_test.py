#!/usr/bin/python3
"""scripts/plot-run.py on real results: testecho runs against echoplex, written with --json and
--hdr-out, plotted together into one SVG that names every run; a file that is neither is one
line and exit 1. Skipped (77) without Debian's python3-matplotlib.

Usage: plot_run_test.py SOURCE_DIR ECHOPLEX TESTECHO
"""

import os
import re
import subprocess
import sys
import tempfile


def main():
    source, echoplex, testecho = sys.argv[1:4]
    script = os.path.join(source, "scripts", "plot-run.py")
    try:
        import matplotlib  # noqa: F401  (the script's own dependency)
    except ImportError:
        print("skipped: python3-matplotlib is not installed (apt-get install python3-matplotlib)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([echoplex, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline()
            port = re.search(r"127\.0\.0\.1:(\d+) \(echo\)", line)
            assert port, f"no startup line: {line!r}"
            runs = []
            for name, extra in (("lockstep", []), ("pipelined", ["-P", "8"])):
                out = os.path.join(tmp, f"{name}.json")
                hdr = os.path.join(tmp, f"{name}.hdr")
                with open(out, "w") as f:
                    subprocess.run([testecho, "--port", port.group(1), "-c", "4", "-d", "600ms", "--interval", "200ms",
                                    "--json", "--hdr-out", hdr] + extra, stdout=f, check=True, timeout=60)
                runs.append((name, out, hdr))
        finally:
            server.terminate()
            server.wait(timeout=30)
        svg = os.path.join(tmp, "runs.svg")
        args = [f"{runs[0][0]}={runs[0][1]}", f"{runs[1][0]}={runs[1][1]}", f"from-hdr={runs[0][2]}"]
        done = subprocess.run([script, "-o", svg, "--title", "plot test"] + args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"plot-run failed: {done.stderr}"
        with open(svg, encoding="utf-8") as f:
            text = f.read()
        assert text.lstrip().startswith("<?xml") and "<svg" in text, "not an SVG"
        for label in ("lockstep", "pipelined", "from-hdr", "latency by percentile", "throughput per interval",
                      "p99 per interval", "99.9%"):
            assert label in text, f"{label!r} is not in the plot"
        # Only an HDR file: the percentile panel alone.
        only = os.path.join(tmp, "hdr.svg")
        done = subprocess.run([script, "-o", only, runs[1][2]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        with open(only, encoding="utf-8") as f:
            text = f.read()
        assert "latency by percentile" in text and "throughput per interval" not in text
        # Neither kind of file.
        junk = os.path.join(tmp, "junk.txt")
        with open(junk, "w") as f:
            f.write("hello\n")
        done = subprocess.run([script, "-o", os.path.join(tmp, "x.svg"), junk], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.returncode
        assert done.stderr.count("\n") == 1 and "no percentile lines" in done.stderr, done.stderr
    print("plot-run: JSON and HDR runs plotted together; a bad file refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
