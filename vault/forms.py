"""Portal forms of the vault: they parse what people type; the services judge it."""

from __future__ import annotations

from django import forms

from vault import services
from vault.models import SECRET_NAME_PATTERN, Classification


class SecretForm(forms.Form):
    name = forms.RegexField(
        regex=SECRET_NAME_PATTERN,
        max_length=64,
        help_text="Capital letters, digits and underscores, such as STRIPE_KEY.",
        error_messages={"invalid": "Use capital letters, digits and _, starting with a letter."},
        widget=forms.TextInput(
            attrs={"placeholder": "STRIPE_KEY", "spellcheck": "false", "autocomplete": "off"}
        ),
    )
    value = forms.CharField(
        max_length=services.SECRET_VALUE_MAX_LENGTH,
        strip=False,
        help_text="Write-only: it is never shown again, to anyone.",
        # render_value=False: a refused form never sends the value back to the browser.
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}, render_value=False),
    )


class KnowledgeForm(forms.Form):
    title = forms.CharField(max_length=services.TITLE_MAX_LENGTH)
    tags = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Separated by commas: policy, sales.",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    classification = forms.ChoiceField(
        choices=Classification.choices,
        initial=Classification.GENERAL,
        required=False,
        help_text="Sets how long the document is kept (your platform's retention per class).",
    )
    text = forms.CharField(
        max_length=services.TEXT_MAX_LENGTH,
        strip=False,
        required=False,
        widget=forms.Textarea(attrs={"rows": 14}),
        help_text="Encrypted with your organization's key.",
    )

    def clean_classification(self) -> str:
        return self.cleaned_data.get("classification") or Classification.GENERAL

    def clean_tags(self) -> list[str]:
        text = self.cleaned_data.get("tags", "")
        return [tag.strip().lower() for tag in text.split(",") if tag.strip()]


class KnowledgeSearchForm(forms.Form):
    search = forms.CharField(required=False, max_length=200)
    tag = forms.CharField(required=False, max_length=40)
