"""``POST /webhook/twilio``: Twilio's inbound-SMS webhook (signed, idempotent on MessageSid)."""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import parse_qsl, quote

from flask import Blueprint, Flask, Response, request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse

from spamguard.extensions import db_session
from spamguard.intake import BadInput, check_address, check_text, ingest, json_error, settings
from spamguard.models import Message
from spamguard.senders import phone_digits
from spamguard.services import messages, sender_rules

bp = Blueprint("webhook", __name__, url_prefix="/webhook")
log = logging.getLogger("spamguard.webhook")
GATEWAY = "twilio"
FORM_TYPE = "application/x-www-form-urlencoded"
PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 path characters that stay unescaped
# Stored beside the message for moderators and audits; Body/From/To have their own columns.
RAW_FIELDS = ("AccountSid", "MessagingServiceSid", "NumMedia", "NumSegments", "SmsStatus",
              "FromCountry", "FromState", "FromCity", "ToCountry", "ApiVersion")
# A picture message's attachments (Twilio sends at most 10): their types and where Twilio
# keeps them, so a moderator can see what a message with little or no text carried.
# Twilio's message ids: SM (SMS) or MM (picture message) and 32 hex digits. Held to that,
# because the signature covers the fields' names and values run together: a looser id
# could swallow the next field ("SM...1fNumMedia0") and pass the same signature as a new
# message, so one captured request could be stored again and again.
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
MAX_MEDIA = 10
MAX_MEDIA_URL_CHARS = 500  # a longer one is left out rather than kept cut short
TWILIO_MAX_CHARS = 1600  # the longest body Twilio sends as one (segmented) message


def init_app(app: Flask) -> None:
    """Warn once at startup when signature checks are off or cannot pass."""
    current = app.config["SPAMGUARD"]
    if not current.twilio_validate:
        log.warning("Twilio signature validation is OFF (SPAMGUARD_TWILIO_VALIDATE=0): "
                    "anyone can post to /webhook/twilio; use this for local testing only")
    elif not current.twilio_auth_token:
        log.warning("SPAMGUARD_TWILIO_AUTH_TOKEN is not set: /webhook/twilio answers 403")
    elif not current.public_base_url and current.env == "production":
        log.warning("SPAMGUARD_PUBLIC_BASE_URL is not set: Twilio signatures are checked "
                    "against a URL built from each request's Host header, so a request "
                    "signed for another webhook of the same Twilio account would pass here; "
                    "set it to the address Twilio posts to, e.g. https://sms.example.com")


def signed_url() -> str:
    """The URL Twilio signed: the configured public base URL, else the request's own root
    (ProxyFix, SPAMGUARD_TRUST_PROXY, has applied X-Forwarded-*), then path and query.

    The query string is used as it arrived: Twilio signs the URL exactly as configured, so
    ``?cb=https%3A%2F%2Fx`` must not be decoded (werkzeug's ``request.url`` would decode it).
    """
    base = settings().public_base_url.rstrip("/") or request.root_url.rstrip("/")
    query = request.query_string.decode("latin-1")
    return base + quote(request.path, safe=PATH_SAFE) + (f"?{query}" if query else "")


def signature_ok() -> bool:
    """Check X-Twilio-Signature against the auth token (always True when validation is off)."""
    current = settings()
    if not current.twilio_validate:
        return True
    signature = request.headers.get("X-Twilio-Signature", "")
    if not current.twilio_auth_token:  # the start-up warning may be days old: say it here
        log.warning("X-Twilio-Signature cannot be checked: SPAMGUARD_TWILIO_AUTH_TOKEN is "
                    "not set (every delivery gets 403)")
        return False
    if not signature:
        return False
    algorithm = get_signature_algorithm(
        request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    validator = RequestValidator(current.twilio_auth_token)
    url = signed_url()
    if validator.validate(url, request.form, signature, algorithm=algorithm):
        return True
    # The usual cause is a URL that differs from the one configured in Twilio (a proxy
    # not trusted, a wrong SPAMGUARD_PUBLIC_BASE_URL): say which one was checked.
    log.warning("X-Twilio-Signature does not match %s (Twilio must be set to post to exactly "
                "that URL; see SPAMGUARD_PUBLIC_BASE_URL and SPAMGUARD_TRUST_PROXY)", url)
    return False


def read_form() -> None:
    """Refuse a body that is not strict UTF-8 form data (werkzeug would replace bad bytes)."""
    if request.mimetype != FORM_TYPE:
        raise BadInput(f"Content-Type must be {FORM_TYPE}", 415)
    raw = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH; form reuses it
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadInput(f"request body is not URL-encoded form data: byte {exc.start} "
                       f"(0x{raw[exc.start]:02x}) must be percent-encoded") from None
    try:
        parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadInput("request body is not valid UTF-8 form data (a percent-encoded "
                       "byte sequence is not UTF-8)") from None


def message_fields() -> dict:
    """Validate Twilio's fields and map them onto :func:`messages.ingest` arguments."""
    form, limit = request.form, settings().max_body_chars
    missing = [name for name in ("MessageSid", "From", "To", "Body") if name not in form]
    if missing:
        raise BadInput(f"missing field(s): {', '.join(missing)}")
    num_media = form.get("NumMedia", "0").strip() or "0"
    if not (num_media.isascii() and num_media.isdigit() and len(num_media) <= 9):
        raise BadInput(f"NumMedia must be a whole number, got {num_media[:20]!r}")
    has_media = int(num_media) > 0
    sid = form["MessageSid"]
    if not MESSAGE_SID.fullmatch(sid):
        raise BadInput(f"MessageSid must be SM or MM and 32 hex digits as Twilio sends it, "
                       f"got {sid[:40]!r}")
    return {
        "external_id": sid,
        "sender": check_address("From", form["From"]),
        "recipient": check_address("To", form["To"]),
        # A picture message may have no text: keep it (it is still a delivery to log). Text
        # of spaces only is still a message someone sent: keep it too.
        "body": check_text("Body", form["Body"], max_chars=limit, allow_empty=has_media,
                           allow_blank=True),
        "raw": {**{name: form[name][:255] for name in RAW_FIELDS if name in form},
                **({"NumMedia": num_media} if "NumMedia" in form else {}),  # as checked
                **media_fields(form, int(num_media))} or None,
    }


def media_fields(form, count: int) -> dict[str, str]:
    """``MediaContentTypeN`` and ``MediaUrlN`` of the first attachments, as Twilio sent them."""
    kept = {}
    for index in range(min(count, MAX_MEDIA)):
        kind, url = form.get(f"MediaContentType{index}"), form.get(f"MediaUrl{index}")
        if kind:
            kept[f"MediaContentType{index}"] = kind[:100]
        if url and len(url) <= MAX_MEDIA_URL_CHARS:
            kept[f"MediaUrl{index}"] = url
    return kept


@bp.post("/twilio")
def twilio_inbound() -> Response:
    """Store, classify and acknowledge one inbound SMS with TwiML."""
    try:
        read_form()
        if not signature_ok():
            return json_error("missing or invalid X-Twilio-Signature", 403)
        fields = message_fields()
    except BadInput as exc:
        return json_error(str(exc), exc.status)
    sid, signature = fields["external_id"], signature_digest()
    owner = signature_owner(signature)
    if owner is not None and owner != sid:
        return json_error(REPLAYED, 403)
    try:  # a retry (owner == sid) finds the earlier delivery by its id, which holds the hash
        result = ingest(gateway=GATEWAY, signature_hash=None if owner else signature, **fields)
    except IntegrityError:  # another worker stored this signature meanwhile
        db_session().rollback()
        owner = signature_owner(signature)
        if owner is None:
            raise
        if owner != sid:
            return json_error(REPLAYED, 403)
        result = ingest(gateway=GATEWAY, **fields)  # this message's own retry: find it
    return Response(twiml_answer(result.message), status=200, mimetype="text/xml")


REPLAYED = ("this X-Twilio-Signature already delivered another message: a captured request "
            "with its fields cut up differently, not a Twilio delivery")


def signature_digest() -> str | None:
    """SHA-256 of the request's X-Twilio-Signature (None without one, e.g. validation off).

    Twilio signs the fields' names and values run together, so the same signature also
    covers the same characters cut into other fields: a sender who writes a body spelling
    out "From...MessageSid...To..." could turn one captured delivery into new messages.
    One signature therefore stores one message (``messages.signature_hash``, unique).
    With validation off the header is whatever the caller sent, not a signature: a test
    harness sending a fixed placeholder got 403 from its second message on.
    """
    value = request.headers.get("X-Twilio-Signature", "")
    checked = settings().twilio_validate
    return hashlib.sha256(value.encode()).hexdigest() if value and checked else None


def signature_owner(signature: str | None) -> str | None:
    """The MessageSid a signature already stored, if any (None without a signature)."""
    if signature is None:
        return None
    return messages.signature_used_by(session=db_session(), signature_hash=signature)


def twiml_answer(message: Message) -> str:
    """Empty ``<Response/>``, with the operator's reply to the sender
    (SPAMGUARD_REPLY_TEXT) and a copy of ``message`` for SPAMGUARD_FORWARD_TO when set."""
    answer = MessagingResponse()
    current = settings()
    if current.reply_text:
        answer.message(current.reply_text)  # the TwiML library escapes it
    if current.forward_to and forwards(message, current.forward_to):
        answer.message(forwarded_text(message), to=current.forward_to)
    return str(answer)


def forwards(message: Message, forward_to: str) -> bool:
    """Whether ``message`` goes on to the forwarding number: unless judged spam (a message
    still pending a verdict goes too, since an outage of the model must not hold back
    legitimate SMS; moderators see it in spamguard either way), and unless it was sent to
    that number itself, which would forward each copy again, for ever. A sender rule
    decides as it does for a verdict."""
    if phone_digits(message.recipient) == phone_digits(forward_to):
        log.warning("SPAMGUARD_FORWARD_TO is the number this message was sent to: not "
                    "forwarded (each copy would come back here)")
        return False
    if message.model_label is None:  # pending: a blocked sender stays blocked
        try:
            rules = sender_rules.actions_for(db_session(), {message.sender})
        except SQLAlchemyError:  # the message is stored: an error answer would have it sent again
            messages.rollback_keeping(db_session(), message)
            log.warning("sender rules could not be read (database error): message %s "
                        "forwarded without that check", message.id)
            return True
        return rules.get(message.sender) != "block"
    return message.model_label != "spam"


def forwarded_text(message: Message) -> str:
    """"From <sender>: <body>", cut to Twilio's limit for one message (in UTF-16 units,
    as Twilio counts); a picture message's attachments are counted, not sent on."""
    media = int((message.raw or {}).get("NumMedia", "0") or 0)
    note = f" [{media} attachment{'s' if media != 1 else ''} not forwarded]" if media else ""
    text = f"From {message.sender}: {message.body}"
    room = TWILIO_MAX_CHARS - _units(note)
    if _units(text) > room:  # Twilio counts UTF-16 units: an emoji is two
        while _units(text) > room - 1:
            text = text[:-max(1, (_units(text) - room + 1) // 2)]
        text += "\u2026"
    return text + note


def _units(text: str) -> int:
    """``text``'s length as Twilio counts it, in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2
