"""Staff admin (public host): platform-wide config defaults. Limit overrides per organization are
on the organization's page (organizations.admin), saved through agents.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from agents import services
from agents.configuration import validate_entry
from core.actors import Actor
from tenants.models import PlatformConfigDefault


class PlatformConfigDefaultForm(forms.ModelForm):
    class Meta:
        model = PlatformConfigDefault
        fields = ["key", "value"]
        help_texts = {
            "key": "`agents.defaults` (every agent) or `agents.<type>`; the lowest layer of "
            "every organization's agent configuration.",
            "value": "JSON, 64 KB at most; a JSON object for `agents.*` keys.",
        }

    def clean(self) -> dict:
        cleaned = super().clean()
        if "key" in cleaned and "value" in cleaned:
            try:
                validate_entry(cleaned["key"], cleaned["value"])
            except ValidationError as error:
                for field, errors in error.error_dict.items():
                    self.add_error(field, errors)
        return cleaned


@admin.register(PlatformConfigDefault)
class PlatformConfigDefaultAdmin(admin.ModelAdmin):
    form = PlatformConfigDefaultForm
    list_display = ["key", "updated_at", "updated_by"]
    search_fields = ["key"]
    readonly_fields = ["updated_at", "updated_by"]

    def get_readonly_fields(self, request: HttpRequest, obj: PlatformConfigDefault | None = None):
        # A key is renamed by deleting it and adding another: the cache is keyed by name.
        return [*self.readonly_fields, "key"] if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: PlatformConfigDefault, form, change: bool):
        saved = services.platform_config_default_set(
            actor=Actor.for_user(request.user, request), key=obj.key, value=obj.value
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: PlatformConfigDefault) -> None:
        services.platform_config_default_delete(
            actor=Actor.for_user(request.user, request), key=obj.key
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for entry in queryset:
            self.delete_model(request, entry)
