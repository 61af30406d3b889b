"""An instance's start and stop send fixed statements bound on the server (core.sql): they name
the model's columns, and the instance returned is the row the database holds."""

from __future__ import annotations

from agents import services
from agents.models import AgentInstance
from core.actors import Actor
from tests.agents.conftest import make_agent


def test_the_statements_name_every_column_of_the_model():
    columns = [field.column for field in AgentInstance._meta.concrete_fields]
    assert columns == list(services._INSTANCE_COLUMNS)
    for text in (services._INSERT_INSTANCE, services._LOCK_INSTANCE):
        assert ", ".join(columns) in text


def test_a_started_and_stopped_instance_is_the_row_the_database_holds(acme):
    actor = Actor.system("statements")
    agent = make_agent("Rows", cpu="250m", memory="128MB")
    fields = [field.attname for field in AgentInstance._meta.concrete_fields]

    started = services.instance_request(actor=actor, agent_id=agent.pk)
    stored = AgentInstance.objects.get(pk=started.pk)
    assert [getattr(started, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert (stored.status, stored.cpu_millicores, stored.memory_mb) == ("pending", 250, 128)
    assert started.agent.name == "Rows" and not started._state.adding

    stopped = services.instance_stop(actor=actor, agent_id=agent.pk, instance_id=started.pk)
    stored = AgentInstance.objects.get(pk=started.pk)
    assert [getattr(stopped, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert stored.status == "stopped" and stored.stopped_at is not None
