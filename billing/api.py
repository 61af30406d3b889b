"""The usage API: reports per meter, reported usage events (CloudEvents 1.0), custom meters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing import pricing, selectors, services
from billing.ledger import BUILTIN_METERS
from billing.models import Aggregation, BudgetSubject, Meter
from core.api import NOT_BLANK, ApiView, InputSerializer, PatternField
from core.parsers import StrictJSONParser

CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"


class CloudEventParser(StrictJSONParser):
    """One CloudEvent in structured mode (the project's strict JSON decoder, another media
    type)."""

    media_type = CLOUDEVENT


class CloudEventBatchParser(StrictJSONParser):
    """A batch of CloudEvents: a JSON array."""

    media_type = CLOUDEVENT_BATCH


# Reports -----------------------------------------------------------------------------------------


class ReportQuerySerializer(InputSerializer):
    meter = PatternField(r"^[a-z][a-z0-9_]{1,39}$", required=False)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    granularity = serializers.ChoiceField(["hour", "day"], default="day")
    group_by = PatternField(r"^[A-Za-z0-9_.]{1,200}$", required=False)


class BucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    value = serializers.IntegerField()
    groups = serializers.DictField(child=serializers.IntegerField(), required=False)


class ReportSerializer(serializers.Serializer):
    meter = serializers.CharField()
    unit = serializers.CharField()
    aggregation = serializers.ChoiceField(Aggregation.values)
    granularity = serializers.ChoiceField(["hour", "day"])
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.CharField(allow_null=True)
    buckets = BucketSerializer(many=True)
    total = serializers.IntegerField()


class SummaryItemSerializer(serializers.Serializer):
    meter = serializers.CharField()
    name = serializers.CharField()
    unit = serializers.CharField()
    used = serializers.IntegerField()
    quota = serializers.IntegerField(allow_null=True)


class SummarySerializer(serializers.Serializer):
    period_start = serializers.DateTimeField()
    meters = SummaryItemSerializer(many=True)


def report_body(report: selectors.Report) -> dict[str, Any]:
    return {
        "meter": report.meter.slug,
        "unit": report.meter.unit,
        "aggregation": report.meter.aggregation,
        "granularity": report.granularity,
        "start": report.start,
        "end": report.end,
        "group_by": report.group_by,
        "buckets": report.buckets,
        "total": report.total,
    }


class UsageReportApi(ApiView):
    """Usage of one meter by hour or day (the current hour live), or without `meter` a summary of
    every meter for the current month beside its quota."""

    required = {"GET": "usage:read"}
    reads_usage = True  # its answer counts this request: billing.throttles

    @extend_schema(
        parameters=[ReportQuerySerializer],
        responses={
            200: PolymorphicProxySerializer(
                component_name="UsageReportOrSummary",
                serializers=[ReportSerializer, SummarySerializer],
                resource_type_field_name=None,
            )
        },
    )
    def get(self, request: Request) -> Response:
        query = ReportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        values = query.validated_data
        if "meter" not in values:
            summary = selectors.usage_summary(actor=self.actor, quotas=selectors.monthly_quotas())
            now = timezone.now()
            return Response(
                SummarySerializer(
                    {
                        "period_start": now.replace(
                            day=1, hour=0, minute=0, second=0, microsecond=0
                        ),
                        "meters": [
                            {
                                "meter": item.meter.slug,
                                "name": item.meter.name,
                                "unit": item.meter.unit,
                                "used": item.used,
                                "quota": item.quota,
                            }
                            for item in summary
                        ],
                    }
                ).data
            )
        report = selectors.usage_report(
            actor=self.actor,
            meter=values["meter"],
            start=values.get("start"),
            end=values.get("end"),
            granularity=values["granularity"],
            group_by=values.get("group_by"),
        )
        return Response(ReportSerializer(report_body(report)).data)


# Reported events ---------------------------------------------------------------------------------


class IngestedSerializer(serializers.Serializer):
    received = serializers.IntegerField(help_text="Events in the request.")
    counted = serializers.IntegerField(help_text="Events seen for the first time.")
    duplicates = serializers.IntegerField(help_text="Events already counted (same source, id).")


class CloudEventSerializer(InputSerializer):
    """The schema of one event (billing.services validates it). Extension attributes (1 to 20 of
    a-z, 0-9) are accepted too, which OpenAPI 3.0 cannot state beside `additionalProperties`."""

    specversion = serializers.ChoiceField(["1.0"])
    id = PatternField(services.TEXT_PATTERN)
    source = PatternField(services.TEXT_PATTERN)
    type = PatternField(services.TEXT_PATTERN, help_text="`llm.tokens`, or a custom meter's.")
    time = serializers.DateTimeField(
        required=False, help_text="RFC 3339 with its offset, within the last 7 days."
    )
    subject = PatternField(services.TEXT_PATTERN, required=False)
    datacontenttype = PatternField(services.TEXT_PATTERN, required=False)
    dataschema = PatternField(services.TEXT_PATTERN, required=False)
    data = serializers.JSONField(required=False, allow_null=True)
    agentid = serializers.UUIDField(
        required=False, help_text="Extension: the agent the usage is attributed to (budgets)."
    )


class UsageEventsApi(ApiView):
    """Report usage (CloudEvents 1.0, structured mode): one event as
    `application/cloudevents+json`, or a list of at most 1,000 as
    `application/cloudevents-batch+json`. An event whose (source, id) was seen in the last 7
    days counts once. `llm.tokens` events carry `data: {model, input_tokens, output_tokens}`."""

    required = {"POST": "usage:report"}
    parser_classes = [CloudEventParser, CloudEventBatchParser]
    # Counted by the ingestion itself against `usage_events`, with the events, in one Redis call.
    rate_limit_resource = None

    @extend_schema(
        request={
            CLOUDEVENT: CloudEventSerializer,
            CLOUDEVENT_BATCH: {
                "type": "array",
                "items": {"$ref": "#/components/schemas/CloudEventRequest"},
                "minItems": 1,
                "maxItems": settings.BILLING_MAX_BATCH_EVENTS,
            },
        },
        responses={202: IngestedSerializer},
    )
    def post(self, request: Request) -> Response:
        batch = request.content_type.split(";")[0].strip().lower() == CLOUDEVENT_BATCH
        data = request.data
        if batch and not isinstance(data, list):
            raise ValidationError({"events": ["A batch is a JSON array of CloudEvents."]})
        if not batch and not isinstance(data, dict):
            raise ValidationError({"event": ["Send one CloudEvent (or use the batch type)."]})
        ingested = services.usage_events_ingest(
            actor=self.actor,
            events=data if batch else [data],
            api_key=getattr(request.auth, "api_key", None),
        )
        request._request.rate_limit_headers = ingested.admission.headers
        return Response(
            {
                "received": ingested.received,
                "counted": ingested.counted,
                "duplicates": ingested.duplicates,
            },
            status=202,
        )


# Custom meters -----------------------------------------------------------------------------------


class MeterSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    unit = serializers.CharField()
    aggregation = serializers.ChoiceField(Aggregation.values)
    is_builtin = serializers.BooleanField()
    event_type = serializers.CharField()
    value_path = serializers.CharField()
    group_by = serializers.ListField(child=serializers.CharField())


class MeterInputSerializer(InputSerializer):
    slug = PatternField(r"^[a-z][a-z0-9_]{1,39}$", reserved=tuple(BUILTIN_METERS))
    name = PatternField(NOT_BLANK, max_length=80)
    event_type = PatternField(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    aggregation = serializers.ChoiceField(Aggregation.values)
    value_path = PatternField(
        r"^([A-Za-z0-9_]{1,40}(\.[A-Za-z0-9_]{1,40}){0,4})?$",
        required=False,
        default="",
        allow_blank=True,
        help_text=(
            "Where the value is in the event's data (SUM, MAX: a whole number; UNIQUE_COUNT: "
            "the string or whole number counted distinct); empty for COUNT."
        ),
    )
    group_by = serializers.ListField(
        child=PatternField(r"^[A-Za-z0-9_]{1,40}(\.[A-Za-z0-9_]{1,40}){0,4}$"),
        max_length=5,
        required=False,
        default=list,
    )
    unit = PatternField(NOT_BLANK, max_length=32, required=False, default="units")


def _meter_body(meter: selectors.MeterInfo | Meter) -> dict[str, Any]:
    return {
        "slug": meter.slug,
        "name": meter.name,
        "unit": meter.unit,
        "aggregation": meter.aggregation,
        "is_builtin": getattr(meter, "is_builtin", False),
        "event_type": meter.event_type,
        "value_path": meter.value_path,
        "group_by": list(meter.group_by),
    }


class MeterListApi(ApiView):
    """The meters: built-in ones and the organization's own (over its reported events)."""

    required = {"GET": "usage:read", "POST": "usage:manage"}

    @extend_schema(responses={200: MeterSerializer(many=True)})
    def get(self, request: Request) -> Response:
        meters = selectors.meters_list(actor=self.actor)
        return Response(MeterSerializer([_meter_body(m) for m in meters], many=True).data)

    @extend_schema(
        request=MeterInputSerializer,
        responses={201: MeterSerializer, 409: OpenApiResponse(description="At most 50 meters.")},
    )
    def post(self, request: Request) -> Response:
        data = MeterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        meter = services.meter_create(actor=self.actor, **data.validated_data)
        return Response(MeterSerializer(_meter_body(meter)).data, status=201)


# Invoices ----------------------------------------------------------------------------------------


class InvoiceLineSerializer(serializers.Serializer):
    description = serializers.CharField()
    meter = serializers.CharField(help_text="Empty for the plan fee.")
    quantity = serializers.DecimalField(max_digits=20, decimal_places=6, coerce_to_string=True)
    unit = serializers.CharField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=6, coerce_to_string=True)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)


class InvoiceSerializer(serializers.Serializer):
    number = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    currency = serializers.CharField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)
    issued_at = serializers.DateTimeField()
    lines = InvoiceLineSerializer(many=True)


class InvoiceListApi(ApiView):
    """Closed months, newest first: numbered invoices with their lines (amounts are decimal
    strings in the invoice's currency)."""

    required = {"GET": "billing:read"}

    @extend_schema(responses={200: InvoiceSerializer(many=True)})
    def get(self, request: Request) -> Response:
        invoices = selectors.invoice_list(actor=self.actor)
        return Response(InvoiceSerializer(invoices, many=True).data)


class InvoiceDetailApi(ApiView):
    """One invoice by its number."""

    required = {"GET": "billing:read"}

    @extend_schema(responses={200: InvoiceSerializer})
    def get(self, request: Request, number: str) -> Response:
        invoice = selectors.invoice_get(actor=self.actor, number=number)
        return Response(InvoiceSerializer(invoice).data)


# Spend budgets ----------------------------------------------------------------------------------


class BudgetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject_type = serializers.ChoiceField(BudgetSubject.values)
    subject_id = serializers.CharField(help_text="The API key's id, or the agent's id.")
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=True)
    currency = serializers.CharField()
    spent = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        coerce_to_string=True,
        help_text="What the key or agent spent this month so far (the price table's prices).",
    )
    projected = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        coerce_to_string=True,
        help_text="This month's spend at the pace so far, to the month's end.",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": r"^(\d{1,6}(\.\d{1,2})?|1000000(\.0{1,2})?)$",
        "example": "25.00",
        "description": "Per calendar month (UTC), from 0.00 to 1,000,000.00 in the currency.",
    }
)
class BudgetAmountField(serializers.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=9,
            decimal_places=2,
            min_value=Decimal("0"),
            max_value=services.BUDGET_MAX,
            **kwargs,
        )


class BudgetCreateSerializer(InputSerializer):
    subject_type = serializers.ChoiceField(BudgetSubject.values)
    subject_id = PatternField(
        r"^([0-9]{1,18}|[0-9a-fA-F-]{36})$", help_text="The API key's id, or the agent's id."
    )
    amount = BudgetAmountField()
    currency = serializers.ChoiceField([pricing.CURRENCY], default=pricing.CURRENCY)


class BudgetUpdateSerializer(InputSerializer):
    amount = BudgetAmountField()


def _budget_body(view: selectors.BudgetView) -> dict[str, Any]:
    budget = view.budget
    return {
        "id": budget.pk,
        "subject_type": budget.subject_type,
        "subject_id": budget.subject_id,
        "amount": budget.amount,
        "currency": budget.currency,
        "spent": view.spent,
        "projected": view.projected,
        "created_at": budget.created_at,
        "updated_at": budget.updated_at,
    }


class BudgetListApi(ApiView):
    """Monthly spend budgets of API keys and agents, with what each spent this month. Past its
    budget, a key's or agent's requests are refused: 429 `budget_exceeded`."""

    required = {"GET": "usage:read", "POST": "budgets:manage"}
    reads_usage = True  # its answer counts this request: billing.throttles

    @extend_schema(responses={200: BudgetSerializer(many=True)})
    def get(self, request: Request) -> Response:
        views = selectors.budget_list(actor=self.actor)
        return Response(BudgetSerializer([_budget_body(v) for v in views], many=True).data)

    @extend_schema(request=BudgetCreateSerializer, responses={201: BudgetSerializer})
    def post(self, request: Request) -> Response:
        data = BudgetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        budget = services.budget_create(actor=self.actor, **data.validated_data)
        view = selectors.budget_get(actor=self.actor, budget_id=budget.pk)
        return Response(BudgetSerializer(_budget_body(view)).data, status=201)


class BudgetDetailApi(ApiView):
    """One budget: read, change its amount, or remove it."""

    required = {"GET": "usage:read", "PATCH": "budgets:manage", "DELETE": "budgets:manage"}
    reads_usage = True  # its answer counts this request: billing.throttles

    @extend_schema(responses={200: BudgetSerializer})
    def get(self, request: Request, budget_id: int) -> Response:
        view = selectors.budget_get(actor=self.actor, budget_id=budget_id)
        return Response(BudgetSerializer(_budget_body(view)).data)

    @extend_schema(request=BudgetUpdateSerializer, responses={200: BudgetSerializer})
    def patch(self, request: Request, budget_id: int) -> Response:
        # A PATCH changes what it names (the document's `Patched…` body): `{}` changes nothing.
        data = BudgetUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        if "amount" in data.validated_data:
            services.budget_update(
                actor=self.actor, budget_id=budget_id, amount=data.validated_data["amount"]
            )
        view = selectors.budget_get(actor=self.actor, budget_id=budget_id)
        return Response(BudgetSerializer(_budget_body(view)).data)

    @extend_schema(responses={204: OpenApiResponse(description="Removed.")})
    def delete(self, request: Request, budget_id: int) -> Response:
        services.budget_delete(actor=self.actor, budget_id=budget_id)
        return Response(status=204)
