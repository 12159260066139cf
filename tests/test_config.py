"""Settings from the environment: boolean spellings, empty variables, refused values."""

from __future__ import annotations

from dataclasses import fields

import pytest

from spamguard.config import Settings, load_settings

BOOLEAN_SETTINGS = [f.name for f in fields(Settings) if isinstance(f.default, bool)]


def variable(name: str) -> str:
    return f"SPAMGUARD_{name.upper()}"


def test_the_boolean_settings_are_the_expected_ones():
    assert {"twilio_validate", "trust_proxy", "log_bodies", "quantize"} <= set(BOOLEAN_SETTINGS)


@pytest.mark.parametrize("name", BOOLEAN_SETTINGS)
@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("YES", True), (" On ", True),
    ("0", False), ("False", False), ("no", False), ("OFF\n", False),
])
def test_boolean_spellings(name, raw, expected):
    assert getattr(load_settings(environ={variable(name): raw}), name) is expected


@pytest.mark.parametrize("name", BOOLEAN_SETTINGS)
@pytest.mark.parametrize("raw", ["enabled", "disabled", "2", "y", "n", "tru", "1 0"])
def test_unknown_boolean_value_is_refused_in_one_line_naming_the_variable(name, raw):
    """A typo must not silently turn a check off (SPAMGUARD_TWILIO_VALIDATE=enabled did)."""
    with pytest.raises(ValueError) as caught:
        load_settings(environ={variable(name): raw})
    message = str(caught.value)
    assert message.startswith(f"{variable(name)}={raw!r} is not valid")
    assert "1/true/yes/on" in message and "0/false/no/off" in message
    assert "\n" not in message


@pytest.mark.parametrize(("name", "raw"), [
    ("max_body_chars", "5_000"), ("max_body_chars", "\u0661\u0662\u0660\u0660"),
    ("max_body_chars", "12.5"), ("retrain_margin", "0_1"), ("retrain_margin", "\u0660.1")])
def test_numbers_take_plain_digits(name, raw):
    """Python's int() and float() also read "5_000" and other scripts' digits."""
    with pytest.raises(ValueError, match=f"^{variable(name)}={raw!r} is not valid: use a "):
        load_settings(environ={variable(name): raw})
    assert load_settings(environ={variable(name): " +1 "}) is not None  # spaces, a sign


@pytest.mark.parametrize("name", BOOLEAN_SETTINGS)
@pytest.mark.parametrize("raw", ["", "  "])
def test_empty_boolean_variable_means_the_default(name, raw):
    assert getattr(load_settings(environ={variable(name): raw}), name) == getattr(Settings(), name)


def test_empty_twilio_validate_keeps_signature_checks_on():
    assert load_settings(environ={"SPAMGUARD_TWILIO_VALIDATE": ""}).twilio_validate is True


@pytest.mark.parametrize("name", ["max_body_chars", "runtime", "retrain_metric", "secret_key",
                                  "home"])
def test_empty_variable_of_any_kind_means_the_default(name):
    assert getattr(load_settings(environ={variable(name): ""}), name) == getattr(Settings(), name)


@pytest.mark.parametrize("raw", ["600 per minut", "600 per minute; ", "six hundred a minute",
                                 "600"])
def test_unreadable_rate_limit_is_refused_in_one_line(raw):
    """Flask-Limiter would log the parse error per request and apply no limit at all."""
    with pytest.raises(ValueError) as caught:
        load_settings(environ={"SPAMGUARD_API_RATE_LIMIT": raw})
    message = str(caught.value)
    assert message.startswith(f"SPAMGUARD_API_RATE_LIMIT={raw!r} is not valid")
    assert "600 per minute" in message and "\n" not in message


@pytest.mark.parametrize("raw", ["0 per minute", "600/minute;0/second"])
def test_rate_limit_that_allows_nothing_is_refused(raw):
    with pytest.raises(ValueError, match="allows no call at all"):
        load_settings(environ={"SPAMGUARD_API_RATE_LIMIT": raw})


def test_the_default_rate_limits_are_valid_and_not_parsed_at_every_start():
    """load_settings reads a rate limit only when one is given (the limits library costs
    0.26 s of every command's start-up), so the defaults themselves must be valid."""
    from spamguard.config import check_rate_limit

    check_rate_limit(Settings.api_rate_limit)
    check_rate_limit(Settings.login_failure_limit, "SPAMGUARD_LOGIN_FAILURE_LIMIT")
    from tests.fixtures_ml import python_prints

    assert python_prints("import sys\nfrom spamguard.config import load_settings\n"
                         "load_settings(environ={})\nprint('limits' in sys.modules)") == ["False"]


@pytest.mark.parametrize("raw", ["600 per minute", "10/second", "600/minute;20/second",
                                 "100 per hour, 5 per second"])
def test_rate_limit_in_limits_syntax_is_kept(raw):
    assert load_settings(environ={"SPAMGUARD_API_RATE_LIMIT": raw}).api_rate_limit == raw


@pytest.mark.parametrize(("name", "raw", "advice"), [
    ("max_body_chars", "-5", "1 or more"),
    ("max_request_bytes", "10", "1024 bytes or more"),
    ("classify_batch_limit", "0", "1 or more"),
    ("model_check_seconds", "-1", "0 or more"),
    ("pending_drain_batch", "-1", "0 or more"),
    ("pending_retry_seconds", "-300", "0 or more"),
    ("torch_threads", "0", "1 to 256"),
    ("retrain_lock_ttl", "0", "60 to 604,800 seconds"),
    ("retrain_lock_ttl", "-10", "60 to 604,800 seconds"),
    ("retrain_lock_ttl", "999999999999", "60 to 604,800 seconds"),  # a date overflow
    ("torch_threads", "99999999999999999999", "1 to 256"),  # each worker died booting
    ("retrain_min_new_reviews", "-5", "0 or more"),
    ("retrain_min_per_class", "0", "1 or more"),
    ("retrain_margin", "1.5", "a number from 0 to 1"),
    ("retrain_review_weight", "0.5", "a number from 1 to 100"),
    ("retrain_review_weight", "nan", "a number from 1 to 100"),
    ("retrain_review_weight", "250.5", "a number from 1 to 100"),
    ("evalset_fraction", "1.5", "a number between 0 and 1"),
    ("evalset_fraction", "-0.5", "a number between 0 and 1"),
    ("session_idle_hours", "0", "1 to 744 hours"),
    ("session_idle_hours", "745", "1 to 744 hours"),
    ("queue_claim_seconds", "0", "30 to 3600 seconds"),
    ("queue_claim_seconds", "3601", "30 to 3600 seconds"),
    ("retrain_traffic_days", "0", "more than 0 and at most 366 days"),  # was quoted as 0.0
])
def test_numbers_out_of_range_stop_the_start(name, raw, advice):
    """A body limit of -5 used to start fine and then refuse every SMS with a 400; a lock
    TTL of 0 let a second retraining take the lock from a live first one. The refusal
    quotes the variable as it was written."""
    with pytest.raises(ValueError,
                       match=f"^{variable(name)}={raw!r} is not valid: choose {advice}"):
        load_settings(environ={variable(name): raw})


def test_a_home_that_is_a_file_is_refused(tmp_path):
    """It read as "no spamguard database at FILE/spamguard.db" (and `train` as "cannot
    create the database folder")."""
    home = tmp_path / "spamguard.db"
    home.write_bytes(b"")
    with pytest.raises(ValueError, match="^SPAMGUARD_HOME=.* is a file, not a folder"):
        load_settings(environ={"SPAMGUARD_HOME": str(home)})
    assert load_settings(environ={"SPAMGUARD_HOME": str(tmp_path)}).home == tmp_path


@pytest.mark.parametrize(("name", "raw", "value"), [
    ("runtime", "ONNX", "onnx"), ("env", " Development ", "development"),
    ("retrain_metric", "MCC", "mcc")])
def test_choices_ignore_case_and_spaces(name, raw, value):
    assert getattr(load_settings(environ={variable(name): raw}), name) == value


@pytest.mark.parametrize("raw", ["sms.example.com", "ftp://sms.example.com", "https://",
                                 " https://sms.example.com", "https://sms.example.com\n",
                                 "https://sms.example.com:abc", "https://sms.example.com/?q=1",
                                 "https://sms.example.com/#f"])
def test_a_public_base_url_signatures_cannot_match_is_refused(raw):
    with pytest.raises(ValueError, match="like https://sms.example.com"):
        load_settings(environ={"SPAMGUARD_PUBLIC_BASE_URL": raw})
    for good in ("https://sms.example.com", "http://10.0.0.5:8000/spamguard"):
        assert load_settings(environ={"SPAMGUARD_PUBLIC_BASE_URL": good}).public_base_url == good


def test_an_unsupported_database_is_one_line_not_a_driver_traceback():
    from spamguard.db import normalise_url
    from spamguard.errors import DatabaseError

    with pytest.raises(DatabaseError, match=r"^database URL 'mysql://x:\*\*\*@h/db': mysql is "
                                            "not supported; use sqlite"):
        normalise_url("mysql://x:secret@h/db")


@pytest.mark.parametrize(("raw", "says"), [("20 per fortnight", "is not valid"),
                                           ("0 per minute", "allows no call at all")])
def test_a_bad_login_failure_limit_names_its_variable(raw, says):
    with pytest.raises(ValueError) as info:
        load_settings(environ={"SPAMGUARD_LOGIN_FAILURE_LIMIT": raw})
    assert str(info.value).startswith(f"SPAMGUARD_LOGIN_FAILURE_LIMIT={raw!r} ")
    assert says in str(info.value)


def test_each_rate_limit_error_shows_an_example_of_its_own_kind():
    with pytest.raises(ValueError) as login:
        load_settings(environ={"SPAMGUARD_LOGIN_FAILURE_LIMIT": "lots"})
    assert str(login.value).endswith("(write it like '20 per 15 minutes' or '20/15minutes')")
    with pytest.raises(ValueError) as api:
        load_settings(environ={"SPAMGUARD_API_RATE_LIMIT": "lots"})
    assert str(api.value).endswith("(write it like '600 per minute' or "
                                   "'600/minute;20/second')")
