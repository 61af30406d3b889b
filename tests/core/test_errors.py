"""core.errors: every refusal reaches HTTP and WebSocket clients as one code, message and status."""

import pytest
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

from core import errors
from core.errors import Problem, describe


def test_domain_errors_carry_their_status_code_and_headers():
    assert describe(errors.QuotaExceeded("insufficient_cpu", "No CPU.", limit="cpu", in_use=3)) == (
        Problem(409, "insufficient_cpu", "No CPU.", {"limit": "cpu", "in_use": 3}, {})
    )
    assert describe(errors.Forbidden("subject_reserved", "Reserved.")) == Problem(
        403, "subject_reserved", "Reserved."
    )
    assert describe(errors.Unauthenticated("token_expired", "Expired.")).status == 401
    limited = describe(errors.RateLimited(retry_after=0, limit=60, scope="api", window=60))
    assert (limited.status, limited.code) == (429, "rate_limited")
    assert limited.headers == {
        "Retry-After": "1",
        "RateLimit-Policy": '"api";q=60;w=60',
        "RateLimit": '"api";r=0;t=1',
    }
    unavailable = describe(errors.RateLimiterUnavailable())
    assert (unavailable.status, unavailable.headers) == (503, {"Retry-After": "30"})


def test_django_errors_are_described_too():
    invalid = describe(ValidationError({"name": ["Required."], "cpu": ["Too much."]}))
    assert (invalid.status, invalid.code, invalid.message) == (
        400,
        "invalid",
        "Required.; Too much.",
    )
    assert invalid.detail == {"name": ["Required."], "cpu": ["Too much."]}
    transition = describe(errors.field_error("status", "Already stopped.", "invalid_transition"))
    assert transition.code == "invalid_transition"
    assert describe(PermissionDenied("No.")) == Problem(403, "permission_denied", "No.")
    assert describe(ObjectDoesNotExist()) == Problem(404, "not_found", "Not found.")


def test_well_formed_refusals_are_409_422_or_403_only_when_they_are_all_there_is():
    taken = errors.field_error("name", "Taken.", "name_taken")
    assert describe(taken) == Problem(409, "conflict", "Taken.", {"name": ["Taken."]})
    old = errors.field_error("time", "Too old.", "too_old")
    assert (describe(old).status, describe(old).code) == (422, "unprocessable")
    both = ValidationError(
        {
            "name": [ValidationError("Taken.", code="name_taken")],
            "end": [ValidationError("Empty.", code="invalid_range")],
        }
    )
    assert (describe(both).status, describe(both).code) == (422, "unprocessable")
    held = errors.field_error("scopes", "Not yours.", "not_held")
    assert (describe(held).status, describe(held).code) == (403, "permission_denied")
    held_and_past = ValidationError(
        {
            "scopes": [ValidationError("Not yours.", code="not_held")],
            "expires_at": [ValidationError("Past.", code="in_past")],
        }
    )
    assert describe(held_and_past).status == 403
    with_a_bad_field = ValidationError(
        {
            "name": [ValidationError("Taken.", code="name_taken")],
            "cpu": [ValidationError("Not a CPU amount.", code="invalid")],
        }
    )
    assert (describe(with_a_bad_field).status, describe(with_a_bad_field).code) == (400, "invalid")
    assert describe(ValidationError({"name": ["No code."]})).status == 400


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("x")])
def test_anything_else_is_not_described(error):
    assert describe(error) is None
