"""The config rules: the key pattern, value limits, the merge rule (a table) and provenance."""

import json

import pytest
from django.core.exceptions import ValidationError

from agents.configuration import (
    MAX_VALUE_BYTES,
    Layer,
    agent_layers,
    deep_merge,
    depth,
    parse_json_text,
    resolve,
    validate_agent_type,
    validate_entry,
    validate_key,
    validate_value,
)


def error_of(call) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        call()
    ((field, errors),) = caught.value.error_dict.items()
    return field, errors[0].code


@pytest.mark.parametrize(
    "key",
    [
        "agents.defaults",
        "agents.worker",
        "agents.billing-bot",
        "agents.my_type2",
        "billing",
        "billing.alerts.email",
        "a.b.c.d.e.f.g.h",  # 8 segments
        "x" * 40,
        ".".join(["x" * 40] * 3) + "." + "y" * 5,  # 128 characters
    ],
)
def test_keys_that_follow_the_pattern(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "Agents.defaults",  # uppercase
        "agents..worker",
        ".agents",
        "agents.",
        "1agents",
        "agents.2fast",
        "agents.worker.timeout",  # agents.* is exactly two segments
        "agents",
        "a.b.c.d.e.f.g.h.i",  # 9 segments
        "x" * 41,
        ".".join(["x" * 40] * 3) + "." + "y" * 6,  # 129 characters
        "agents.wörker",
        "agents worker",
        "agents/worker",
        "agents.worker\n",
        None,
        42,
    ],
)
def test_keys_outside_the_pattern_are_refused(key):
    assert error_of(lambda: validate_key(key))[0] == "key"


def test_agent_keys_hold_objects_and_other_keys_any_json():
    assert validate_entry("agents.worker", {"timeout": 30}) == ("agents.worker", {"timeout": 30})
    assert validate_entry("billing.alerts", [1, 2]) == ("billing.alerts", [1, 2])
    assert validate_entry("feature.flag", True) == ("feature.flag", True)
    # null marks a deleted key in its history: a key is deleted, never set to null.
    assert error_of(lambda: validate_entry("feature.name", None)) == ("value", "null")

    assert error_of(lambda: validate_entry("agents.worker", [1])) == ("value", "not_an_object")
    assert error_of(lambda: validate_entry("agents.defaults", "x")) == ("value", "not_an_object")


def test_values_up_to_64_kb_are_accepted_and_larger_ones_refused():
    # {"k":"<n characters>"} is n + 8 bytes.
    at_limit = {"k": "x" * (MAX_VALUE_BYTES - 8)}
    over = {"k": "x" * (MAX_VALUE_BYTES - 7)}
    multibyte_over = {"k": "é" * (MAX_VALUE_BYTES // 2)}  # 2 bytes each in UTF-8

    assert len(json.dumps(at_limit, separators=(",", ":"))) == MAX_VALUE_BYTES
    assert validate_value(at_limit) == at_limit
    assert error_of(lambda: validate_value(over)) == ("value", "too_large")
    assert error_of(lambda: validate_value(multibyte_over)) == ("value", "too_large")


def test_deeply_nested_values_are_refused_without_recursion():
    nested: object = 1
    for _ in range(5000):
        nested = [nested]

    assert depth(nested) == 5000
    assert depth({"a": {"b": [1, {"c": 2}]}}) == 4
    assert depth(3) == 0
    assert error_of(lambda: validate_value(nested)) == ("value", "too_deep")


def test_json_typed_in_a_form_reports_where_it_breaks():
    with pytest.raises(ValidationError) as caught:
        parse_json_text('{"a": 1,\n  "b": }')

    message = caught.value.error_dict["value"][0].message
    assert message == "Not valid JSON: Expecting value (line 2, column 8)."
    assert parse_json_text('{"a": [1, 2]}') == {"a": [1, 2]}


@pytest.mark.parametrize("agent_type", ["worker", "assistant", "router", "billing-bot", "x_1"])
def test_agent_types_built_in_or_custom(agent_type):
    assert validate_agent_type(agent_type) == agent_type


@pytest.mark.parametrize(
    ("agent_type", "code"),
    [
        ("defaults", "reserved_type"),
        ("Worker", "invalid_type"),
        ("", "invalid_type"),
        ("a.b", "invalid_type"),
        ("9lives", "invalid_type"),
        ("x" * 41, "invalid_type"),
        (None, "invalid_type"),
    ],
)
def test_bad_agent_types(agent_type, code):
    assert error_of(lambda: validate_agent_type(agent_type)) == ("type", code)


# The merge rule: objects merge key by key, recursively; lists, scalars and null replace.
MERGE_TABLE = [
    # (base, override, merged)
    ({}, {}, {}),
    ({"a": 1}, {}, {"a": 1}),
    ({}, {"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3, "z": 4}}, {"a": {"x": 1, "y": 3, "z": 4}}),
    ({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}}}, {"a": {"b": {"c": 1, "d": 3}}}),
    ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),  # lists replace, never concatenate
    ({"a": [1, 2]}, {"a": []}, {"a": []}),
    ({"a": {"x": 1}}, {"a": [1]}, {"a": [1]}),  # a list replaces an object
    ({"a": [1]}, {"a": {"x": 1}}, {"a": {"x": 1}}),  # an object replaces a list
    ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),  # a scalar replaces an object
    ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ({"a": {"x": 1}}, {"a": None}, {"a": None}),  # null replaces: it does not delete
    ({"a": None}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ({"a": "text"}, {"a": 0}, {"a": 0}),
    ({"a": True}, {"a": False}, {"a": False}),
    ({"a": {"x": 1}}, {"a": {}}, {"a": {"x": 1}}),  # an empty object changes nothing
    ({"a": [{"x": 1}]}, {"a": [{"y": 2}]}, {"a": [{"y": 2}]}),  # objects in lists don't merge
]


@pytest.mark.parametrize(("base", "override", "merged"), MERGE_TABLE)
def test_the_merge_rule(base, override, merged):
    before = json.dumps(base)

    assert deep_merge(base, override) == merged
    assert json.dumps(base) == before  # inputs are never modified


def layer(name: str, value: dict) -> Layer:
    source, _, key = name.partition(":")
    return Layer(source=source, name=key, value=value)


def test_resolution_attributes_every_leaf_to_the_layer_it_came_from():
    layers = [
        layer(
            "platform:agents.defaults", {"model": "small", "limits": {"tokens": 1000, "rpm": 60}}
        ),
        layer("platform:agents.worker", {"limits": {"rpm": 120}, "tags": ["a", "b"]}),
        layer("organization:agents.defaults", {"model": "large", "tags": ["c"]}),
        layer("organization:agents.worker", {"limits": {"tokens": 4000}, "retry": {"max": 3}}),
        layer("definition", {"retry": 5, "prompt": "Be brief."}),
    ]

    resolution = resolve(layers)

    assert resolution.value == {
        "model": "large",
        "limits": {"tokens": 4000, "rpm": 120},
        "tags": ["c"],
        "retry": 5,
        "prompt": "Be brief.",
    }
    assert {(item.pointer, item.layer.label) for item in resolution.provenance} == {
        ("/model", "organization:agents.defaults"),
        ("/limits/tokens", "organization:agents.worker"),
        ("/limits/rpm", "platform:agents.worker"),
        ("/tags", "organization:agents.defaults"),
        ("/retry", "definition"),
        ("/prompt", "definition"),
    }


def test_a_replaced_object_leaves_no_provenance_from_below():
    layers = [
        layer("platform:agents.defaults", {"a": {"x": 1, "y": 2}}),
        layer("organization:agents.defaults", {"a": 7}),
        layer("definition", {"a": {"z": 3}}),
    ]

    resolution = resolve(layers)

    assert resolution.value == {"a": {"z": 3}}
    assert [(item.pointer, item.value, item.layer.label) for item in resolution.provenance] == [
        ("/a/z", 3, "definition")
    ]


def test_pointers_escape_slashes_and_tildes():
    resolution = resolve([layer("definition", {"a/b": {"c~d": 1}, "e": {}})])

    assert [(item.pointer, item.value) for item in resolution.provenance] == [
        ("/a~1b/c~0d", 1),
        ("/e", {}),
    ]


def test_agent_layers_are_ordered_and_skip_what_is_missing():
    layers = agent_layers(
        agent_type="worker",
        platform={"agents.defaults": {"p": 1}, "agents.router": {"r": 1}},
        organization={"agents.worker": {"o": 1}},
        definition={"d": 1},
    )

    assert [item.label for item in layers] == [
        "platform:agents.defaults",
        "organization:agents.worker",
        "definition",
    ]


@pytest.mark.parametrize("value", ["a\x00b", {"k\x00": 1}, [{"x": ["\x00"]}]])
def test_the_nul_character_is_refused_anywhere_in_a_value(value):
    assert error_of(lambda: validate_value(value)) == ("value", "null_character")


def test_lone_surrogates_are_not_json_text():
    assert error_of(lambda: validate_value({"a": "\ud800"})) == ("value", "invalid_unicode")
