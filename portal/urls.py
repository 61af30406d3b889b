from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("deletion/", views.deletion, name="deletion"),
    path("deletion/export/", views.deletion_export, name="deletion-export"),
]
