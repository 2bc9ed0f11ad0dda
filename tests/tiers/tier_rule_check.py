#!/usr/bin/env python3
"""Knowledge flows down only: a file of one tier includes headers of its own tier or lower ones.

Tiers, lowest first: io, net, services. The apps (src/apps/) may include any of them. The
libraries' link order already refuses a call upward; this check refuses an upward #include,
which a header-only use would otherwise slip past the linker. Exit 1 names every offender.
"""
import re
import sys
from pathlib import Path

TIERS = ["io", "net", "services"]
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]echoplex/([a-z_]+)/', re.M)


def tier_of(path: Path, root: Path):
    parts = path.relative_to(root).parts
    if parts[:2] == ("include", "echoplex") and len(parts) > 3 and parts[2] in TIERS:
        return parts[2]
    if parts[0] == "src" and len(parts) > 2 and parts[1] in TIERS:
        return parts[1]
    return None


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    offenders = []
    checked = 0
    for path in sorted(list(root.glob("include/echoplex/**/*.hpp")) + list(root.glob("src/**/*.[ch]pp"))):
        tier = tier_of(path, root)
        if tier is None:
            continue
        checked += 1
        for used in INCLUDE.findall(path.read_text()):
            if used in TIERS and TIERS.index(used) > TIERS.index(tier):
                offenders.append(f"{path.relative_to(root)}: the {tier} tier includes echoplex/{used}/")
    for line in offenders:
        print(line)
    if checked == 0:
        print("no tier files found under", root)
        return 1
    print(f"{checked} files checked, {len(offenders)} upward include(s)")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
