"""Rewrite every absolute path in the repository's committed JSON files as `bloodgen.provenance.portable_path`
does for new records (relative to the repository when inside it, else its last two parts):

    python benchmarks/scrub_paths.py          # run from anywhere; rewrites the files in place

Records made before the records kept only portable paths held the paths of the machines that made them.
Only string values that are absolute paths change; a file is rewritten only when one did, keeping its
indentation and key order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.provenance import portable_path  # noqa: E402


# An absolute path of two or more parts, not part of a URL ("https://...") or of another word.
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[\w.+-]+(?:/[\w.+=@-]+)+")


def scrub(value):
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):  # a path alone, or inside a command line
        return ABSOLUTE.sub(lambda m: portable_path(m.group()), value)
    return value


def main() -> int:
    os.chdir(ROOT)  # "inside the working folder" means inside the repository
    files = subprocess.run(["git", "ls-files", "*.json"], capture_output=True, text=True, check=True).stdout.split()
    changed = 0
    for name in files:
        text = Path(name).read_text()
        data = json.loads(text)
        clean = scrub(data)
        if clean != data:
            indent = 2 if text.startswith("{\n  ") or text.startswith("[\n  ") else None
            Path(name).write_text(json.dumps(clean, indent=indent) + ("\n" if text.endswith("\n") else ""))
            changed += 1
    print(f"rewrote {changed} of {len(files)} JSON files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
