"""The portal's vault pages: secrets (write-only), knowledge documents, Settings (data key)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.actors import Actor
from core.errors import DomainError
from core.pages import require, requires
from vault import selectors, services
from vault.forms import KnowledgeForm, KnowledgeSearchForm, SecretForm
from vault.models import KnowledgeDocument, Secret


def _apply(form, error: ValidationError) -> None:
    for field, errors in error.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


# --- Secrets -------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@requires("secrets:read")
def secret_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = SecretForm(request.POST or None)
    status = 200
    if request.method == "POST":
        require(actor, "secrets:write")
        if form.is_valid():
            try:
                secret, created = services.secret_set(actor=actor, **form.cleaned_data)
            except ValidationError as error:
                _apply(form, error)
            else:
                verb = "added" if created else "replaced"
                messages.success(request, f"The secret {secret.name} is {verb}.")
                return redirect("vault:secret-list")
        status = 400
    context = {
        "form": form,
        "secrets": list(selectors.secret_list(actor=actor)),
        "can_write": actor.can("secrets:write"),
    }
    return render(request, "vault/secrets.html", context, status=status)


@require_POST
@requires("secrets:write")
def secret_delete(request: HttpRequest, actor: Actor, secret_id) -> HttpResponse:
    try:
        secret = services.secret_delete(actor=actor, secret_id=secret_id)
    except Secret.DoesNotExist as error:
        raise Http404("No such secret.") from error
    messages.success(request, f"The secret {secret.name} is deleted.")
    return redirect("vault:secret-list")


# --- Knowledge -----------------------------------------------------------------------------------


@require_GET
@requires("knowledge:read")
def knowledge_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    search = KnowledgeSearchForm(request.GET)
    query = search.cleaned_data if search.is_valid() else {}
    documents = selectors.knowledge_list(
        actor=actor,
        search=query.get("search", ""),
        tags=[query["tag"]] if query.get("tag") else [],
    )[:50]
    context = {
        "documents": list(documents),
        "search": search,
        "can_write": actor.can("knowledge:write"),
    }
    return render(request, "vault/knowledge_list.html", context)


def _document_form_page(request, form, document, status: int = 200) -> HttpResponse:
    return render(
        request, "vault/knowledge_form.html", {"form": form, "document": document}, status=status
    )


@require_http_methods(["GET", "POST"])
@requires("knowledge:write")
def knowledge_create(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = KnowledgeForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                document = services.knowledge_create(actor=actor, **form.cleaned_data)
            except ValidationError as error:
                _apply(form, error)
            else:
                messages.success(request, f"“{document.title}” is added.")
                return redirect("vault:knowledge-detail", document_id=document.pk)
        return _document_form_page(request, form, None, status=400)
    return _document_form_page(request, form, None)


@require_GET
@requires("knowledge:read")
def knowledge_detail(request: HttpRequest, actor: Actor, document_id) -> HttpResponse:
    try:
        document = selectors.knowledge_get(actor=actor, document_id=document_id)
    except KnowledgeDocument.DoesNotExist as error:
        raise Http404("No such document.") from error
    context = {"document": document, "can_write": actor.can("knowledge:write")}
    return render(request, "vault/knowledge_detail.html", context)


@require_http_methods(["GET", "POST"])
@requires("knowledge:write")
def knowledge_edit(request: HttpRequest, actor: Actor, document_id) -> HttpResponse:
    try:
        document = selectors.knowledge_get(actor=actor, document_id=document_id)
    except KnowledgeDocument.DoesNotExist as error:
        raise Http404("No such document.") from error
    if request.method == "GET":
        initial = {
            "title": document.title,
            "tags": ", ".join(document.tags),
            "classification": document.classification,
            "text": document.text,
        }
        return _document_form_page(request, KnowledgeForm(initial=initial), document)
    form = KnowledgeForm(request.POST)
    if form.is_valid():
        try:
            services.knowledge_update(actor=actor, document_id=document.pk, **form.cleaned_data)
        except ValidationError as error:
            _apply(form, error)
        else:
            messages.success(request, "Saved.")
            return redirect("vault:knowledge-detail", document_id=document.pk)
    return _document_form_page(request, form, document, status=400)


@require_POST
@requires("knowledge:write")
def knowledge_delete(request: HttpRequest, actor: Actor, document_id) -> HttpResponse:
    try:
        services.knowledge_delete(actor=actor, document_id=document_id)
    except KnowledgeDocument.DoesNotExist as error:
        raise Http404("No such document.") from error
    messages.success(request, "The document is deleted.")
    return redirect("vault:knowledge-list")


# --- Settings: the organization's data key -------------------------------------------------------


@never_cache
@require_GET
@requires("settings:write")
def settings_page(request: HttpRequest, actor: Actor) -> HttpResponse:
    state = selectors.key_state(actor=actor)
    context = {
        "state": state,
        "stalled": services.rotation_is_stalled(state),
        "can_rotate": actor.can("data_keys:rotate"),
        "perms_delete": actor.can("organization:delete"),
    }
    return render(request, "vault/settings.html", context)


@require_POST
@requires("settings:write")
def data_key_rotate(request: HttpRequest, actor: Actor) -> HttpResponse:
    try:
        if request.POST.get("resume"):
            services.rotation_resume(actor=actor)
            messages.success(request, "Re-encryption resumed.")
        else:
            state = services.data_key_rotate(actor=actor)
            messages.success(
                request,
                f"New data key v{state.active_version}: new writes use it now; "
                f"{state.rows_total} rows are being re-encrypted.",
            )
    except DomainError as error:
        messages.error(request, error.message)
    return redirect("vault:settings")
