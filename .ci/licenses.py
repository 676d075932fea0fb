#!/usr/bin/env python3
"""Offline licence check: every dependency's SPDX licence expression must be satisfiable
with the allowed licences. Reads `cargo metadata --locked` (no network, no advisory DB)."""

import json
import re
import subprocess
import sys

ALLOWED = {
    "0BSD", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "BSL-1.0", "CC0-1.0", "CDLA-Permissive-2.0", "ISC", "MIT", "MIT-0", "MPL-2.0",
    "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "Zlib",
}


def satisfiable(expression: str) -> bool:
    """True when some choice of the OR alternatives uses only allowed licences."""
    expression = expression.replace("/", " OR ").strip()
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(expression):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and expression[i:i + 4] == " OR ":
            parts.append(expression[start:i])
            start = i + 4
    parts.append(expression[start:])
    if len(parts) > 1:
        return any(satisfiable(p) for p in parts)
    term = parts[0].strip()
    if term.startswith("(") and term.endswith(")"):
        return satisfiable(term[1:-1])
    if " AND " in term:
        return all(satisfiable(t) for t in re.split(r"\s+AND\s+", term))
    return term in ALLOWED


def main() -> int:
    metadata = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
         "--filter-platform", "x86_64-unknown-linux-gnu"], text=True))
    members = set(metadata["workspace_members"])
    bad = []
    for package in metadata["packages"]:
        if package["id"] in members:
            continue
        licence = package.get("license")
        if not licence or not satisfiable(licence):
            bad.append(f'{package["name"]} {package["version"]}: {licence or "no licence declared"}')
    for line in bad:
        print(f"disallowed licence: {line}")
    print(f'{len(metadata["packages"]) - len(members)} dependencies checked, {len(bad)} disallowed')
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
