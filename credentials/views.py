"""The portal's API keys page: create (the secret shown once), list and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from core.actors import Actor
from core.pages import requires
from credentials import selectors, services
from credentials.forms import ApiKeyForm
from credentials.models import ApiKey
from tenants.ratelimit import RateLimited, RateLimiterUnavailable

# The session holds a new key's secret between the POST that created it and the GET it redirects
# to (post/redirect/get: a reload never creates a second key); that GET takes it out again.
CREATED_SESSION_KEY = "credentials.created_api_key"


def _page(
    request: HttpRequest, actor: Actor, form: ApiKeyForm, *, created=None, status: int = 200
) -> HttpResponse:
    keys = list(selectors.api_key_list(actor=actor))
    if created is not None:
        created = {
            "key": next((key for key in keys if key.pk == created["id"]), None),
            "raw": created["raw"],
        }
        if created["key"] is None:
            created = None
    context = {"form": form, "keys": keys, "created": created}
    return render(request, "credentials/api_keys.html", context, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@requires(services.MANAGE_PERMISSION)
def api_key_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    scopes = services.grantable_scopes(actor)
    if request.method == "GET":
        # Shown once: the first page after the creating POST takes the secret out of the session.
        created = request.session.pop(CREATED_SESSION_KEY, None)
        return _page(request, actor, ApiKeyForm(scopes=scopes), created=created)
    form = ApiKeyForm(request.POST, scopes=scopes)
    if form.is_valid():
        try:
            key, raw = services.api_key_create(
                actor=actor,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(),
            )
        except ValidationError as error:
            for field, errors in error.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        except RateLimited:
            form.add_error(None, "Too many keys created recently: try again later.")
            return _page(request, actor, form, status=429)
        except RateLimiterUnavailable:
            form.add_error(None, "Keys cannot be created right now: try again shortly.")
            return _page(request, actor, form, status=503)
        else:
            request.session[CREATED_SESSION_KEY] = {"id": key.pk, "raw": raw}
            return redirect(reverse("credentials:api-key-list") + "#created-key")
    return _page(request, actor, form, status=400)


@require_POST
@requires(services.MANAGE_PERMISSION)
def api_key_revoke(request: HttpRequest, actor: Actor, key_id: int) -> HttpResponse:
    try:
        key = services.api_key_revoke(actor=actor, key_id=key_id)
    except ApiKey.DoesNotExist as error:
        raise Http404("No such API key.") from error
    messages.success(request, f"The key “{key.name}” ({key.prefix}) is revoked.")
    return redirect("credentials:api-key-list")
