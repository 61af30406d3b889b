"""URLs of the public host: the landing page, signup and staff admin."""

from django.contrib import admin
from django.urls import path

from accounts.throttle import SIGNUP_LIMITS, throttle_posts
from core import api
from portal import operations, views

handler500 = api.server_error

urlpatterns = [
    path("", views.landing, name="landing"),
    path("signup/", throttle_posts(*SIGNUP_LIMITS)(views.signup), name="signup"),
    path("go/", views.organization_go, name="organization-go"),
    path("admin/", admin.site.urls),
    path("metrics", operations.metrics_view, name="metrics"),
]
