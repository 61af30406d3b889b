"""Forms of the public host: signup and "go to your organization"."""

from __future__ import annotations

from django import forms
from django.conf import settings

from tenants import residency


class SignupForm(forms.Form):
    """The signup page's fields. The rules (slug, region, password) are the service's."""

    name = forms.CharField(
        label="Organization name",
        max_length=120,
        widget=forms.TextInput(attrs={"autocomplete": "organization", "autofocus": True}),
    )
    slug = forms.CharField(
        label="Address",
        max_length=40,
        help_text="3-40 lowercase letters, digits and hyphens.",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "spellcheck": "false",
                "autocapitalize": "none",
                "data-slug-from": "id_name",
            }
        ),
    )
    region = forms.ChoiceField(
        label="Data region",
        help_text="Where your organization's data is stored.",
    )
    residency_policy = forms.ChoiceField(
        label="Data residency",
        help_text="The regions your organization's data may ever be placed in.",
        choices=residency.Policy.choices,
        initial=residency.DEFAULT_POLICY,
        required=False,  # empty: the default policy
    )
    full_name = forms.CharField(
        label="Your name",
        max_length=150,
        help_text="How your colleagues will see you.",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    owner_email = forms.EmailField(
        label="Your work email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password_confirm = forms.CharField(
        label="Confirm password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    # The service's error keys, mapped onto this form's fields.
    SERVICE_FIELDS = {
        "slug": "slug",
        "name": "name",
        "region": "region",
        "residency_policy": "residency_policy",
        "owner_email": "owner_email",
        "owner_password": "password",
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["region"].choices = list(settings.REGIONS.items())
        self.fields["region"].initial = settings.DEFAULT_REGION

    def clean_slug(self) -> str:
        return self.cleaned_data["slug"].strip().lower()

    def clean_residency_policy(self) -> str:
        return self.cleaned_data["residency_policy"] or residency.DEFAULT_POLICY

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("password") and cleaned.get("password") != cleaned.get("password_confirm"):
            self.add_error("password_confirm", "The two passwords do not match.")
        return cleaned


class OrganizationJumpForm(forms.Form):
    slug = forms.CharField(
        label="Organization address",
        max_length=40,
        widget=forms.TextInput(
            attrs={"placeholder": "your-org", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )

    def clean_slug(self) -> str:
        return self.cleaned_data["slug"].strip().lower()
