"""Run the reference agent runtime against an organization's gateway."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateway.runtime import AgentRuntime


class Command(BaseCommand):
    help = (
        "Serve an agent: take its oldest pending instance or request one (--agent), or attach to "
        "--instance; then heartbeat and run tasks. "
        "The key needs the agents:read and agents:write scopes."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", required=True, help="The organization's URL.")
        parser.add_argument("--key", required=True, help="An API key of the organization.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--agent",
            help="Serve this agent (its id): its oldest pending instance, else a new one.",
        )
        target.add_argument("--instance", help="Serve this existing instance (its id).")
        parser.add_argument("--heartbeat", type=float, default=5.0, help="Seconds between beats.")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("agentplane.runtime").setLevel(logging.INFO)
        common = {
            "url": options["url"],
            "key": options["key"],
            "heartbeat_seconds": options["heartbeat"],
        }

        def report(kind: str, detail: dict[str, Any]) -> None:
            self.stdout.write(f"{kind} {detail}")
            self.stdout.flush()

        try:
            if options["agent"]:
                runtime = AgentRuntime.for_agent(
                    agent_id=options["agent"], on_event=report, **common
                )
            else:
                runtime = AgentRuntime(instance_id=options["instance"], on_event=report, **common)
        except OSError as error:
            raise CommandError(f"could not start an instance: {error}") from error
        self.stdout.write(f"instance {runtime.instance_id}")

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runtime.stopping.set)
            await runtime.run_forever()

        asyncio.run(main())
