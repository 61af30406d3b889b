"""The portal's tool editor and Test run forms (the service checks everything again)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django import forms

from core import tool_permissions
from tools.models import Tool, ToolVersion

STARTER_CODE = """// run(input, api) returns a JSON value; it may be async.
// console.log lines come back with the result; api holds only the functions granted below.
async function run(input, api) {
  console.log("greeting", input.name);
  return { greeting: `Hello, ${input.name}!` };
}
"""
STARTER_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 100}},
    "required": ["name"],
}


def _parse_json(value: str, field: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as error:
        raise forms.ValidationError(f"Not valid JSON: {error}", code="invalid_json") from error


class ToolForm(forms.Form):
    name = forms.CharField(
        max_length=64,
        help_text="Lowercase letters, digits, _, . and -; agents call the tool by this name.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    code = forms.CharField(
        strip=False,
        max_length=64 * 1024,
        help_text="JavaScript that defines function run(input, api). Checked by V8 on save.",
        widget=forms.Textarea(
            attrs={"rows": 16, "spellcheck": "false", "class": "code", "data-code-editor": ""}
        ),
    )
    input_schema = forms.CharField(
        label="Input schema",
        max_length=16 * 1024,
        help_text="JSON Schema of the input (pattern is not supported).",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
    )
    timeout_ms = forms.IntegerField(label="Timeout (ms)", min_value=1)
    memory_mb = forms.IntegerField(label="Memory (MiB)", min_value=8)
    permissions = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Host API functions the tool is handed; your plan decides which are allowed. "
            'A secret is read with api.secret("NAME"); only admins save a tool granted one.'
        ),
    )

    def __init__(self, *args: Any, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        """`secrets`: the secret names to offer (the organization's, and those already granted)."""
        super().__init__(*args, **kwargs)
        choices = [
            (name, f"{name} — {text}") for name, (_, text) in tool_permissions.CATALOGUE.items()
        ]
        for name in sorted(set(secrets)):
            permission = tool_permissions.secret_permission(name)
            choices.append((permission, f"{permission} — Read the secret {name}"))
        self.fields["permissions"].choices = choices

    def clean_input_schema(self) -> Any:
        return _parse_json(self.cleaned_data["input_schema"], "input_schema")

    @classmethod
    def initial_for(cls, tool: Tool | None, version: ToolVersion | None) -> dict[str, Any]:
        if tool is None or version is None:
            return {
                "code": STARTER_CODE,
                "input_schema": json.dumps(STARTER_SCHEMA, indent=2),
                "timeout_ms": 5000,
                "memory_mb": 32,
            }
        return {
            "name": tool.name,
            "description": tool.description,
            "code": version.code,
            "input_schema": json.dumps(version.input_schema, indent=2),
            "timeout_ms": version.timeout_ms,
            "memory_mb": version.memory_mb,
            "permissions": version.permissions,
        }

    def service_data(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class RunForm(forms.Form):
    input = forms.CharField(
        label="Input (JSON)",
        max_length=64 * 1024,
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false", "class": "code"}),
    )

    def clean_input(self) -> Any:
        return _parse_json(self.cleaned_data["input"], "input")
