"""Portal forms for agents and config: they parse what people type; the services judge it."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from agents.configuration import BUILT_IN_AGENT_TYPES, parse_json_text
from agents.models import Agent
from agents.resources import format_cpu, format_memory
from core.agent_permissions import CATALOGUE


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def apply_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Show a service's field errors next to the fields (unknown fields above the form)."""
    for field, errors in error.error_dict.items():
        form.add_error(field if field in form.fields else None, errors)


class AgentForm(forms.Form):
    name = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    type = forms.CharField(
        max_length=100,
        help_text="A built-in type (worker, assistant, router) or your own, such as billing-bot.",
        widget=forms.TextInput(
            attrs={"list": "agent-types", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    description = forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3})
    )
    cpu = forms.CharField(
        label="CPU per instance",
        max_length=64,
        help_text="Cores (0.25, 1, 2) or millicores (250m).",
        widget=forms.TextInput(attrs={"placeholder": "0.5", "spellcheck": "false"}),
    )
    memory = forms.CharField(
        label="Memory per instance",
        max_length=64,
        help_text="512MB, 2GB or 1.5Gi (binary units).",
        widget=forms.TextInput(attrs={"placeholder": "512MB", "spellcheck": "false"}),
    )
    permissions = forms.MultipleChoiceField(
        required=False,
        choices=[(name, name) for name in CATALOGUE],
        widget=forms.CheckboxSelectMultiple,
    )
    tools = forms.CharField(
        required=False,
        max_length=4000,
        help_text="Tool names, separated by commas.",
        widget=forms.TextInput(attrs={"placeholder": "search, http.get", "spellcheck": "false"}),
    )
    secrets = forms.CharField(
        required=False,
        max_length=4000,
        help_text="Names of secrets its runtimes receive, separated by commas.",
        widget=forms.TextInput(attrs={"placeholder": "STRIPE_KEY", "spellcheck": "false"}),
    )
    config = forms.CharField(
        label="Configuration (JSON object)",
        required=False,
        max_length=200_000,
        help_text="Overrides the organization's agents.defaults and agents.<type> keys.",
        widget=forms.Textarea(
            attrs={
                "rows": 10,
                "class": "json-editor",
                "spellcheck": "false",
                "data-json-editor": "",
                "data-json-object": "always",
            }
        ),
    )

    built_in_types = BUILT_IN_AGENT_TYPES

    @classmethod
    def initial_for(cls, agent: Agent) -> dict[str, Any]:
        return {
            "name": agent.name,
            "type": agent.type,
            "description": agent.description,
            "cpu": format_cpu(agent.cpu_millicores),
            "memory": format_memory(agent.memory_mb),
            "permissions": list(agent.permissions),
            "tools": ", ".join(agent.tools),
            "secrets": ", ".join(agent.secrets),
            "config": pretty(agent.config),
        }

    def clean_config(self) -> Any:
        text = self.cleaned_data.get("config", "").strip()
        if not text:
            return {}
        try:
            return parse_json_text(text, field_name="config")
        except ValidationError as error:
            raise ValidationError(error.error_dict["config"]) from error

    def clean_tools(self) -> list[str]:
        text = self.cleaned_data.get("tools", "")
        return [name.strip() for name in text.split(",") if name.strip()]

    def clean_secrets(self) -> list[str]:
        text = self.cleaned_data.get("secrets", "")
        return [name.strip() for name in text.split(",") if name.strip()]

    def service_data(self) -> dict[str, Any]:
        """The fields as the services take them."""
        return {name: self.cleaned_data[name] for name in self.fields}

    def add_service_checks(self) -> None:
        """On a form that failed its own checks, add the services' errors for the other fields,
        so that every mistake shows at once."""
        from agents import services

        data = {name: value for name, value in self.cleaned_data.items() if name not in self.errors}
        try:
            services.agent_validate(data=data, partial=True)
        except ValidationError as error:
            apply_service_errors(self, error)


class ConfigForm(forms.Form):
    key = forms.CharField(
        max_length=400,
        help_text="For example agents.defaults, agents.worker or billing.alerts.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    value = forms.CharField(
        label="Value (JSON)",
        max_length=200_000,
        strip=False,
        widget=forms.Textarea(
            attrs={
                "rows": 14,
                "class": "json-editor",
                "spellcheck": "false",
                "data-json-editor": "",
                "data-json-object-for-key": "id_key",
            }
        ),
    )

    def clean_value(self) -> Any:
        try:
            return parse_json_text(self.cleaned_data["value"])
        except ValidationError as error:
            raise ValidationError(error.error_dict["value"]) from error
