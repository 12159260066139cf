"""The JSON API under ``/api/v1`` (Bearer API key, rate-limited per key across the API)."""

from __future__ import annotations

import json
import logging
import math
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from spamguard.errors import ModelError
from spamguard.extensions import db_session
from spamguard.intake import (
    BadInput,
    check_address,
    check_text,
    current_classifier,
    ingest,
    json_error,
    settings,
    unavailable,
)
from spamguard.ml.blend import shown_probability
from spamguard.services import apikeys, messages
from spamguard.services.model_provider import provider_for
from spamguard.sqltypes import as_utc, parse_id

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
GATEWAY = "api"
MESSAGE_FIELDS = {"id", "from", "to", "body", "received_at"}


def rate_limit_key() -> str:
    """Limit per valid API key; callers without one (no token, or a wrong or revoked one)
    per address, so trying many made-up tokens does not buy a fresh allowance each time."""
    key = verified_key()
    return f"key:{key.id}" if key is not None else "addr:" + get_remote_address()


def verified_key():
    """The active API key the request's bearer token names, or None (looked up once per
    request: the rate limiter asks before the blueprint's check does)."""
    if "api_key" not in g:
        token = bearer_token()
        g.api_key = (apikeys.verify_api_key(session=db_session(), key=token)
                     if token is not None else None)
    return g.api_key


def init_app(app: Flask) -> None:
    """Attach a Flask-Limiter to this app that limits only the API blueprint, with one
    allowance per key shared by all its endpoints."""
    current = app.config["SPAMGUARD"]
    # Registered before the limiter's own hook, so it runs after it (Flask runs after-request
    # functions in reverse order): Flask-Limiter puts Retry-After on every response, which
    # tells a client to back off after a success; keep it only where it means "retry later",
    # and on a 503 put back the view's own value (the limiter raises it to the window's end).
    app.after_request(_retry_after_only_when_refused)
    limiter = Limiter(key_func=rate_limit_key, app=app, storage_uri=current.rate_limit_storage_uri,
                      headers_enabled=True, default_limits=[])
    # One bucket per key for the whole API: limiter.limit(...)(bp) would give every route its
    # own bucket, so a key could make the limit's worth of calls to each endpoint.
    limiter.shared_limit(lambda: current_app.config["SPAMGUARD"].api_rate_limit, scope="api")(bp)
    app.extensions["spamguard.limiter"] = limiter


def _retry_after_only_when_refused(response: Response) -> Response:
    own = g.pop("retry_after", None)
    if response.status_code == 503 and own is not None:
        response.headers["Retry-After"] = own
    elif response.status_code == 429:
        # The limiter rounds the seconds to its window's end down: at the very end it said
        # 0, "retry at once", and the retry could come before the window ended.
        said = response.headers.get("Retry-After", "")
        if said.isdigit() and int(said) < 1:
            response.headers["Retry-After"] = "1"
    elif response.status_code != 503:
        response.headers.pop("Retry-After", None)
    return response


def bearer_token() -> str | None:
    """Return the token of ``Authorization: Bearer <token>``, if present."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@bp.before_request
def require_api_key() -> Response | None:
    """Answer 401 unless the request carries an active API key."""
    token = bearer_token()
    if token is None:
        return json_error("missing API key: send Authorization: Bearer <key>", 401,
                          **{"WWW-Authenticate": "Bearer"})
    key = verified_key()
    if key is None:
        db_session().rollback()
        return json_error("invalid or revoked API key", 401,
                          **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    db_session().commit()  # last_used_at, when it changed
    g.api_key_id = key.id
    if request.endpoint is None:  # no such path or method: the 404 or 405 says so
        return None
    needed = ENDPOINT_SCOPES.get(request.endpoint)
    held = apikeys.key_scopes(key)
    if needed is None:  # an endpoint nobody gave a scope: refused, not open to every key
        return json_error("this call is not open to API keys", 403)
    if needed not in held:
        return json_error(
            f"this API key may not {apikeys.SCOPE_HELP[needed]}; it holds: "
            f"{', '.join(held) or 'no scope'}; ask for a key with the {needed!r} scope", 403,
            **{"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'})
    return None


# The scope each endpoint needs; an endpoint missing here is refused to every key.
ENDPOINT_SCOPES = {"api.post_message": "submit", "api.classify": "classify",
                   "api.get_message": "read"}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object without repeated names: ``{"text": "a", "text": "b"}`` would otherwise
    keep the last silently, and another parser (a proxy's, a log's) may keep the first."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise BadInput(f"malformed JSON: the name {key[:40]!r} appears twice in one "
                           "object")
        data[key] = value
    return data


def _no_constant(name: str) -> None:
    """Python's parser takes NaN and Infinity, which JSON (RFC 8259) does not have."""
    raise BadInput(f"malformed JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    """Python's parser turns a number too large for a float (``1e400``) into infinity,
    which is no JSON value either."""
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        infinity = "-Infinity" if value < 0 else "Infinity"
        raise BadInput(f"malformed JSON: the number {shown} is out of range (it overflows "
                       f"to {infinity}, which is not a JSON value)")
    return value


def _bounded_int(text: str) -> int:
    """Python's parser refuses an integer of more than 4,300 digits with advice for Python
    programmers (``sys.set_int_max_str_digits()``); say what is wrong with the request."""
    # Python's limit (4,300 unless set otherwise); with none set (0), the default all the
    # same: int() of a number as long as the body takes time quadratic in its length.
    limit = sys.get_int_max_str_digits() or 4300
    if len(text.lstrip("-")) > limit:
        raise BadInput(f"malformed JSON: a number of {len(text.lstrip('-')):,} digits "
                       f"(at most {limit} here)")
    return int(text)


def read_json_object() -> dict[str, Any]:
    """Parse the request body as a JSON object, strictly (415/400 otherwise): valid
    UTF-8, RFC 8259 only (no NaN or Infinity, nor a number that overflows to infinity),
    no name twice in an object."""
    if not request.is_json:
        raise BadInput("Content-Type must be application/json", 415)
    try:
        data = json.loads(request.get_data().decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_no_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except UnicodeDecodeError:
        raise BadInput("request body is not valid UTF-8") from None
    except ValueError as exc:
        raise BadInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadInput("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadInput("the JSON body must be an object")
    return data


def reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    """Refuse fields the endpoint does not know (a typo must not be silently dropped)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} "
                       f"(allowed: {', '.join(sorted(allowed))})")


# How far ahead of this server's clock a received_at may be: clock skew, or a local time
# sent without its zone (taken as UTC, at most 14 hours off). A time further ahead is a
# mistake that would sit first in every newest-first list for years.
MAX_FUTURE = timedelta(days=1)


def parse_time(value: Any, *, now: datetime | None = None) -> datetime:
    """Parse ``received_at`` (ISO 8601; a time without a zone is taken as UTC; at most
    :data:`MAX_FUTURE` ahead of ``now``, the server's UTC time)."""
    if not isinstance(value, str):
        raise BadInput("received_at must be an ISO 8601 string")
    try:
        # RFC 3339 allows a lower-case "z" for UTC; fromisoformat takes only "Z".
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z"))
                                        else value)
    except ValueError:
        raise BadInput(f"received_at {value[:40]!r} is not an ISO 8601 time") from None
    try:
        received = as_utc(parsed)
    except OverflowError:  # a valid time that falls before year 1 or after 9999 in UTC
        raise BadInput(f"received_at {value[:40]!r} is out of range: in UTC it must fall "
                       "between 0001-01-01 and 9999-12-31") from None
    now = now or datetime.now(UTC)
    if received - now > MAX_FUTURE:
        raise BadInput(f"received_at {value[:40]!r} is in the future: it may be at most a "
                       f"day ahead of this server's clock ({now:%Y-%m-%dT%H:%M:%SZ})")
    return received


# Control characters, and line and paragraph separators; in an id also format characters
# (zero-width spaces, direction overrides), which make two ids look alike.
_REFUSED_CATEGORIES = {"Cc", "Zl", "Zp"}
_REFUSED_IN_ID = _REFUSED_CATEGORIES | {"Cf"}


def _no_control_characters(name: str, value: str | None) -> str | None:
    """Refuse control characters (line breaks, escape sequences) in an identifier or number.

    The API only: an API client can fix its request, while a webhook delivery Twilio made
    is never refused for its numbers (a 4xx loses the message)."""
    refused = _REFUSED_IN_ID if name == "id" else _REFUSED_CATEGORIES
    if value is not None and any(unicodedata.category(c) in refused for c in value):
        raise BadInput(f"{name} contains a control or invisible character (a line break, "
                       "tab, escape" + (", zero-width or direction mark)" if name == "id"
                                        else ")"))
    return value


def message_input(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a message object and map it onto :func:`messages.ingest` arguments."""
    reject_unknown(data, MESSAGE_FIELDS)
    missing = [name for name in ("from", "to", "body") if name not in data]
    if missing:
        raise BadInput(f"missing field(s): {', '.join(missing)}")
    external_id = data.get("id")
    if external_id is not None:
        external_id = check_text("id", external_id, max_chars=128)
        if external_id != external_id.strip():  # " m-1 " and "m-1" would be two messages
            raise BadInput("id has spaces or line breaks around it; send it without them")
    received = data.get("received_at")
    return {
        "external_id": _no_control_characters("id", external_id),
        "sender": _no_control_characters("from", check_address("from", data["from"])),
        "recipient": _no_control_characters("to", check_address("to", data["to"])),
        "body": check_text("body", data["body"], max_chars=settings().max_body_chars,
                           allow_blank=True),
        "received_at": parse_time(received) if received is not None else None,
    }


@bp.post("/messages")
def post_message() -> Response:
    """Store and classify a message (201; 200 on replay of ``id``; 202 while pending)."""
    try:
        fields = message_input(read_json_object())
    except BadInput as exc:
        return json_error(str(exc), exc.status)
    result = ingest(gateway=GATEWAY, **fields)
    message = result.message
    if not result.created and (message.sender, message.recipient, message.body) != (
            fields["sender"], fields["recipient"], fields["body"]):
        return json_error(f"id {fields['external_id']!r} was already used for another message",
                          409)
    status = 202 if result.pending else (201 if result.created else 200)
    return jsonify(verdict_summary(message)), status


def verdict_summary(message) -> dict[str, Any]:
    """The answer to a submitted message."""
    return {"message_id": message.id, "id": message.external_id,
            "status": message.verdict_status, "label": message.model_label,
            "spam_probability": shown_probability(message.spam_probability),
            "model_version": message.model_version_id, "sender_rule": message.sender_rule}


@bp.post("/classify")
def classify() -> Response:
    """Classify up to ``classify_batch_limit`` texts without storing them."""
    limit = settings().classify_batch_limit
    try:
        data = read_json_object()
        reject_unknown(data, {"texts"})
        texts = data.get("texts")
        if not isinstance(texts, list) or not texts:
            raise BadInput("texts must be a non-empty list of strings")
        if len(texts) > limit:
            raise BadInput(f"texts has {len(texts)} items; the limit is {limit}", 413)
        texts = [check_text(f"texts[{i}]", t, max_chars=settings().max_body_chars,
                            allow_blank=True)  # as /messages takes them
                 for i, t in enumerate(texts)]
    except BadInput as exc:
        return json_error(str(exc), exc.status)
    classifier = current_classifier()
    if classifier is None:
        # Which of the two, not why: the load error names folders on the server (/healthz
        # and the service's log, for the operator, carry it).
        failed = provider_for(current_app).last_error is not None
        return unavailable("the active model version cannot be loaded (the service's log "
                           "says why); try again later" if failed else
                           "no model is loaded yet; try again later", retry_after=30)
    try:
        results = classifier.classify(texts)
    except ModelError as exc:  # the model, not the request, is at fault: not a 400
        log.error("model %s cannot classify: %s", classifier.version, exc)
        return unavailable("the loaded model cannot classify messages (see the service "
                           "log); try again once another version is promoted",
                           retry_after=30)
    return jsonify(model_version=classifier.version, results=results)


@bp.get("/messages/<reference>")
def get_message(reference: str) -> Response:
    """Return a stored message with its verdicts and reviews.

    One rule reads the path: werkzeug's ``int`` converter also took other scripts' digits
    (``/messages/\u0661`` was message 1), and a number out of a converter's range gave its
    generic 404 instead of the fallback rule's explanation."""
    if not (reference.isascii() and reference.isdigit()):  # e.g. the client's own id
        return json_error(f"no message {reference[:40]!r}: the path takes the numeric "
                          "message_id that POST /api/v1/messages returned, not the message's "
                          "own id", 404)
    try:  # beyond the id columns' range (or int()'s 4,300 digits): cannot exist
        message = messages.get_message(session=db_session(), message_id=parse_id(reference))
    except ValueError:
        message = None
    if message is None:
        return json_error(f"no message {reference[:40]}", 404)
    return jsonify(message_document(message))


def message_document(message) -> dict[str, Any]:
    """A message with its verdicts and reviews, as JSON-ready data."""
    return {
        **verdict_summary(message),
        "gateway": message.gateway, "from": message.sender, "to": message.recipient,
        "body": message.body, "received_at": message.received_at.isoformat(),
        "review_label": message.review_label,
        "verdicts": [{"model_version": v.model_version_id, "label": v.label,
                      "sender_rule": v.sender_rule,
                      "spam_probability": shown_probability(v.spam_probability),
                      "threshold": v.threshold,
                      "latency_ms": v.latency_ms, "created_at": v.created_at.isoformat()}
                     for v in message.verdicts],
        "reviews": [{"label": r.label, "note": r.note, "user_id": r.user_id,
                     "current": r.is_current, "created_at": r.created_at.isoformat()}
                    for r in message.reviews],
    }
