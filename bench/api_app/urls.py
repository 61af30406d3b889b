"""The product's organization URLs, plus the floor view of the read benchmark."""

from django.urls import path

from api_app import views
from portal.urls_tenant import urlpatterns as product

urlpatterns = [path("bench/bare-agents/", views.bare_agents), *product]
