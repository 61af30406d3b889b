"""Subject validation, NATS wildcard matching, and the one builder of group names."""

from __future__ import annotations

import re
import uuid

import pytest

from gateway import subjects
from tenants import events

TENANT = str(uuid.UUID(int=1))


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("agents.task", "agents.task", True),
        ("agents.task", "agents.tasks", False),
        ("agents.*", "agents.task", True),
        ("agents.*", "agents.task.x", False),
        ("agents.*.metrics", "agents.a1.metrics", True),
        ("agents.*.metrics", "agents.metrics", False),
        ("agents.>", "agents.a", True),
        ("agents.>", "agents.a.b.c", True),
        ("agents.>", "agents", False),
        (">", "x", True),
        ("*", "x.y", False),
        ("*.>", "x", False),
        ("*.>", "x.y", True),
    ],
)
def test_matches_follows_nats(pattern, subject, expected):
    assert subjects.matches(pattern, subject) is expected


def test_literal_head_and_is_literal():
    assert subjects.literal_head("agents.*.metrics") == "agents"
    assert subjects.literal_head(">") == ""
    assert subjects.literal_head("a.b.>") == "a.b"
    assert subjects.is_literal("a.b") and not subjects.is_literal("a.*")


@pytest.mark.parametrize("subject", ["a", "a.b-c_D.9", ".".join(["t"] * 16), "x" * 256])
def test_valid_subjects(subject):
    assert subjects.validate_subject(subject) == subject


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ("", "subject_invalid"),
        (None, "subject_invalid"),
        (5, "subject_invalid"),
        ("a.*", "subject_invalid"),  # no wildcards when publishing
        ("a.>", "subject_invalid"),
        ("a..b", "subject_invalid"),
        ("é", "subject_invalid"),
        ("x" * 257, "subject_invalid"),
        (".".join(["t"] * 17), "subject_invalid"),
        ("tenant.x", "subject_forbidden"),
        ("TeNaNt", "subject_forbidden"),
    ],
)
def test_invalid_subjects(subject, code):
    with pytest.raises(subjects.InvalidSubject) as refused:
        subjects.validate_subject(subject)
    assert refused.value.code == code


@pytest.mark.parametrize("pattern", ["a.>.b", ">.a", "a.**", "a.*x", "a.>>"])
def test_invalid_patterns(pattern):
    with pytest.raises(subjects.InvalidSubject):
        subjects.validate_pattern(pattern)


def test_group_names_are_unambiguous_and_short_enough_for_channels():
    exact = events.group_name(TENANT, "agents.task")
    prefix = events.group_name(TENANT, "agents.task", prefix=True)
    root = events.group_name(TENANT, "", prefix=True)
    assert exact == f"tenant.{TENANT}.agents.task"
    assert prefix == f"tenant.{TENANT}.agents.task.."
    assert root == f"tenant.{TENANT}.."
    long = ".".join(["x" * 15] * 16)
    long_exact, long_prefix = (
        events.group_name(TENANT, long),
        events.group_name(TENANT, long, prefix=True),
    )
    assert long_exact != long_prefix
    for name in (exact, prefix, root, long_exact, long_prefix):
        assert len(name) < 100 and re.fullmatch(r"[A-Za-z0-9._-]+", name)
        assert name.startswith(f"tenant.{TENANT}.")


def test_groups_for_an_event_are_its_exact_group_and_every_prefix():
    assert events.groups_for(TENANT, "a.b.c") == [
        f"tenant.{TENANT}.a.b.c",
        f"tenant.{TENANT}..",
        f"tenant.{TENANT}.a..",
        f"tenant.{TENANT}.a.b..",
    ]


@pytest.mark.parametrize("subject", ["", "a..b", "a.*", "../x", "a b"])
def test_group_name_refuses_invalid_subjects(subject):
    with pytest.raises(ValueError):
        events.group_name(TENANT, subject)
