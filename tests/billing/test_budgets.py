"""Spend budgets per API key and per agent: priced from the price table, counted in the request's
one Lua call, exact under concurrency, refused with 429 `budget_exceeded`; the budgets API (roles,
organizations, bad input, Idempotency-Key) and what happens when Redis cannot be reached."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from billing import limits, pricing, selectors, services
from billing.ledger import Count
from billing.models import Budget, Price, UsageBucket
from core.actors import Actor
from tenants import context, ratelimit
from tests.billing.test_limits import DEAD_REDIS
from tests.credentials.helpers import api_key, api_key_header, error_code
from tests.credentials.test_api import _credentials
from tests.gateway.conftest import make_agent

BUDGETS = "/api/v1/usage/budgets/"
STAFF = Actor.system("tests")


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()
    pricing.forget()
    yield
    limits.forget()
    pricing.forget()


def price(meter: str, unit_price: str, per_units: int = 1, model: str = "") -> Price:
    """Staff's price for a meter (the table starts with LLM tokens priced: changed here)."""
    with context.public_context():
        row = Price.objects.filter(meter=meter, model=model).first() or Price(
            meter=meter, model=model
        )
    row.unit_price, row.per_units = Decimal(unit_price), per_units
    return services.price_save(actor=STAFF, price=row, fields=["unit_price", "per_units"])


def budget(org, subject_type: str, subject_id, amount: str) -> Budget:
    with context.tenant_context(org.tenant):
        return services.budget_create(
            actor=Actor.for_user(org.admin),
            subject_type=subject_type,
            subject_id=str(subject_id),
            amount=Decimal(amount),
        )


def post(client, path, body, **extra):
    return client.post(path, data=json.dumps(body), content_type="application/json", **extra)


def tokens_event(event_id: str, inp: int, out: int = 0, **extra) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "runtime/1",
        "type": "llm.tokens",
        "data": {"model": "gpt-x", "input_tokens": inp, "output_tokens": out},
        **extra,
    }


# Refusals -----------------------------------------------------------------------------------------


def test_a_key_spends_its_budget_exactly_then_is_refused_naming_it(org, client_for):
    price("api_requests", "0.01")  # a cent a request
    key, raw = api_key(org, ["agents:read"])
    spent = budget(org, "api_key", key.pk, "0.50")
    client = client_for(org)

    statuses = [client.get("/api/v1/agents/", **api_key_header(raw)).status_code for _ in range(55)]
    refused = client.get("/api/v1/agents/", **api_key_header(raw))

    assert statuses == [200] * 50 + [429] * 5
    assert error_code(refused) == "budget_exceeded"
    detail = refused.json()["error"]["detail"]
    assert detail == {
        "budget": {
            "id": spent.pk,
            "subject_type": "api_key",
            "subject_id": str(key.pk),
            "amount": "0.50",
            "currency": "USD",
        }
    }
    assert 0 < int(refused["Retry-After"]) <= 31 * 86400
    # Another key and signed-in people are not limited by this key's budget.
    _, other_raw = api_key(org, ["agents:read"])
    assert client.get("/api/v1/agents/", **api_key_header(other_raw)).status_code == 200
    assert client_for(org, org.admin).get("/api/v1/agents/").status_code == 200


def test_an_unpriced_request_passes_until_the_budget_is_spent_by_priced_usage(org, client_for):
    """API requests cost nothing here; the key's reported LLM tokens spend its budget, then
    even its free requests are refused."""
    price("llm_tokens", "0.002", per_units=1000)  # 2 micro-USD a token
    key, raw = api_key(org, ["agents:read", "usage:report"])
    budget(org, "api_key", key.pk, "0.01")  # 5,000 tokens
    client = client_for(org)

    assert client.get("/api/v1/agents/", **api_key_header(raw)).status_code == 200
    first = post_events(client, raw, [tokens_event("a", 3000)])
    past = post_events(client, raw, [tokens_event("b", 2001)])
    last = post_events(client, raw, [tokens_event("c", 2000)])
    free = client.get("/api/v1/agents/", **api_key_header(raw))

    assert first.status_code == 202
    assert past.status_code == 429 and error_code(past) == "budget_exceeded"
    assert last.status_code == 202  # exactly the budget
    assert free.status_code == 429 and error_code(free) == "budget_exceeded"
    (view,) = selectors.budget_list(actor=Actor.for_user(org.admin))
    assert view.spent == Decimal("0.01") and view.percent == 100


def post_events(client, raw, events):
    return client.post(
        "/api/v1/usage/events",
        data=json.dumps(events),
        content_type="application/cloudevents-batch+json",
        **api_key_header(raw),
    )


def test_an_agents_budget_counts_its_tokens_from_any_key(org, client_for):
    price("llm_tokens", "0.002", per_units=1000)
    agent = str(make_agent(org).pk)
    _, raw = api_key(org, ["usage:report"])
    budget(org, "agent", agent.upper(), "0.01")  # the agents app finds it (any case)
    client = client_for(org)

    allowed = post_events(client, raw, [tokens_event("1", 5000, agentid=agent)])
    refused = post_events(client, raw, [tokens_event("2", 1, agentid=agent)])
    unattributed = post_events(client, raw, [tokens_event("3", 1)])

    assert (allowed.status_code, refused.status_code, unattributed.status_code) == (202, 429, 202)
    assert refused.json()["error"]["detail"]["budget"]["subject_id"] == agent


def _spend(key_id: int, attempts: int, queue) -> None:
    allowed = 0
    for _ in range(attempts):
        try:
            services.request_admit(
                resource="api", counts=[Count("api_requests", 1, {"api_key": str(key_id)})]
            )
            allowed += 1
        except Exception as error:  # noqa: BLE001 - only the budget's refusal is expected
            assert getattr(error, "code", None) == "budget_exceeded", error
    queue.put(allowed)


def test_a_budget_allows_exactly_n_requests_from_4_processes(org):
    """A budget of 0.41 at a cent a request, one request spent here, then 200 requests from 4
    processes: exactly 40 served."""
    price("api_requests", "0.01")
    key, _ = api_key(org, ["agents:read"])
    made = budget(org, "api_key", key.pk, "0.41")
    # The children share this test's database connection: no audit write there. The budget's
    # alerts are test_budget_alerts' (across processes too): marked sent for this month.
    counter = services.budget_key(str(org.tenant.public_id), "api_key", str(key.pk), timezone.now())
    for percent in services.ALERT_THRESHOLDS:
        ratelimit.redis_client().set(f"{counter}:alert:{made.pk}:{percent}", 1, ex=3600)
    with context.tenant_context(org.tenant):
        # Warm this process's caches (forked below) and seed the month's counter: one cent.
        services.request_admit(
            resource="api", counts=[Count("api_requests", 1, {"api_key": str(key.pk)})]
        )
        processes = multiprocessing.get_context("fork")
        queue = processes.Queue()
        workers = [processes.Process(target=_spend, args=(key.pk, 50, queue)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    allowed = [queue.get(timeout=5) for _ in workers]

    assert sum(allowed) == 40
    assert all(worker.exitcode == 0 for worker in workers)
    with context.tenant_context(org.tenant):
        (view,) = selectors.budget_list(actor=Actor.for_user(org.admin))
    assert view.spent == Decimal("0.41")


def test_a_lost_counter_is_seeded_from_the_ledger(org, client_for):
    """Redis lost the month's spend (or it is a new month): it starts again from the ledger."""
    price("api_requests", "0.01")
    key, raw = api_key(org, ["agents:read"])
    budget(org, "api_key", key.pk, "0.05")
    client = client_for(org)
    for _ in range(3):
        client.get("/api/v1/agents/", **api_key_header(raw))
    services.rollup(actor=STAFF, include_current=True)
    ratelimit.redis_client().delete(*ratelimit.redis_client().keys("agentplane:budget:*"))

    statuses = [client.get("/api/v1/agents/", **api_key_header(raw)).status_code for _ in range(4)]

    assert statuses == [200, 200, 429, 429]


def test_redis_unreachable_a_spent_budget_fails_open_like_its_resource(org, client_for, settings):
    """The `api` resource fails open: the budget is not checked, the usage still recorded."""
    price("api_requests", "0.01")
    key, raw = api_key(org, ["agents:read"])
    budget(org, "api_key", key.pk, "0.00")
    client = client_for(org)
    assert client.get("/api/v1/agents/", **api_key_header(raw)).status_code == 429
    settings.CACHES = DEAD_REDIS

    served = client.get("/api/v1/agents/", **api_key_header(raw))

    assert served.status_code == 200
    with context.public_context():
        bucket = UsageBucket.objects.get(tenant_id=org.tenant.pk, meter="api_requests")
    assert bucket.groups == {"api_key": str(key.pk)} and bucket.value == 1


# The budgets API ----------------------------------------------------------------------------


WRITE_MATRIX = [
    ("anonymous", 401),
    ("viewer", 403),
    ("member", 403),
    ("admin", 201),
    ("owner", 201),
    ("other org's admin", 401),
]


def _audit_actions(org, prefix: str) -> list[tuple[str, str]]:
    with context.tenant_context(org.tenant):
        return list(
            AuditEvent.objects.filter(action__startswith=prefix)
            .order_by("id")
            .values_list("action", "result")
        )


@pytest.mark.parametrize(("principal", "status"), WRITE_MATRIX)
def test_creating_a_budget_by_role(org, other_org, client_for, principal, status):
    key, _ = api_key(org, ["agents:read"])
    response = post(
        client_for(org),
        BUDGETS,
        {"subject_type": "api_key", "subject_id": str(key.pk), "amount": "25.00"},
        **_credentials(org, other_org, principal),
    )

    assert response.status_code == status
    with context.public_context():
        stored = list(Budget.objects.filter(tenant_id=org.tenant.pk))
    if status != 201:
        assert stored == []  # nothing changed, and nothing but the refusal recorded
        assert ("budget.created", "success") not in _audit_actions(org, "budget.")
        return
    (created,) = stored
    assert response.json() == {
        "id": created.pk,
        "subject_type": "api_key",
        "subject_id": str(key.pk),
        "amount": "25.00",
        "currency": "USD",
        "spent": "0.000000",
        "projected": "0.000000",
        "created_at": response.json()["created_at"],
        "updated_at": response.json()["updated_at"],
    }
    assert _audit_actions(org, "budget.") == [("budget.created", "success")]


def test_a_key_cannot_hold_the_budgets_permission(org):
    with pytest.raises(ValidationError) as refused:
        api_key(org, ["budgets:manage"])
    assert "budgets:manage" in str(refused.value)


def test_another_organizations_key_agent_and_budget_are_404(org, other_org, client_for):
    their_key, _ = api_key(other_org, ["agents:read"])
    their_budget = budget(other_org, "api_key", their_key.pk, "5.00")
    admin = client_for(org, org.admin)
    body = {"subject_type": "api_key", "subject_id": str(their_key.pk), "amount": "1.00"}
    missing_agent = {"subject_type": "agent", "subject_id": str(uuid.uuid4()), "amount": "1.00"}

    responses = [
        post(admin, BUDGETS, body),
        post(admin, BUDGETS, missing_agent),
        admin.get(f"{BUDGETS}{their_budget.pk}"),
        admin.patch(
            f"{BUDGETS}{their_budget.pk}",
            data=json.dumps({"amount": "9.00"}),
            content_type="application/json",
        ),
        admin.delete(f"{BUDGETS}{their_budget.pk}"),
    ]

    assert [r.status_code for r in responses] == [404] * 5
    assert admin.get(BUDGETS).json() == []
    with context.public_context():
        their_budget.refresh_from_db()
        assert Budget.objects.filter(tenant_id=org.tenant.pk).count() == 0
    assert their_budget.amount == Decimal("5.00")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "1000000.01"}, "amount"),
        ({"amount": 12}, None),  # a number is accepted as a decimal
        ({"currency": "EUR"}, "currency"),
        ({"subject_type": "team"}, "subject_type"),
        ({"subject_id": "x' OR 1=1"}, "subject_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_budgets_are_400(org, client_for, change, field):
    key, _ = api_key(org, ["agents:read"])
    body = {"subject_type": "api_key", "subject_id": str(key.pk), "amount": "1.00", **change}
    response = post(client_for(org, org.admin), BUDGETS, body)
    if field is None:
        assert response.status_code == 201
        return
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["detail"]


def test_one_budget_per_key_and_the_idempotency_key_replays_the_create(org, client_for):
    key, _ = api_key(org, ["agents:read"])
    admin = client_for(org, org.admin)
    body = {"subject_type": "api_key", "subject_id": str(key.pk), "amount": "3.00"}
    retry = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())}

    first = post(admin, BUDGETS, body, **retry)
    replayed = post(admin, BUDGETS, body, **retry)
    second = post(admin, BUDGETS, body)

    assert first.status_code == replayed.status_code == 201
    assert replayed.json() == first.json()
    assert second.status_code == 409 and "subject_id" in second.json()["error"]["detail"]
    assert _audit_actions(org, "budget.") == [("budget.created", "success")]


def test_changing_and_removing_a_budget_is_audited_and_applies_at_once(org, client_for):
    price("api_requests", "0.01")
    key, raw = api_key(org, ["agents:read"])
    created = budget(org, "api_key", key.pk, "0.00")
    admin, client = client_for(org, org.admin), client_for(org)
    assert client.get("/api/v1/agents/", **api_key_header(raw)).status_code == 429

    raised = admin.patch(
        f"{BUDGETS}{created.pk}",
        data=json.dumps({"amount": "0.01"}),
        content_type="application/json",
    )
    served = client.get("/api/v1/agents/", **api_key_header(raw))
    removed = admin.delete(f"{BUDGETS}{created.pk}")

    assert raised.status_code == 200 and raised.json()["amount"] == "0.01"
    assert served.status_code == 200
    assert removed.status_code == 204 and admin.get(BUDGETS).json() == []
    with context.tenant_context(org.tenant):
        updated = AuditEvent.objects.get(action="budget.updated")
    assert updated.details["amount_before"] == "0.00" and updated.details["amount"] == "0.01"
    assert [a for a, _ in _audit_actions(org, "budget.")] == [
        "budget.created",
        "budget.updated",
        "budget.deleted",
    ]


@pytest.mark.parametrize(("principal", "status"), [("viewer", 403), ("member", 403)])
def test_members_cannot_change_or_remove_a_budget(org, other_org, client_for, principal, status):
    key, _ = api_key(org, ["agents:read"])
    created = budget(org, "api_key", key.pk, "2.00")
    client = client_for(org)
    headers = _credentials(org, other_org, principal)

    changed = client.patch(
        f"{BUDGETS}{created.pk}",
        data=json.dumps({"amount": "99.00"}),
        content_type="application/json",
        **headers,
    )
    removed = client.delete(f"{BUDGETS}{created.pk}", **headers)
    listed = client.get(BUDGETS, **headers)

    assert (changed.status_code, removed.status_code) == (status, status)
    assert listed.status_code == 200 and listed.json()[0]["amount"] == "2.00"
    with context.public_context():
        assert Budget.objects.get(pk=created.pk).amount == Decimal("2.00")
    # Refused by the view's permission before the service: nothing recorded, nothing announced.
    assert _audit_actions(org, "budget.") == [("budget.created", "success")]


def test_the_budget_list_pins_its_query_count(org, client_for, django_assert_num_queries):
    keys = [api_key(org, ["agents:read"], name=f"k{n}")[0] for n in range(3)]
    for key in keys:
        budget(org, "api_key", key.pk, "1.00")
    client = client_for(org, org.admin)
    client.get(BUDGETS)  # warm the session and the caches

    # Session, user; the budgets, the spend (one grouped query), the MAX meters; three of the
    # eight switch the search path. The same with 3 budgets as with 30.
    with django_assert_num_queries(8):
        response = client.get(BUDGETS)

    assert len(response.json()) == 3


# The Usage API, the refusals and the invoice agree ----------------------------------------------


def test_the_usage_api_the_budget_refusals_and_the_invoice_agree(org, client_for):
    """Replay mixed traffic (two keys' API calls, one key's reported tokens, some for an agent
    with its own budget); the budgets' refusals are exactly those their prices predict, and the
    Usage API, the budgets' spend and the invoice's lines read the same numbers, before and
    after the rollup."""
    from billing import invoicing

    price("api_requests", "0.001")
    price("llm_tokens", "0.002", per_units=1000)
    spender, spender_raw = api_key(org, ["agents:read", "usage:report"], name="spender")
    _, reader_raw = api_key(org, ["agents:read", "usage:read"], name="reader")
    agent = str(make_agent(org).pk)
    budget(org, "api_key", spender.pk, "0.08")
    budget(org, "agent", agent, "0.03")
    client = client_for(org)
    costs = {"request": Decimal("0.001"), "token": Decimal("0.000002")}
    spent = {"key": Decimal(0), "agent": Decimal(0)}
    expected = {"served": 0, "refused": 0, "tokens": 0}
    refusals = []
    for n in range(40):
        response = client.get("/api/v1/agents/", **api_key_header(spender_raw))
        client.get("/api/v1/agents/", **api_key_header(reader_raw))
        fits = spent["key"] + costs["request"] <= Decimal("0.08")
        expected["served" if fits else "refused"] += 1
        spent["key"] += costs["request"] if fits else 0
        refusals.append(response.status_code)
        event = tokens_event(f"e{n}", 500, 100, **({"agentid": agent} if n % 2 else {}))
        cost = 600 * costs["token"]
        fits = spent["key"] + cost <= Decimal("0.08") and (
            n % 2 == 0 or spent["agent"] + cost <= Decimal("0.03")
        )
        reported = post_events(client, spender_raw, [event])
        assert reported.status_code == (202 if fits else 429), (n, reported.content)
        if fits:
            spent["key"] += cost
            spent["agent"] += cost if n % 2 else 0
            expected["tokens"] += 600

    def usage(meter, **query):
        response = client.get(
            "/api/v1/usage/", {"meter": meter, **query}, **api_key_header(reader_raw)
        )
        return response.json()

    def numbers():
        views = {v["subject_type"]: v for v in client_for(org, org.admin).get(BUDGETS).json()}
        now = timezone.now()
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        tokens = usage("llm_tokens", group_by="api_key")
        by_agent = usage("llm_tokens", group_by="agent")
        lines = {line.meter: line for line in invoicing.invoice_lines(org.tenant, start, now)}
        requests = usage("api_requests", group_by="api_key")  # counts itself, then reports
        return views, lines, requests, tokens, by_agent

    assert refusals.count(200) == expected["served"] and refusals.count(429) == expected["refused"]
    assert expected["refused"] > 0
    live = numbers()
    services.rollup(actor=STAFF, include_current=True)
    rolled = numbers()
    for views, lines, requests, tokens, by_agent in (live, rolled):
        spender_requests = sum(b["groups"].get(str(spender.pk), 0) for b in requests["buckets"])
        spender_tokens = sum(b["groups"].get(str(spender.pk), 0) for b in tokens["buckets"])
        agent_tokens = sum(b["groups"].get(agent, 0) for b in by_agent["buckets"])
        assert spender_requests == expected["served"]
        assert spender_tokens == tokens["total"] == expected["tokens"]
        # The budgets' spend is the Usage API's quantities at the price table's prices.
        assert (
            Decimal(views["api_key"]["spent"])
            == spent["key"]
            == (spender_requests * costs["request"] + spender_tokens * costs["token"])
        )
        assert Decimal(views["agent"]["spent"]) == spent["agent"] == agent_tokens * costs["token"]
        # The invoice's lines: the same quantities, priced the same.
        assert lines["api_requests"].quantity + 1 == requests["total"]
        assert lines["llm_tokens"].quantity == tokens["total"]
        assert lines["llm_tokens"].unit_price == costs["token"]
    # Nothing lost or doubled by the rollup: only the four reads of the second round were added.
    assert rolled[2]["total"] == live[2]["total"] + 4


def test_an_empty_patch_changes_nothing_and_records_nothing(org, other_org, client_for):
    """A PATCH changes what it names (the document's `PatchedBudgetUpdateRequest`)."""
    key, _ = api_key(org, ["agents:read"])
    created = budget(org, "api_key", key.pk, "5.00")
    admin = client_for(org, org.admin)

    unchanged = admin.patch(f"{BUDGETS}{created.pk}", data="{}", content_type="application/json")
    foreign = client_for(other_org, other_org.admin).patch(
        f"{BUDGETS}{created.pk}", data="{}", content_type="application/json"
    )

    assert unchanged.status_code == 200 and unchanged.json()["amount"] == "5.00"
    assert foreign.status_code == 404
    assert [a for a, _ in _audit_actions(org, "budget.")] == ["budget.created"]
