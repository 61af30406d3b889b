"""What a PostgreSQL backend asks the kernel for, per request, serving 10 organizations or N.

    .venv/bin/python bench/backend_syscalls.py [--requests 2000] [--orgs N]

On a many_orgs.py database (`<prefix>_orgs`): one connection reads every organization's schema
twice (`SET search_path`, then the bench view's one query: the first user by id), so that its
caches hold them all; then, for each variant (10: a random one of the first 10 schemas per
request; N: a random one of all), `strace -c` is attached to that backend while the client runs
the requests. Reported per request: `openat`/`close` (files reopened past
`max_files_per_process`), `pread64` (pages not in `shared_buffers`, read from the OS cache) and
`lseek` (the planner's relation sizes). Needs strace and the PostgreSQL host (root). Raw figures:
bench/results/backend_syscalls.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, database_url, machine_facts  # noqa: E402

QUERY = (
    'SELECT "accounts_user"."id", "accounts_user"."email" FROM "accounts_user" '
    'ORDER BY "accounts_user"."id" ASC LIMIT 1'
)
CALLS = ("openat", "close", "pread64", "lseek", "sendto", "recvfrom")


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=0, help="N (default: every organization)")
    args = parser.parse_args()
    database = database_url("orgs")
    conn = psycopg.connect(database, autocommit=True)
    schemas = [
        row[0]
        for row in conn.execute(
            "SELECT schema_name FROM tenants_tenant WHERE slug LIKE 'o-%%' ORDER BY slug"
        )
    ]
    schemas = schemas[: args.orgs] if args.orgs else schemas
    rng = random.Random(16)  # noqa: S311 (benchmark sampling)

    def request(schema: str) -> None:
        conn.execute(f'SET search_path = "{schema}"')
        conn.execute(QUERY).fetchall()

    for _ in range(2):
        for schema in schemas:
            request(schema)
    pid = conn.info.backend_pid
    result = {"organizations": len(schemas), "requests": args.requests, "variants": {}}
    for variant, pool in (("10", schemas[:10]), ("N", schemas), ("10 again", schemas[:10])):
        trace = subprocess.Popen(
            ["strace", "-c", "-p", str(pid)], stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # attached
        started = time.perf_counter()
        for _ in range(args.requests):
            request(rng.choice(pool))
        seconds = time.perf_counter() - started
        trace.terminate()
        summary = trace.communicate()[1]
        counts = {call: 0 for call in CALLS}
        for line in summary.splitlines():
            match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if match and match.group(2) in counts:
                counts[match.group(2)] = int(match.group(1))
        per_request = {call: count / args.requests for call, count in counts.items()}
        result["variants"][variant] = {"seconds": seconds, "per_request": per_request}
        print(variant, json.dumps(per_request), f"{seconds:.1f} s", flush=True)
    result["settings"] = {
        name: conn.execute(f"SHOW {name}").fetchone()[0]
        for name in ("max_files_per_process", "shared_buffers")
    }
    result["facts"] = machine_facts(database)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    (ROOT / "bench" / "results" / "backend_syscalls.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
