"""The benchmark's URLs (served in place of the product's, in every variant)."""

from django.urls import path

from routing_app import views

urlpatterns = [
    path("bench/ping/", views.ping),
    path("bench/query/", views.first_user),
]
