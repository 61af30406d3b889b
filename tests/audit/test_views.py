"""The portal's audit section: role matrix, other organizations, filters, export, verify, rules."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import AsyncRequestFactory, Client
from django.test.utils import CaptureQueriesContext

from audit import exports, services
from audit.models import AlertRule, AuditEvent
from audit.selectors import EventFilters
from core.actors import Actor
from tests.audit.conftest import events_after, head, tamper

SYSTEM = Actor.system("tests")
PAGES = ["/audit/", "/audit/alerts/", "/audit/rules/"]


def acme_head(org, in_tenant) -> int:
    with in_tenant(org):
        return head()


# --- Role matrix and other organizations ---------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_login(org, client_for, path):
    response = client_for(org).get(path)

    assert response.status_code == 302 and response.url.startswith("/login/")


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_are_refused_and_it_is_recorded(org, client_for, in_tenant, path, role):
    start = acme_head(org, in_tenant)

    response = client_for(org, org.user(role)).get(path)

    assert response.status_code == 403
    with in_tenant(org):
        assert [(e.action, e.result) for e in events_after(start)] == [("audit.read", "denied")]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_see_the_pages(org, client_for, path, role):
    response = client_for(org, org.user(role)).get(path)

    assert response.status_code == 200


@pytest.mark.parametrize("path", PAGES)
def test_another_organizations_admin_is_a_stranger_here(org, other_org, client_for, path):
    """Their session belongs to their organization's host and schema: here they are anonymous."""
    client = client_for(other_org, other_org.admin)

    response = client.get(path, HTTP_HOST=org.host)

    assert response.status_code == 302 and response.url.startswith("/login/")


def test_the_list_shows_only_this_organizations_events(org, other_org, client_for, in_tenant):
    with in_tenant(other_org):
        services.record(actor=SYSTEM, action="test.globex-only")
    with in_tenant(org):
        services.record(actor=SYSTEM, action="test.acme-only")

    content = client_for(org, org.admin).get("/audit/").content.decode()

    assert "test.acme-only" in content and "test.globex-only" not in content


def test_navigation_shows_audit_to_those_who_may_read_it(org, client_for):
    admin_page = client_for(org, org.admin).get("/audit/").content.decode()

    assert 'href="/audit/"' in admin_page


# --- The list ------------------------------------------------------------------------------------


@pytest.fixture
def logged(org, in_tenant):
    with in_tenant(org):
        return [
            services.record(
                actor=Actor.for_user(org.member),
                action="test.view",
                resource_type="doc",
                resource_id=n,
                details={"n": n, "note": "<script>alert(1)</script>"},
            )
            for n in range(5)
        ]


def test_filters_and_the_cursor_page_through(org, client_for, logged):
    client = client_for(org, org.admin)

    first = client.get("/audit/", {"action": "test.view", "limit": "2"})
    page = first.content.decode()

    assert first.status_code == 200
    assert f'id="event-{logged[4].sequence}"' in page
    assert f'id="event-{logged[0].sequence}"' in page  # 50 a page: all five here
    assert "&lt;script&gt;" in page and "<script>alert(1)</script>" not in page

    older = client.get("/audit/", {"action": "test.view", "cursor": logged[2].sequence})
    text = older.content.decode()
    assert f'id="event-{logged[1].sequence}"' in text
    assert f'id="event-{logged[2].sequence}"' not in text


def test_the_next_page_link_keeps_the_filters(org, client_for, in_tenant):
    with in_tenant(org):
        for n in range(51):
            services.record(actor=SYSTEM, action="test.many", details={"n": n})
        oldest_shown = head() - 49

    page = client_for(org, org.admin).get("/audit/", {"action": "test.many"}).content.decode()

    assert f'href="?action=test.many&amp;cursor={oldest_shown}"' in page


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"result": "maybe"}, "One of: success, denied, failed."),
        ({"start": "yesterday"}, "Use an ISO 8601 date"),
        ({"cursor": "x"}, "Not a valid cursor."),
    ],
)
def test_bad_filters_are_a_400_with_the_reason(org, client_for, params, message):
    response = client_for(org, org.admin).get("/audit/", params)

    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_list_query_count_is_fixed(org, client_for, logged, django_assert_num_queries):
    client = client_for(org, org.admin)
    client.get("/audit/")  # warm the routing cache

    # session, user, the page of events
    with django_assert_num_queries(3):
        response = client.get("/audit/", {"action": "test.view"})
    assert response.status_code == 200


# --- Export --------------------------------------------------------------------------------------


def test_export_streams_a_download_and_is_recorded(org, client_for, in_tenant, logged):
    start = acme_head(org, in_tenant)

    response = client_for(org, org.admin).post(
        "/audit/export/", {"format": "json", "action": "test.view"}
    )

    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    disposition = response["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="audit-{org.tenant.public_id}-')
    records = json.loads(b"".join(response.streaming_content))
    assert [r["sequence"] for r in records] == [e.sequence for e in logged]
    with in_tenant(org):
        [event] = events_after(start)
    assert (event.action, event.actor_label, event.details["filters"]) == (
        "audit.exported",
        "admin@acme.test",
        {"action": "test.view"},
    )


@pytest.mark.parametrize("fmt", ["csv", "cef"])
def test_export_formats_download(org, client_for, logged, fmt):
    response = client_for(org, org.owner).post("/audit/export/", {"format": fmt})

    body = b"".join(response.streaming_content).decode()
    assert response.status_code == 200
    assert "test.view" in body
    assert response["Content-Disposition"].endswith(f'.{fmt}"')


def test_export_body_is_produced_after_the_view_returns(org, client_for, logged):
    response = client_for(org, org.admin).post("/audit/export/", {"format": "cef"})

    with CaptureQueriesContext(connection) as queries:
        body = b"".join(response.streaming_content).decode()

    # The events were read while the body streamed, not before the view returned.
    assert any("audit_auditevent" in query["sql"] for query in queries.captured_queries)
    assert body.count("act=test.view") == 5


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_export_is_refused_to_viewers_and_members(org, client_for, in_tenant, role):
    start = acme_head(org, in_tenant)

    response = client_for(org, org.user(role)).post("/audit/export/", {"format": "csv"})

    assert response.status_code == 403
    with in_tenant(org):
        assert [(e.action, e.result) for e in events_after(start)] == [("audit.exported", "denied")]


def test_export_needs_post_and_csrf(org, client_for):
    client = client_for(org, org.admin)
    assert client.get("/audit/export/", {"format": "csv"}).status_code == 405

    strict = Client(HTTP_HOST=org.host, enforce_csrf_checks=True)
    strict.cookies = client.cookies
    assert strict.post("/audit/export/", {"format": "csv"}).status_code == 403


def test_export_with_a_bad_format_changes_nothing(org, client_for, in_tenant):
    start = acme_head(org, in_tenant)

    response = client_for(org, org.admin).post("/audit/export/", {"format": "xml"}, follow=True)

    assert "One of: json, csv, cef." in response.content.decode()
    with in_tenant(org):
        assert events_after(start) == []


def test_export_under_asgi_streams_an_async_body(org, in_tenant, logged):
    """Under ASGI a sync body would be collected into a list first: the view gives an async one."""
    from audit.views import export_response

    request = AsyncRequestFactory().post("/audit/export/", HTTP_HOST=org.host)
    with in_tenant(org):
        export = exports.audit_log_export(
            actor=Actor.for_user(org.admin), format="cef", filters=EventFilters(action="test.view")
        )
        response = export_response(request, export)

    assert response.is_async

    async def collect() -> list[bytes]:
        return [chunk async for chunk in response]

    with in_tenant(org):
        body = b"".join(async_to_sync(collect)()).decode()
    assert body.count("\n") == 5 and "externalId=" in body


# --- Verify --------------------------------------------------------------------------------------


def test_verify_button_reports_an_intact_log(org, client_for, in_tenant):
    response = client_for(org, org.admin).post("/audit/verify/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Intact" in page
    with in_tenant(org):
        assert AuditEvent.objects.order_by("-sequence").first().action == "audit.verified"


def test_verify_button_names_the_broken_event(org, client_for, in_tenant, logged):
    with in_tenant(org):
        tamper(
            "UPDATE audit_auditevent SET details = '{}' WHERE sequence = %s", [logged[2].sequence]
        )

    page = client_for(org, org.owner).post("/audit/verify/").content.decode()

    assert "Broken" in page
    assert f"<strong>#{logged[2].sequence}</strong>: its contents changed" in page


def test_verify_is_refused_to_members(org, client_for):
    assert client_for(org, org.member).post("/audit/verify/").status_code == 403


# --- Alerts and rules ----------------------------------------------------------------------------


def test_alerts_page_lists_this_organizations_alerts(org, other_org, client_for, in_tenant):
    with in_tenant(other_org):
        exports.audit_log_export(
            actor=Actor.for_user(other_org.admin), format="csv", filters=EventFilters()
        )
    with in_tenant(org):
        exports.audit_log_export(
            actor=Actor.for_user(org.admin), format="csv", filters=EventFilters()
        )

    page = client_for(org, org.admin).get("/audit/alerts/").content.decode()

    assert page.count("The whole audit log was exported (csv) by admin@acme.test") == 1
    assert "globex" not in page


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_rules_can_be_switched_off_and_on(org, client_for, in_tenant, role):
    with in_tenant(org):
        rule = AlertRule.objects.get(code="full-log-export")
    client = client_for(org, org.user(role))

    off = client.post(f"/audit/rules/{rule.pk}/", {"is_active": "off"}, follow=True)
    with in_tenant(org):
        assert AlertRule.objects.get(pk=rule.pk).is_active is False
    client.post(f"/audit/rules/{rule.pk}/", {"is_active": "on"})

    assert "“Whole audit log exported” is off." in off.content.decode()
    with in_tenant(org):
        assert AlertRule.objects.get(pk=rule.pk).is_active is True
        assert [e.action for e in events_after(head() - 2)] == [
            "audit.rule_disabled",
            "audit.rule_enabled",
        ]


def test_the_rules_page_has_a_switch_per_rule(org, client_for):
    page = client_for(org, org.admin).get("/audit/rules/").content.decode()

    assert page.count('name="is_active" value="off"') == 4


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_rules_cannot_be_switched_by_viewers_and_members(org, client_for, in_tenant, role):
    with in_tenant(org):
        rule = AlertRule.objects.get(code="full-log-export")

    response = client_for(org, org.user(role)).post(
        f"/audit/rules/{rule.pk}/", {"is_active": "off"}
    )

    assert response.status_code == 403
    with in_tenant(org):
        assert AlertRule.objects.get(pk=rule.pk).is_active is True


def test_switching_an_unknown_rule_is_404_and_bad_input_changes_nothing(org, client_for, in_tenant):
    client = client_for(org, org.admin)
    with in_tenant(org):
        rule = AlertRule.objects.get(code="full-log-export")

    assert client.post("/audit/rules/999999/", {"is_active": "off"}).status_code == 404
    response = client.post(f"/audit/rules/{rule.pk}/", {"is_active": "maybe"}, follow=True)

    assert "Choose on or off." in response.content.decode()
    with in_tenant(org):
        assert AlertRule.objects.get(pk=rule.pk).is_active is True


def test_a_rate_limited_export_says_so_in_the_portal(org, client_for, settings):
    from django.core.cache import cache

    cache.clear()
    settings.AUDIT_EXPORT_RATE = "1/m"
    client = client_for(org, org.admin)
    first = client.post("/audit/export/", {"format": "csv"})
    b"".join(first.streaming_content)

    second = client.post("/audit/export/", {"format": "csv"}, follow=True)

    assert "Too many exports: try again in 1 minute(s)." in second.content.decode()


# --- Paging both ways, before/after, links, date-time pickers, acknowledgement ------------------


def test_pages_go_back_towards_the_newest(org, client_for, in_tenant):
    with in_tenant(org):
        made = [
            services.record(actor=SYSTEM, action="test.both", details={"n": n}) for n in range(120)
        ]
    client = client_for(org, org.admin)

    first = client.get("/audit/", {"action": "test.both"})
    older = client.get("/audit/", {"action": "test.both", "cursor": made[70].sequence})
    assert first.context["newer_url"] == ""  # nothing is newer than the newest page
    newer_url = older.context["newer_url"]
    assert newer_url == f"?action=test.both&after={made[69].sequence}"
    back = client.get("/audit/" + newer_url)

    shown = [row["event"].sequence for row in back.context["rows"]]
    assert shown == [event.sequence for event in reversed(made[70:120])]
    assert back.context["newer_url"] == ""  # that was the newest page again
    assert f"cursor={made[70].sequence}" in back.context["next_url"]
    assert client.get("/audit/", {"after": "x"}).status_code == 400


def test_changes_show_before_and_after_and_resources_link_to_their_pages(
    org, client_for, in_tenant
):
    from accounts import services as account_services
    from agents import services as agent_services

    owner = Actor.for_user(org.owner)
    with in_tenant(org):
        agent = agent_services.agent_create(
            actor=owner, name="Before", type="worker", cpu="0.1", memory="64MB"
        )
        agent_services.agent_update(actor=owner, agent_id=agent.pk, name="After")
        account_services.member_change_role(actor=owner, user_id=org.viewer.pk, role="member")

    page = client_for(org, org.admin).get("/audit/")
    rows = {row["event"].action: row for row in page.context["rows"]}

    assert rows["agent.updated"]["changes"] == [("name", "Before", "After")]
    assert rows["agent.updated"]["url"] == f"/agents/{agent.pk}/"
    assert rows["member.role_changed"]["changes"] == [("role", "viewer", "member")]
    assert rows["member.role_changed"]["url"] == "/members/"
    assert "<del>Before</del>" in page.text and "<ins>After</ins>" in page.text
    # Put back: the shared organization's viewer stays a viewer for other tests.
    with in_tenant(org):
        account_services.member_change_role(actor=owner, user_id=org.viewer.pk, role="viewer")


def test_time_filters_are_date_time_pickers_that_keep_their_value(org, client_for):
    page = client_for(org, org.admin).get("/audit/", {"start": "2026-01-31T09:30"})

    assert page.status_code == 200
    assert 'type="datetime-local"' in page.text
    assert 'value="2026-01-31T09:30"' in page.text


def test_an_alert_is_acknowledged_once_and_it_is_recorded(org, other_org, client_for, in_tenant):
    from audit.models import Alert

    with in_tenant(org):
        exports.audit_log_export(
            actor=Actor.for_user(org.admin), format="csv", filters=EventFilters()
        )
        alert = Alert.objects.get()
    path = f"/audit/alerts/{alert.pk}/acknowledge/"

    assert client_for(org, org.member).post(path).status_code == 403
    assert client_for(other_org, other_org.admin).post(path).status_code == 404
    with in_tenant(org):
        assert Alert.objects.get(pk=alert.pk).acknowledged_at is None

    client = client_for(org, org.admin)
    assert client.post(path).status_code == 302
    assert client.post(path).status_code == 302  # again: nothing more happens
    with in_tenant(org):
        alert = Alert.objects.get(pk=alert.pk)
        recorded = list(
            AuditEvent.objects.filter(action="audit.alert_acknowledged")
            .order_by("sequence")
            .values_list("actor_label", "resource_id", "result")
        )
    assert alert.acknowledged_by == org.admin.email and alert.acknowledged_at is not None
    assert recorded == [
        (org.member.email, "", "denied"),  # the member's refused attempt is on record too
        (org.admin.email, str(alert.pk), "success"),
    ]
    page = client.get("/audit/alerts/").text
    assert f"by {org.admin.email}" in page and "data-acknowledge" not in page
