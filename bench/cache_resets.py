"""Which DDL resets the catalog caches of the other connections on a PostgreSQL server?

    .venv/bin/python bench/cache_resets.py DATABASE_URL K 'label=shell command' ...

A probe connection reads K organizations' schemas of DATABASE_URL (a many_orgs.py database:
`t_o_00000` ...; `SET LOCAL search_path` and a one-row read of `accounts_user` in each, all in one
transaction), so that its relation and catalog caches hold them; then, after each command, reads
them again and counts the catalog index scans it needed (pg_class by OID and by name, from the
backend's own statistics). 0: its caches survived; about as many as the cold pass: they were
reset (PostgreSQL's shared invalidation queue overflowed: the command committed more messages
than the queue holds before this backend read them). Raw figures: bench/results/cache_resets.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_facts  # noqa: E402

SCANS = (
    "SELECT pg_stat_get_xact_numscans('pg_catalog.pg_class_oid_index'::regclass)"
    " + pg_stat_get_xact_numscans('pg_catalog.pg_class_relname_nsp_index'::regclass)"
)


def main() -> None:
    import psycopg

    database, count, commands = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    conn = psycopg.connect(database)

    def sweep() -> dict:
        # PostgreSQL 15 keeps a backend's counts until it reports them: report first.
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.commit()
        time.sleep(0.2)
        started = time.perf_counter()
        for number in range(count):
            conn.execute(f'SET LOCAL search_path = "t_o_{number:05d}"')
            conn.execute("SELECT id FROM accounts_user ORDER BY 1 LIMIT 1").fetchall()
        elapsed = time.perf_counter() - started
        scans = conn.execute(SCANS).fetchone()[0]
        conn.commit()
        return {"catalog_index_scans": scans, "ms_per_schema": elapsed * 1000 / count}

    result = {"schemas": count, "cold": sweep(), "warm": [sweep(), sweep()], "after": []}
    print(json.dumps(result), flush=True)
    for labelled in commands:
        label, _, command = labelled.partition("=")
        started = time.perf_counter()
        subprocess.run(command, shell=True, check=True)  # noqa: S602 (the operator's commands)
        seconds = time.perf_counter() - started
        entry = {"command": label, "seconds": seconds, "first": sweep(), "second": sweep()}
        result["after"].append(entry)
        print(json.dumps(entry), flush=True)
    result["facts"] = machine_facts(database)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    (ROOT / "bench" / "results" / "cache_resets.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
