"""Subjects inside an organization's namespace: validation and NATS-style wildcard matching.

A subject is dot-separated tokens of ASCII letters, digits, `-` and `_`; at most 16 tokens and
256 bytes. A pattern (subscriptions only) may use `*` for exactly one token and `>`, as its last
token, for one or more tokens. The first token `tenant` (in any case) is reserved: subjects are
relative to the namespace the server prefixes, so a client naming `tenant.<id>...` is trying to
reach another namespace, and is refused rather than quietly given a look-alike of its own.
"""

from __future__ import annotations

import re

MAX_TOKENS = 16
MAX_BYTES = 256
# Full matches only: `$` would also match before a trailing newline (`"agents\n"`).
TOKEN = re.compile(r"[A-Za-z0-9_-]+")
RESERVED_FIRST_TOKEN = "tenant"


class InvalidSubject(ValueError):
    """`code` is `subject_invalid` or `subject_forbidden`; `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _tokens(subject: object) -> list[str]:
    if not isinstance(subject, str) or not subject:
        raise InvalidSubject("subject_invalid", "A subject is a non-empty string.")
    if len(subject.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise InvalidSubject("subject_invalid", f"A subject has at most {MAX_BYTES} bytes.")
    tokens = subject.split(".")
    if len(tokens) > MAX_TOKENS:
        raise InvalidSubject("subject_invalid", f"A subject has at most {MAX_TOKENS} tokens.")
    if tokens[0].lower() == RESERVED_FIRST_TOKEN:
        raise InvalidSubject(
            "subject_forbidden",
            "Subjects are relative to your organization's namespace: leave out `tenant.<id>`.",
        )
    return tokens


def validate_subject(subject: object) -> str:
    """A literal subject (publish): no wildcards."""
    tokens = _tokens(subject)
    if not all(TOKEN.fullmatch(token) for token in tokens):
        raise InvalidSubject(
            "subject_invalid",
            "Subject tokens are letters, digits, `-` and `_`, separated by single dots.",
        )
    return str(subject)


def validate_pattern(pattern: object) -> str:
    """A subscription pattern: tokens, `*` tokens, and `>` as the last token only."""
    tokens = _tokens(pattern)
    for position, token in enumerate(tokens):
        if token == "*" or (token == ">" and position == len(tokens) - 1):
            continue
        if not TOKEN.fullmatch(token):
            raise InvalidSubject(
                "subject_invalid",
                "Pattern tokens are letters, digits, `-`, `_`, `*` (one token) or a final `>`.",
            )
    return str(pattern)


def is_literal(pattern: str) -> bool:
    return not any(token in {"*", ">"} for token in pattern.split("."))


def literal_head(pattern: str) -> str:
    """The tokens before the first wildcard (`agents.*.metrics` -> `agents`; `>` -> ``)."""
    head: list[str] = []
    for token in pattern.split("."):
        if token in {"*", ">"}:
            break
        head.append(token)
    return ".".join(head)


def matches(pattern: str, subject: str) -> bool:
    """NATS semantics: `*` matches one token, a final `>` one or more."""
    wanted, given = pattern.split("."), subject.split(".")
    for position, token in enumerate(wanted):
        if token == ">":
            return len(given) > position
        if position >= len(given):
            return False
        if token != "*" and token != given[position]:
            return False
    return len(given) == len(wanted)
