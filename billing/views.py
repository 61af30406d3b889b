"""The Usage page: every meter this month against its quota, a chart of one meter by hour or day
over a chosen range (Chart.js, vendored under static/), and the same numbers as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit.exports import csv_escape
from billing import invoicing, limits, pricing, selectors, services
from billing.models import BudgetSubject
from core.actors import Actor
from core.pages import requires

DEFAULT_DAYS = 7


def _range(request: HttpRequest) -> tuple[str, str, datetime, datetime, dict[str, str]]:
    """The page's date range (whole UTC days, the end day included) and any errors."""
    today = timezone.now().astimezone(UTC).date()
    raw_start = request.GET.get("start") or (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    raw_end = request.GET.get("end") or today.isoformat()
    problems: dict[str, str] = {}
    try:
        start_day = datetime.strptime(raw_start, "%Y-%m-%d").date()
    except ValueError:
        problems["start"] = "A date like 2026-01-31."
        start_day = today - timedelta(days=DEFAULT_DAYS - 1)
    try:
        end_day = datetime.strptime(raw_end, "%Y-%m-%d").date()
    except ValueError:
        problems["end"] = "A date like 2026-01-31."
        end_day = today
    start = datetime.combine(start_day, time.min, tzinfo=UTC)
    end = min(datetime.combine(end_day + timedelta(days=1), time.min, tzinfo=UTC), timezone.now())
    return raw_start, raw_end, start, end, problems


def _report(request: HttpRequest, actor: Actor) -> dict[str, Any]:
    meters = selectors.meters_list(actor=actor)
    slugs = [meter.slug for meter in meters]
    meter = request.GET.get("meter") or "api_requests"
    if meter not in slugs:
        meter = "api_requests"
    granularity = "hour" if request.GET.get("granularity") == "hour" else "day"
    group_by = request.GET.get("group_by") or None
    raw_start, raw_end, start, end, problems = _range(request)
    report = None
    if not problems:
        try:
            report = selectors.usage_report(
                actor=actor,
                meter=meter,
                start=start,
                end=end,
                granularity=granularity,
                group_by=group_by,
            )
        except ValidationError as error:
            problems = {name: " ".join(messages) for name, messages in error.message_dict.items()}
    return {
        "meters": meters,
        "meter": meter,
        "granularity": granularity,
        "group_by": group_by or "",
        "start": raw_start,
        "end": raw_end,
        "report": report,
        "errors": problems,
    }


def money_display(amount: Decimal, currency: str | None = pricing.CURRENCY) -> str:
    """2 decimals, 4 below one unit (a month's first requests cost fractions of a cent)."""
    places = 4 if Decimal(0) < abs(amount) < 1 else 2
    return f"{amount:,.{places}f}" + (f" {currency}" if currency else "")


def _costs(actor: Actor) -> dict[str, Any]:
    """This month's cost so far and projected to its end: the organization's (the invoice's
    lines so far, unrounded) and each API key's and agent's, beside their budgets."""
    from tenants import context as tenant_context

    tenant = tenant_context.require_tenant()
    now = timezone.now()
    start, elapsed = selectors.month_progress(now)
    lines = invoicing.invoice_lines(tenant, start, now)
    usage_cost = sum((line.quantity * line.unit_price for line in lines if line.meter), Decimal(0))
    budgets = {(b.subject_type, b.subject_id): b for b in selectors.budgets(actor=actor)}
    groups = []
    for subject_type, kind in services.budget_subjects.items():
        names = dict(kind.choices(actor))
        spend = selectors.period_spend(actor=actor, subject_type=subject_type)
        ids = set(spend) | {subject for (kind_, subject) in budgets if kind_ == subject_type}
        rows = []
        for subject in sorted(ids, key=lambda i: names.get(i, i).lower()):
            so_far, projected = spend.get(subject, (Decimal(0), Decimal(0)))
            budget = budgets.get((subject_type, subject))
            view = selectors.BudgetView(budget, so_far, projected) if budget else None
            rows.append(
                {
                    "name": names.get(subject, f"#{subject}"),
                    "so_far": money_display(so_far, None),
                    "projected": money_display(projected, None),
                    "budget": view,
                    "budget_display": f"{view.budget.amount:,.2f}" if view else "",
                    "is_over": bool(view and projected > view.budget.amount),
                }
            )
        groups.append(
            {
                "type": subject_type,
                "label": BudgetSubject(subject_type).label,
                "noun": BudgetSubject(subject_type).label.replace("Agent", "agent"),
                "rows": rows,
                "choices": sorted(names.items(), key=lambda item: item[1].lower()),
            }
        )
    return {
        "so_far": money_display(usage_cost),
        "projected": money_display(usage_cost / elapsed),
        "plan_fee": money_display(
            Decimal(limits.plan_of(tenant.plan_id).price_monthly_cents) / 100
        ),
        "groups": groups,
        "can_manage": actor.can("budgets:manage"),
        "currency": pricing.CURRENCY,
    }


def _overrides(actor: Actor) -> list[dict[str, Any]]:
    """Staff's temporary limits in force, as the pages list them."""
    rows = []
    for view in selectors.limit_overrides(actor=actor):
        if view.is_quota:
            label = f"{view.target} (monthly quota)"
            limit = f"{view.limit:,} a month"
        else:
            label = f"{view.target} (rate limit)"
            limit = selectors.rate_display(view.limit, view.window_seconds)
        rows.append({**view.__dict__, "label": label, "limit_display": limit})
    return rows


def _alert_rows(actor: Actor) -> list[dict[str, Any]]:
    """This month's alerts of quotas and budgets, worded for the page."""
    names = {
        subject_type: dict(kind.choices(actor))
        for subject_type, kind in services.budget_subjects.items()
    }
    rows = []
    for alert in selectors.usage_alerts(actor=actor):
        if alert["kind"] == "budget":
            subject_type = alert.get("subject_type", "")
            name = names.get(subject_type, {}).get(alert.get("subject_id"), alert.get("subject_id"))
            label = (
                BudgetSubject(subject_type).label if subject_type in BudgetSubject.values else ""
            )
            what = f"Budget of {label.replace('Agent', 'agent')} {name}"
            spent, amount = Decimal(alert["spent"]), Decimal(alert["amount"])
            used = f"{spent:,.2f} of {amount:,.2f} {alert['currency']}"
        else:
            what = f"Quota on {alert.get('meter')}"
            used = f"{alert.get('used', 0):,} of {alert.get('quota', 0):,}"
        rows.append(
            {
                "at": alert["at"],
                "what": what,
                "percent": alert.get("threshold_percent"),
                "used": used,
                "refused": bool(alert.get("refused")),
            }
        )
    return rows


@requires("usage:read")
def usage(request: HttpRequest, actor: Actor) -> HttpResponse:
    from tenants import context as tenant_context

    context = _report(request, actor)
    context["costs"] = _costs(actor)
    summary = selectors.usage_summary(actor=actor, quotas=selectors.monthly_quotas())
    tenant = tenant_context.require_tenant()
    in_force = limits.monthly_quotas(tenant)
    temporary = limits.quota_overrides_of(tenant.pk)
    context["summary"] = [
        {
            "meter": item.meter,
            "used": item.used,
            "quota": item.quota,
            "percent": min(100, round(item.used * 100 / item.quota)) if item.quota else None,
            "used_display": f"{item.used:,}",
            "quota_display": f"{item.quota:,}" if item.quota else "",
            "is_hard": bool(item.quota is not None and in_force[item.meter.slug].is_hard),
            "temporary_until": getattr(temporary.get(item.meter.slug), "expires_at", None),
        }
        for item in summary
    ]
    context["alerts"] = _alert_rows(actor)
    context["overrides"] = _overrides(actor)
    report = context["report"]
    if report is not None:
        context["total_display"] = f"{report.total:,}"
        context["chart"] = {
            "labels": [
                bucket["start"].strftime(
                    "%Y-%m-%d %H:00" if report.granularity == "hour" else "%Y-%m-%d"
                )
                for bucket in report.buckets
            ],
            "values": [bucket["value"] for bucket in report.buckets],
            "groups": sorted({name for b in report.buckets for name in b.get("groups", {})}),
            "grouped": [b.get("groups", {}) for b in report.buckets],
            "unit": report.meter.unit,
        }
        context["group_choices"] = list(report.meter.group_by)
        context["rows"] = [
            (bucket, [bucket.get("groups", {}).get(name, 0) for name in context["chart"]["groups"]])
            for bucket in report.buckets
        ]
    return render(request, "billing/usage.html", context)


@require_POST
@requires("budgets:manage")
def budget_save(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Set the monthly budget of a key or agent (a new one, or a new amount), or remove it."""
    subject_type, _, subject_id = request.POST.get("subject", "").partition(":")
    existing = next(
        (
            budget
            for budget in selectors.budgets(actor=actor)
            if (budget.subject_type, budget.subject_id) == (subject_type, subject_id)
        ),
        None,
    )
    try:
        if request.POST.get("remove"):
            if existing is None:
                raise ValidationError("That key or agent has no budget.")
            services.budget_delete(actor=actor, budget_id=existing.pk)
            messages.success(request, "Budget removed.")
            return redirect("billing:usage")
        try:
            amount = Decimal(request.POST.get("amount", "").strip())
        except InvalidOperation:
            raise ValidationError({"amount": ["A decimal amount, e.g. “25.00”."]}) from None
        if existing is not None:
            services.budget_update(actor=actor, budget_id=existing.pk, amount=amount)
        else:
            services.budget_create(
                actor=actor, subject_type=subject_type, subject_id=subject_id, amount=amount
            )
    except ValidationError as refused:
        messages.error(request, " ".join(refused.messages))
    except ObjectDoesNotExist:
        messages.error(request, "No such API key or agent.")
    else:
        messages.success(request, "Budget saved.")
    return redirect("billing:usage")


@requires("usage:read")
def usage_download(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The chart's numbers as CSV or JSON (the API's report shape)."""
    context = _report(request, actor)
    report = context["report"]
    if report is None:
        return HttpResponse(
            "; ".join(f"{k}: {v}" for k, v in context["errors"].items()),
            status=400,
            content_type="text/plain",
        )
    name = f"usage-{report.meter.slug}-{context['start']}-{context['end']}"
    if request.GET.get("format") == "json":
        from billing.api import report_body

        response = HttpResponse(
            json.dumps(report_body(report), cls=DjangoJSONEncoder, indent=2),
            content_type="application/json",
        )
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
    out = io.StringIO()
    writer = csv.writer(out)
    groups = sorted({n for b in report.buckets for n in b.get("groups", {})})
    writer.writerow(["start", "end", "meter", "unit", "value", *map(csv_escape, groups)])
    for bucket in report.buckets:
        writer.writerow(
            [
                bucket["start"].isoformat(),
                bucket["end"].isoformat(),
                report.meter.slug,
                csv_escape(report.meter.unit),
                bucket["value"],
                *[bucket.get("groups", {}).get(n, 0) for n in groups],
            ]
        )
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


# The Billing page ---------------------------------------------------------------------------------


def _plan_card(plan: Any, current: bool) -> dict[str, Any]:
    per_resource = limits.plan_limits(plan.pk)
    rows = [
        ("Price", f"{Decimal(plan.price_monthly_cents) / 100:,.2f} USD a month"),
        ("API requests", f"{plan.requests_per_minute:,} a minute"),
        ("Tasks", _rate(per_resource["tasks"])),
        (
            "Gateway messages",
            f"{plan.messages_per_month:,} a month, {_rate(per_resource['publish'])}",
        ),
        ("Usage reports", _rate(per_resource["usage_events"])),
        ("Agents", f"{plan.max_agents:,}"),
        ("Running instances", f"{plan.max_instances:,}"),
    ]
    return {"plan": plan, "rows": rows, "is_current": current}


def _rate(value: tuple[int, int]) -> str:
    return selectors.rate_display(*value)


@requires("billing:read")
def billing(request: HttpRequest, actor: Actor) -> HttpResponse:
    from tenants import context as tenant_context
    from tenants.models import Plan

    tenant = tenant_context.require_tenant()
    with tenant_context.public_context():
        plans = list(Plan.objects.filter(is_public=True).order_by("price_monthly_cents"))
        if tenant.plan_id not in {plan.pk for plan in plans}:
            plans.insert(0, Plan.objects.get(pk=tenant.plan_id))
    return render(
        request,
        "billing/billing.html",
        {
            "plans": [_plan_card(plan, plan.pk == tenant.plan_id) for plan in plans],
            "invoices": selectors.invoice_list(actor=actor),
            "can_change": actor.can("billing:manage"),
            "overrides": _overrides(actor),
        },
    )


@requires("billing:read")
def invoice(request: HttpRequest, actor: Actor, number: str) -> HttpResponse:
    """One invoice: printable HTML, or JSON (the API's shape) with ?format=json."""
    from billing.api import InvoiceSerializer
    from billing.models import Invoice

    try:
        found = selectors.invoice_get(actor=actor, number=number)
    except Invoice.DoesNotExist as error:
        raise Http404("No such invoice.") from error
    if request.GET.get("format") == "json":
        response = HttpResponse(
            json.dumps(InvoiceSerializer(found).data, cls=DjangoJSONEncoder, indent=2),
            content_type="application/json",
        )
        response["Content-Disposition"] = f'attachment; filename="{found.number}.json"'
        return response
    return render(request, "billing/invoice.html", {"invoice": found, "lines": found.lines.all()})
