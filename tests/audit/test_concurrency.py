"""Concurrent writers (real threads, real transactions) queue on the chain: it never forks."""

from __future__ import annotations

import threading

from django.db import connection, transaction

from audit import services
from audit.models import AuditEvent
from audit.verify import verify_chain
from core.actors import Actor
from tenants import context

WRITERS = 8
EVENTS_EACH = 25


def test_concurrent_writers_never_fork_the_chain(scratch_org):
    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        start = AuditEvent.objects.count()
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            with context.tenant_context(tenant):
                barrier.wait()
                for index in range(EVENTS_EACH):
                    with transaction.atomic():
                        services.record(
                            actor=Actor.system(f"writer-{number}"),
                            action="test.concurrent",
                            details={"writer": number, "index": index},
                        )
        except BaseException as error:  # collected: an assertion in a thread would be lost
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(number,)) for number in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with context.tenant_context(tenant):
        sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
        writers = set(
            AuditEvent.objects.filter(action="test.concurrent").values_list(
                "actor_label", flat=True
            )
        )
        report = verify_chain(tenant_id=str(tenant.public_id))
    total = start + WRITERS * EVENTS_EACH
    assert sequences == list(range(1, total + 1))
    assert writers == {f"writer-{number}" for number in range(WRITERS)}
    assert report.is_intact and report.checked == total
