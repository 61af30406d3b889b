"""Forms of the organization's host: login, invitations, members, accepting an invitation."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from core.roles import Role


class LoginForm(AuthenticationForm):
    """Django's login form, labelled for email addresses (users log in with their email)."""

    username = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That email and password do not match an account in this organization.",
        "inactive": "This account is deactivated.",
    }

    def clean_username(self) -> str:
        # Emails are stored lowercased (accounts.services.user_create): match them that way.
        return self.cleaned_data["username"].strip().lower()


def _role_choices(roles: list[str]) -> list[tuple[str, str]]:
    return [(role, Role(role).label) for role in roles]


class InvitationForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"placeholder": "name@company.com"}),
    )
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args, roles: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_roles(roles)
        self.fields["role"].initial = Role.MEMBER

    def set_roles(self, roles: list[str]) -> None:
        self.fields["role"].choices = _role_choices(roles)


class RoleChangeForm(forms.Form):
    # Any known role parses; whether this actor may grant it is the service's decision.
    role = forms.ChoiceField(choices=Role.choices)


class InvitationAcceptForm(forms.Form):
    full_name = forms.CharField(
        label="Full name", max_length=150, widget=forms.TextInput(attrs={"autocomplete": "name"})
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

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("password") and cleaned.get("password") != cleaned.get("password_confirm"):
            self.add_error("password_confirm", "The two passwords do not match.")
        return cleaned


class ProfileForm(forms.Form):
    full_name = forms.CharField(
        label="Display name",
        max_length=150,
        required=False,
        help_text="Shown in menus, member lists and the audit log instead of your email.",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )


class PasswordChangeForm(forms.Form):
    current_password = forms.CharField(
        label="Current password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    new_password = forms.CharField(
        label="New password",
        strip=False,
        help_text="At least 8 characters, not a common one, not all digits.",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    new_password_confirm = forms.CharField(
        label="New password, again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        new, again = cleaned.get("new_password"), cleaned.get("new_password_confirm")
        if new and again and new != again:
            self.add_error("new_password_confirm", "The two passwords do not match.")
        return cleaned


class SignInCodeForm(forms.Form):
    code = forms.CharField(
        label="Authentication code",
        max_length=64,
        help_text="The 6 digits your authenticator app shows, or one of your recovery codes.",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "autofocus": True,
                "autocapitalize": "off",
                "spellcheck": "false",
            }
        ),
    )


class TwoFactorConfirmForm(forms.Form):
    code = forms.CharField(
        label="Code from your app",
        max_length=64,
        help_text="The 6 digits the app shows for AgentPlane now.",
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


class TwoFactorProofForm(forms.Form):
    proof = forms.CharField(
        label="Your password, or a code from your app",
        max_length=4096,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args, prefix: str, **kwargs) -> None:
        super().__init__(*args, prefix=prefix, **kwargs)
