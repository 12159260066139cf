"""Settings: built-in defaults, then ``SPAMGUARD_*`` environment variables, then overrides.

Nothing is read at import time: call :func:`load_settings` when you need the settings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from spamguard.shipped import shipped_dir

PLACEHOLDER_SECRET = "dev-insecure-change-me"
# Metrics retraining may compare candidate and active models on (settings.retrain_metric).
GATE_METRICS = ("mcc", "spam_f1", "accuracy", "roc_auc", "spam_precision", "spam_recall")
# Backbone runtimes (spamguard.ml.onnx_runtime.RUNTIMES; repeated so config imports no torch).
# "auto": onnx for the service's single messages; for batches (`spamguard classify`),
# torch-bf16 where bf16 is faster (AMX; measured once with AVX512-BF16 alone), else onnx.
RUNTIMES = ("auto", "onnx", "torch", "torch-bf16")


def check_number_format(runtime: str, quantize: bool) -> None:
    """Refuse int8 quantisation on the bf16 runtime (one backbone has one number format).

    Raises:
        ValueError: both were asked for.
    """
    if quantize and runtime == "torch-bf16":
        raise ValueError("int8 quantisation (SPAMGUARD_QUANTIZE, --quantize) and the "
                         "torch-bf16 runtime exclude each other: choose int8 or bf16")


def check_rate_limit(value: str, variable: str = "SPAMGUARD_API_RATE_LIMIT",
                     example: str = "'600 per minute' or '600/minute;20/second'") -> None:
    """Refuse a rate limit Flask-Limiter cannot read: it would log the error on each
    request and apply no limit at all, so "600 per minut" silently meant "unlimited".

    Raises:
        ValueError: ``value`` is not in the limits syntax (``600 per minute``, ``10/second``;
            several joined with ``;`` or ``,``).
    """
    from limits import parse_many

    try:
        limits = parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{variable}={value!r} is not valid: {exc} (write it "
                         f"like {example})") from None
    if any(limit.amount < 1 for limit in limits):  # "0 per minute" would refuse every call
        raise ValueError(f"{variable}={value!r} allows no call at all; "
                         "give each limit at least 1")


# The shipped labelled data set (spamguard.shipped: beside the package, or in a wheel inside it).
DEFAULT_DATA = shipped_dir("data") / "sms_spam_collection.tsv"


# The word that names no also-train file (SPAMGUARD_ALSO_TRAIN=none, --also-train none).
NO_FILE = "none"
# Names of shipped also-train files: present-day notices, personal messages and scams
# written for spamguard (data/README.md), which the 2010-2012 data set has none of.
SHIPPED_ALSO_TRAIN = {"present-day": shipped_dir("data") / "present_day.tsv"}


def parse_also_train(values: list[str] | tuple[str, ...], *, split: bool = True
                     ) -> list[Path] | None:
    """Files named by ``--also-train`` or ``SPAMGUARD_ALSO_TRAIN`` (spamguard.ml.also_train):
    None when nothing is named (the caller's default applies), ``[]`` for ``none``.
    ``present-day`` names the shipped data/present_day.tsv. With ``split`` (the setting)
    ``os.pathsep`` separates files; without it (the repeatable option) each value is one
    file, so a file name with a colon in it can still be given.

    Raises:
        ValueError: ``none`` given together with a file.
    """
    names = [part.strip() for value in values
             for part in (value.split(os.pathsep) if split else [value]) if part.strip()]
    if not names:
        return None
    if any(name.lower() == NO_FILE for name in names):
        if len(names) > 1:
            raise ValueError(f"'{NO_FILE}' means no also-train file; name no file with it")
        return []
    return [SHIPPED_ALSO_TRAIN.get(name, Path(name)) for name in names]


# Recent traffic a candidate is compared on (changes.md, `spamguard models compare`).
TRAFFIC_DAYS = 7.0
TRAFFIC_LIMIT = 2000
MAX_TRAFFIC_DAYS = 366
MAX_TRAFFIC_LIMIT = 100_000  # two versions score them in one run: minutes, not hours


@dataclass(frozen=True)
class Settings:
    """Every setting spamguard reads, with its default."""

    home: Path = Path("instance")
    database_url: str = ""  # empty: SQLite file in ``home``
    secret_key: str = PLACEHOLDER_SECRET
    twilio_auth_token: str = ""
    twilio_validate: bool = True
    public_base_url: str = ""  # e.g. https://sms.example.com; used to rebuild signed URLs
    trust_proxy: bool = False  # honour X-Forwarded-For/Proto/Host/Port from one proxy
    env: str = "production"  # "development" allows the placeholder secret
    backbone: str = ""  # empty: the packaged all-MiniLM-L6-v2
    max_body_chars: int = 1600
    max_request_bytes: int = 64 * 1024
    classify_batch_limit: int = 256
    api_rate_limit: str = "600 per minute"
    # failed admin logins one address may make (password spraying tries one password on
    # many accounts, which the per-account lockout never sees)
    login_failure_limit: str = "20 per 15 minutes"
    reply_text: str = ""  # TwiML reply sent to the sender; empty: no reply
    forward_to: str = ""  # a phone number (E.164) messages not judged spam are forwarded to
    log_bodies: bool = False
    model_check_seconds: int = 5  # how often a worker checks for a newly active model
    rate_limit_storage_uri: str = "memory://"  # per worker; redis://... to share limits
    pending_drain_batch: int = 32  # pending messages a worker classifies after a request
    pending_retry_seconds: int = 300  # with a model loaded, retry pending this often (0: never)
    quantize: bool = False  # serve with int8 dynamic quantisation (docs/performance.md)
    runtime: str = "auto"  # backbone runtime for serving and classify (RUNTIMES)
    torch_threads: int = 1  # torch and ONNX Runtime threads per service worker
    base_data: str = ""  # retraining's base data set; empty: DEFAULT_DATA
    # files whose messages always train (os.pathsep between them); "none": none; empty:
    # train none, retrain as the active version was trained (spamguard.ml.also_train)
    also_train: str = ""
    retrain_min_new_reviews: int = 20  # fewer new reviews since the last run: skip
    retrain_metric: str = "mcc"  # compared on the fixed evaluation set
    retrain_margin: float = 0.0  # candidate may be this much worse on the metric
    retrain_min_per_class: int = 10  # fewer spam or ham training examples: fail
    retrain_review_weight: float = 10.0  # a reviewed message counts up to this many base ones
    retrain_traffic_days: float = TRAFFIC_DAYS  # changes.md: verdicts of these days the
    retrain_traffic_limit: int = TRAFFIC_LIMIT  # candidate would change, at most this many (0: off)
    retrain_lock_ttl: int = 3600  # seconds; a lock held longer may be taken over
    evalset_fraction: float = 0.15  # share of the deduplicated base data held out, once
    session_idle_hours: int = 12  # an admin UI login unused this long must log in again
    queue_claim_seconds: int = 300  # the queue's message is a moderator's alone this long
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def onnx_dir(self) -> Path:
        """Where the backbone's exported ONNX graphs are kept."""
        return self.cache_dir / "onnx"

    @property
    def base_data_path(self) -> Path:
        return Path(self.base_data) if self.base_data else DEFAULT_DATA

    @property
    def also_train_paths(self) -> list[Path] | None:
        """The files SPAMGUARD_ALSO_TRAIN names ([] for "none"; None when it is unset)."""
        return parse_also_train([self.also_train])

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'spamguard.db').resolve()}"


# Spellings a boolean variable accepts (case-insensitive, surrounding spaces ignored). Any
# other value is refused: a typo in SPAMGUARD_TWILIO_VALIDATE must not switch checks off.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
ENVIRONMENTS = ("production", "development")


def parse_bool(value: str) -> bool:
    """Read a boolean variable's value.

    Raises:
        ValueError: ``value`` is none of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`.
    """
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"use one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")


def _coerce(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return parse_bool(value)
    # Python also reads "5_000" and other scripts' digits ("١٢٠٠"); a setting takes 0-9.
    plain = value.strip().isascii() and "_" not in value
    if isinstance(default, int):
        try:
            return int(value) if plain else int("not a number")
        except ValueError:
            raise ValueError("use a whole number (digits 0-9)") from None
    if isinstance(default, float):
        try:
            return float(value) if plain else float("not a number")
        except ValueError:
            raise ValueError("use a number (digits 0-9)") from None
    if isinstance(default, Path):
        return Path(value)
    return value


# Settings that name one of a few choices (matched without regard to case or spaces).
CHOICES = {"env": ENVIRONMENTS, "runtime": RUNTIMES, "retrain_metric": GATE_METRICS}


def check_public_base_url(value: str) -> None:
    """Refuse a base URL Twilio's signatures cannot match: "sms.example.com" (no scheme)
    made every correctly signed webhook a 403, with nothing in the log to say why."""
    if not value:
        return
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - reading it checks it ("https://x:abc" raises)
        usable = (parts.scheme in ("http", "https") and bool(parts.hostname)
                  and not parts.query and not parts.fragment
                  and not any(c.isspace() for c in value))  # urlsplit drops some spaces
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(f"SPAMGUARD_PUBLIC_BASE_URL={value!r} is not valid: write the "
                         "address Twilio posts to, like https://sms.example.com (a path "
                         "prefix may follow; no spaces, query or fragment)")


E164 = re.compile(r"\+[1-9][0-9]{7,14}")  # 8 to 15 digits, as senders.MIN_PHONE_DIGITS


def check_forward_to(value: str) -> None:
    """Refuse a forwarding number Twilio would not send to ("555 0001", "0044..."): each
    forward would fail at Twilio, long after the start, with nothing in our log."""
    if value and not E164.fullmatch(value):
        raise ValueError(f"SPAMGUARD_FORWARD_TO={value!r} is not valid: write the number in "
                         "E.164 form, + and country code, no spaces (like +15550001111)")


MIN_LOCK_TTL = 60  # seconds: a lease renews every third of its TTL
# Upper bounds where a huge number failed only later, with a traceback: the lock's expiry
# overflowed a date, and torch refused the thread count as each worker booted.
MAX_LOCK_TTL = 7 * 24 * 3600
MAX_THREADS = 256
MIN_REQUEST_BYTES = 1024  # below that not even one SMS form post fits
MAX_SESSION_IDLE_HOURS = 24 * 31
MAX_REVIEW_WEIGHT = 100  # more lets a handful of labels outweigh the whole base data set
# A queue claim (services.queue_claims): long enough to read a message and decide, short
# enough that one left on a screen does not keep it from the others for long.
QUEUE_CLAIM_SECONDS = (30, 3600)


def _check_numbers(settings: Settings, given_as: dict[str, str]) -> None:
    """Refuse numbers that would misbehave at run time rather than at start: a body limit
    of -5 refused every SMS with a 400, a lock TTL of 0 let a second retraining take the
    lock from a live one, negative counts meant "never skip", and the evaluation fraction
    failed only mid-run. A refusal quotes the variable as ``given_as`` holds it (its text
    in the environment: "0", not the 0.0 it was read as)."""
    s = settings
    checks = (
        ("max_body_chars", s.max_body_chars >= 1, "choose 1 or more"),
        ("max_request_bytes", s.max_request_bytes >= MIN_REQUEST_BYTES,
         f"choose {MIN_REQUEST_BYTES} bytes or more"),
        ("classify_batch_limit", s.classify_batch_limit >= 1, "choose 1 or more"),
        ("model_check_seconds", s.model_check_seconds >= 0, "choose 0 or more"),
        ("pending_drain_batch", s.pending_drain_batch >= 0, "choose 0 or more"),
        ("pending_retry_seconds", s.pending_retry_seconds >= 0, "choose 0 or more"),
        ("torch_threads", 1 <= s.torch_threads <= MAX_THREADS, f"choose 1 to {MAX_THREADS}"),
        ("retrain_lock_ttl", MIN_LOCK_TTL <= s.retrain_lock_ttl <= MAX_LOCK_TTL,
         f"choose {MIN_LOCK_TTL} to {MAX_LOCK_TTL:,} seconds (a week)"),
        ("retrain_min_new_reviews", s.retrain_min_new_reviews >= 0, "choose 0 or more"),
        ("retrain_traffic_days", 0 < s.retrain_traffic_days <= MAX_TRAFFIC_DAYS,
         f"choose more than 0 and at most {MAX_TRAFFIC_DAYS} days"),
        ("retrain_traffic_limit", 0 <= s.retrain_traffic_limit <= MAX_TRAFFIC_LIMIT,
         f"choose 0 (off) to {MAX_TRAFFIC_LIMIT:,}"),
        ("retrain_min_per_class", s.retrain_min_per_class >= 1, "choose 1 or more"),
        ("retrain_margin", 0.0 <= s.retrain_margin <= 1.0, "choose a number from 0 to 1"),
        ("retrain_review_weight", 1.0 <= s.retrain_review_weight <= MAX_REVIEW_WEIGHT,
         f"choose a number from 1 to {MAX_REVIEW_WEIGHT}"),
        ("evalset_fraction", 0.0 < s.evalset_fraction < 1.0,
         "choose a number between 0 and 1 (0.15 holds out 15%)"),
        ("session_idle_hours", 1 <= s.session_idle_hours <= MAX_SESSION_IDLE_HOURS,
         f"choose 1 to {MAX_SESSION_IDLE_HOURS} hours"),
        ("queue_claim_seconds",
         QUEUE_CLAIM_SECONDS[0] <= s.queue_claim_seconds <= QUEUE_CLAIM_SECONDS[1],
         "choose {} to {} seconds".format(*QUEUE_CLAIM_SECONDS)),
    )
    for name, ok, advice in checks:
        if not ok:
            given = given_as.get(name, getattr(settings, name))
            raise ValueError(f"SPAMGUARD_{name.upper()}={given!r} is not valid: {advice}")


def load_settings(overrides: dict[str, Any] | None = None, environ=None) -> Settings:
    """Build settings from defaults, the environment and ``overrides`` (in that order).

    An empty (or all-space) variable counts as unset, so the default applies: deployment
    templates often write ``SPAMGUARD_X=`` for "not set", and for a boolean such as
    ``SPAMGUARD_TWILIO_VALIDATE`` that must mean the safe default, not "off".

    Raises:
        ValueError: a value is not valid (one line that names the variable).
    """
    environ = os.environ if environ is None else environ
    settings = Settings()
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # each variable's text, for a refusal to quote
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = environ.get(f"SPAMGUARD_{f.name.upper()}")
        if raw is not None and raw.strip():
            given_as[f.name] = raw
            try:
                values[f.name] = _coerce(raw, getattr(settings, f.name))
            except ValueError as exc:
                raise ValueError(f"SPAMGUARD_{f.name.upper()}={raw!r} is not valid: {exc}") from exc
    extra: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in {f.name for f in fields(Settings)}:
            values[key] = Path(value) if key == "home" else value
            given_as.pop(key, None)
        else:
            extra[key] = value
    for name, choices in CHOICES.items():  # "ONNX" means onnx, as "Yes" means yes
        given = values.get(name, getattr(settings, name))
        value = str(given).strip().lower()
        if value not in choices:  # "dev" must not silently mean production
            raise ValueError(f"SPAMGUARD_{name.upper()}={given!r} is not valid: choose "
                             f"{', '.join(choices)}")
        values[name] = value
    settings = replace(settings, **values)
    check_number_format(settings.runtime, settings.quantize)
    # The defaults are valid (tests/test_config.py): reading them would import the limits
    # library (0.26 s) into every command, `train` included, for nothing.
    if settings.api_rate_limit != Settings.api_rate_limit:
        check_rate_limit(settings.api_rate_limit)
    if settings.login_failure_limit != Settings.login_failure_limit:
        check_rate_limit(settings.login_failure_limit, "SPAMGUARD_LOGIN_FAILURE_LIMIT",
                         "'20 per 15 minutes' or '20/15minutes'")
    check_public_base_url(settings.public_base_url)
    check_forward_to(settings.forward_to)
    _check_numbers(settings, given_as)
    # A home that is a file read as "no spamguard database at FILE/spamguard.db".
    if settings.home.exists() and not settings.home.is_dir():
        raise ValueError(f"SPAMGUARD_HOME={str(settings.home)!r} is a file, not a folder: "
                         "point it at the instance's folder (or a new one to create)")
    try:
        settings.also_train_paths  # noqa: B018 - reading it checks it
    except ValueError as exc:
        raise ValueError(f"SPAMGUARD_ALSO_TRAIN={settings.also_train!r} is not valid: "
                         f"{exc}") from None
    if extra:
        settings = replace(settings, extra={**settings.extra, **extra})
    return settings
