"""Web glue shared by the webhook and the JSON API: input checks, JSON errors, ingest."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Response, current_app, g, jsonify

from spamguard.extensions import db_session
from spamguard.services import messages
from spamguard.services.model_provider import provider_for


class BadInput(Exception):
    """Request content the caller must fix (becomes a JSON 4xx, nothing stored)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def json_error(message: str, status: int, **headers: str) -> Response:
    """Return ``{"error": message}`` with ``status``."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def unavailable(message: str, retry_after: int) -> Response:
    """A 503 that tells the client when to try again (kept as given: the API's rate limiter
    would raise Retry-After to its window's end; see ``spamguard.api.init_app``)."""
    g.retry_after = str(retry_after)
    return json_error(message, 503, **{"Retry-After": g.retry_after})


def check_text(name: str, value: Any, *, max_chars: int, allow_empty: bool = False,
               allow_blank: bool = False) -> str:
    """Return ``value`` if it is a storable string for field ``name``, else raise BadInput.

    An empty string is refused unless ``allow_empty``; one of spaces or line breaks only is
    refused too unless ``allow_blank``. Message text allows blanks: someone can send an SMS
    of one space, and refusing it loses it (Twilio does not retry a 4xx answer). Identifiers
    and numbers do not.
    """
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string")
    empty = value == "" if allow_blank else not value.strip()
    if empty and not allow_empty:
        raise BadInput(f"{name} must not be empty")
    if len(value) > max_chars:
        raise BadInput(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise BadInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
        raise BadInput(f"{name} is not valid Unicode (lone surrogate)") from None
    return value


def check_address(name: str, value: Any) -> str:
    """A sender or recipient (a phone number, short code or name), without surrounding
    spaces: the message list's sender filter strips what is typed into it, so a sender
    stored as " +15550003333 " could never be found, not even from its own message's link."""
    return check_text(name, value, max_chars=255).strip()


def settings():
    """The app's settings."""
    return current_app.config["SPAMGUARD"]


def current_classifier():
    """The process's classifier for the active version (None: classify later)."""
    return provider_for(current_app).get(session=db_session())


def ingest(**fields: Any) -> messages.IngestResult:
    """Store and classify a message for this request; note its id and label for the log.

    The row is committed before the model is asked for: a worker's first request loads the
    model (seconds), and a crash or timeout then must not lose the message.
    """
    db = db_session()
    result = messages.ingest(session=db, classifier=None, **fields)
    if result.message.verdict_status == "pending":
        verdict = messages.classify_or_leave_pending(session=db, message=result.message,
                                                     get_classifier=current_classifier)
        result = replace(result, verdict=verdict)
    g.message_id = result.message.id
    g.verdict_label = result.message.model_label
    if settings().log_bodies:
        g.log_body = result.message.body
    if result.verdict is not None:
        count_verdict = current_app.extensions.get("spamguard.count_verdict")
        if count_verdict is not None:
            count_verdict(result.verdict.label)
    return result
