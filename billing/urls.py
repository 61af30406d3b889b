"""The portal's billing pages."""

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/download", views.usage_download, name="usage-download"),
    path("usage/budgets", views.budget_save, name="budget-save"),
    path("billing/", views.billing, name="billing"),
    path("billing/invoices/<str:number>", views.invoice, name="invoice"),
]
