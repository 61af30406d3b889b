"""Every rule of the resource strings: what parses, to what, and what is refused."""

import pytest
from django.core.exceptions import ValidationError

from agents.resources import format_cpu, format_memory, parse_cpu, parse_memory


def error_of(call) -> tuple[str, str, str]:
    with pytest.raises(ValidationError) as caught:
        call()
    ((field, errors),) = caught.value.error_dict.items()
    return field, errors[0].code, errors[0].message


@pytest.mark.parametrize(
    ("text", "millicores"),
    [
        ("0.25", 250),
        ("250m", 250),
        ("1", 1000),
        ("2", 2000),
        ("1.5", 1500),
        ("0.001", 1),
        ("1m", 1),
        ("4000m", 4000),
        (" 0.5 ", 500),  # surrounding whitespace is ignored
        ("007", 7000),
        (0.25, 250),  # a JSON number
        (2, 2000),
    ],
)
def test_cpu_amounts(text, millicores):
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [
        ("512MB", 512),
        ("512Mi", 512),
        ("2GB", 2048),
        ("2Gi", 2048),
        ("1.5Gi", 1536),
        ("1.5GB", 1536),
        ("0.5Gi", 512),
        ("1MB", 1),
        ("128Mi", 128),
    ],
)
def test_memory_amounts(text, megabytes):
    assert parse_memory(text) == megabytes


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "required"),
        ("   ", "required"),
        ("0", "not_positive"),
        ("0m", "not_positive"),
        ("0.0", "not_positive"),
        ("-1", "invalid"),
        ("-250m", "invalid"),
        ("0.0001", "too_precise"),  # a tenth of a millicore
        ("0.0005", "too_precise"),
        ("0.0000001", "invalid"),  # more than 6 decimals
        ("1.5m", "invalid"),  # millicores are whole
        ("250 m", "invalid"),
        ("250M", "invalid"),
        (".5", "invalid"),
        ("1.", "invalid"),
        ("1e3", "invalid"),
        ("NaN", "invalid"),
        ("inf", "invalid"),
        ("one", "invalid"),
        ("0x10", "invalid"),
        ("1,5", "invalid"),
        ("१", "invalid"),  # a Devanagari digit: \d would take it, the pattern does not
        ("9" * 40, "invalid"),
        (True, "invalid"),
        (None, "invalid"),
        ([1], "invalid"),
        (-0.5, "invalid"),
        (0, "not_positive"),
    ],
)
def test_bad_cpu_is_refused_naming_the_field(text, code):
    field, error_code, _ = error_of(lambda: parse_cpu(text))
    assert (field, error_code) == ("cpu", code)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "required"),
        ("0MB", "not_positive"),
        ("0Gi", "not_positive"),
        ("0.0GB", "not_positive"),
        ("-512MB", "invalid"),
        ("512", "invalid"),  # a unit is required
        ("512 MB", "invalid"),
        ("512mb", "invalid"),
        ("512Mb", "invalid"),
        ("512KB", "invalid"),
        ("512Ki", "invalid"),
        ("1TB", "invalid"),
        ("2G", "invalid"),
        ("512M", "invalid"),
        ("1.5MB", "too_precise"),  # the smallest unit is 1 MB
        ("0.0001Gi", "too_precise"),
        ("1e3MB", "invalid"),
        (".5Gi", "invalid"),
        ("GB", "invalid"),
        ("5 12MB", "invalid"),
        (512, "invalid"),  # a bare number has no unit
        (False, "invalid"),
        ({"MB": 512}, "invalid"),
    ],
)
def test_bad_memory_is_refused_naming_the_field(text, code):
    field, error_code, _ = error_of(lambda: parse_memory(text))
    assert (field, error_code) == ("memory", code)


def test_amounts_above_the_plans_per_instance_maximum_are_refused():
    assert parse_cpu("4", maximum=4000) == 4000
    assert parse_memory("16GB", maximum=16384) == 16384

    cpu = error_of(lambda: parse_cpu("4001m", maximum=4000))
    memory = error_of(lambda: parse_memory("16.5Gi", maximum=16384))

    assert cpu == ("cpu", "above_maximum", "Above the plan's maximum per instance (4).")
    assert memory == ("memory", "above_maximum", "Above the plan's maximum per instance (16GB).")


def test_the_error_names_the_field_the_caller_gives():
    assert error_of(lambda: parse_cpu("x", field_name="cpu_limit"))[0] == "cpu_limit"


@pytest.mark.parametrize(
    ("millicores", "text"), [(1, "1m"), (250, "250m"), (999, "999m"), (1000, "1"), (1500, "1.5")]
)
def test_cpu_is_shown_in_the_unit_it_reads_best_in_and_parses_back(millicores, text):
    assert format_cpu(millicores) == text
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("megabytes", "text"),
    [
        (1, "1MB"),
        (512, "512MB"),
        (1000, "1000MB"),
        (1024, "1GB"),
        (1536, "1.5GB"),
        (1100, "1100MB"),
    ],
)
def test_memory_is_shown_in_the_unit_it_reads_best_in_and_parses_back(megabytes, text):
    assert format_memory(megabytes) == text
    assert parse_memory(text) == megabytes
