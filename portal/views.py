"""The portal shell: the public landing and signup pages, and an organization's dashboard."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/landing.html")


def signup(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/signup.html")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/dashboard.html")
