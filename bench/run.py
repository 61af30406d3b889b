"""Run every benchmark in bench/ (or the ones named), each as its own process.

    .venv/bin/python bench/run.py [name ...]      e.g. `bench/run.py routing`

A benchmark is any bench/<name>.py other than this file and modules starting with `_`; extra
arguments after `--` are passed to each one. Results are printed and kept in bench/results/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(
        path.stem
        for path in BENCH.glob("*.py")
        if path.name != "run.py" and not path.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names, extra = argv, []
    if "--" in argv:
        names, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    known = available()
    unknown = [name.removesuffix(".py") for name in names if name.removesuffix(".py") not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    failed = []
    for name in [name.removesuffix(".py") for name in names] or known:
        print(f"== bench/{name}.py", flush=True)
        result = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *extra])
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
