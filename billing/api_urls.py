"""API routes of billing, under /api/v1/."""

from django.urls import path

from billing import api

app_name = "billing_api"

urlpatterns = [
    path("usage/", api.UsageReportApi.as_view(), name="usage-report"),
    path("usage/events", api.UsageEventsApi.as_view(), name="usage-events"),
    path("usage/meters/", api.MeterListApi.as_view(), name="meter-list"),
    path("usage/budgets/", api.BudgetListApi.as_view(), name="budget-list"),
    path("usage/budgets/<int:budget_id>", api.BudgetDetailApi.as_view(), name="budget-detail"),
    path("invoices/", api.InvoiceListApi.as_view(), name="invoice-list"),
    path(
        "invoices/<str:number>",
        api.InvoiceDetailApi.as_view(),
        name="invoice-detail",
    ),
]
