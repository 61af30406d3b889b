"""The portal's form for creating an API key."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django import forms
from django.utils import timezone

from credentials import services


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=services.NAME_MAX_LENGTH,
        widget=forms.TextInput(attrs={"placeholder": "CI deploys"}),
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes", widget=forms.CheckboxSelectMultiple, help_text="What the key may do."
    )
    expires_on = forms.DateField(
        label="Expires on",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working at the start of that day (UTC).",
    )

    def __init__(self, *args, scopes: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = [(scope, scope) for scope in scopes]

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("Pick a day after today.")
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return datetime.combine(day, time.min, tzinfo=UTC)
