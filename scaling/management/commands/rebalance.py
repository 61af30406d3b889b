"""`manage.py rebalance [--apply]`: propose (and run) moves that even out load across shards."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from scaling import rebalance
from tenants import shards


class Command(BaseCommand):
    help = (
        "Propose moves that even out size and recent usage across shards, within each "
        "organization's allowed regions; --apply runs them one by one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--apply", action="store_true", help="Run the proposed moves.")
        parser.add_argument(
            "--tolerance", type=float, default=0.05, help="Acceptable distance from a fair share."
        )
        parser.add_argument("--max-moves", type=int, default=50)

    def handle(self, *args, **options) -> None:
        shard_map = shards.all_shards()
        organizations = rebalance.measure()
        moves = rebalance.plan_moves(
            organizations,
            shard_map,
            tolerance=options["tolerance"],
            max_moves=options["max_moves"],
        )
        total_weight = sum(shard.weight for shard in shard_map.values())
        for name, shard in shard_map.items():
            load = sum(org.load for org in organizations if org.shard == name)
            self.stdout.write(
                f"{name}: load {load:.1%} (fair share {shard.weight / total_weight:.1%}), "
                f"{sum(org.shard == name for org in organizations)} organization(s)"
            )
        if not moves:
            self.stdout.write("balanced: no move proposed")
            return
        for move in moves:
            self.stdout.write(f"move {move.slug}: {move.source} -> {move.target} ({move.load:.1%})")
        if not options["apply"]:
            self.stdout.write(f"{len(moves)} move(s) proposed; run with --apply to make them")
            return
        started = time.perf_counter()

        def progress(index: int, move: rebalance.Move, state: str) -> None:
            bar = "#" * (20 * (index - (state == "moving")) // len(moves))
            self.stdout.write(
                f"[{bar:<20}] {index}/{len(moves)} {move.slug} -> {move.target}: {state} "
                f"({time.perf_counter() - started:.1f} s)"
            )

        failures = rebalance.apply(
            moves, actor=Actor.system("manage.py rebalance"), progress=progress
        )
        if failures:
            raise CommandError(
                f"{len(failures)} of {len(moves)} move(s) failed; they stay where they were"
            )
        self.stdout.write(f"applied {len(moves)} move(s)")
