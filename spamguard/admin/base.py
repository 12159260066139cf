"""The admin blueprint and what its views share: roles, the request's session, helpers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask import session as cookie
from flask_login import UserMixin, current_user
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from spamguard.config import Settings
from spamguard.errors import SpamguardError
from spamguard.extensions import db_session
from spamguard.wording import counted, megabytes, sentence

bp = Blueprint("admin", __name__, url_prefix="/admin")
ROLE_RANK = {"viewer": 0, "moderator": 1, "admin": 2}
F = TypeVar("F", bound=Callable[..., Any])


class LoggedInUser(UserMixin):
    """The logged-in account as Flask-Login sees it (a plain copy, not a database row)."""

    def __init__(self, user_id: int, username: str, role: str, epoch: int = 0) -> None:
        self.id, self.username, self.role, self.epoch = user_id, username, role, epoch

    def get_id(self) -> str:
        """``<id>.<epoch>``: what the session cookie stores (see ``load_user``)."""
        return f"{self.id}.{self.epoch}"

    @classmethod
    def of(cls, user) -> LoggedInUser:
        """The login of a ``models.User`` row."""
        return cls(user.id, user.username, user.role, user.session_epoch)

    def can(self, role: str) -> bool:
        """Return True when this user's role is ``role`` or above."""
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[role]


def role_required(role: str) -> Callable[[F], F]:
    """Allow the view to users whose role is ``role`` or above (403 otherwise)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
            if not current_user.can(role):
                abort(403, description=f"this needs the {role} role")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def session() -> Session:
    """The request's database session."""
    return db_session()


@contextmanager
def request_transaction() -> Iterator[Session]:
    """The request's session as one transaction: committed when the block ends, rolled
    back if it raises (for a service that takes a ``transaction()``, as a command's own
    sessions would be)."""
    db = session()
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()


def settings() -> Settings:
    """The app's settings."""
    return current_app.config["SPAMGUARD"]


def user_id() -> int:
    """The logged-in user's id."""
    return int(current_user.id)


def is_local(target: str | None) -> bool:
    """Return True when ``target`` is a path inside the admin UI (safe to redirect to; no
    line break or other control character, which a Location header cannot carry)."""
    return bool(target) and target.startswith("/admin") and "//" not in target \
        and "\\" not in target and target.isprintable()


def page_number() -> int:
    """The ``page`` query argument: 400 unless a whole number; clamped to 1..MAX_PAGE."""
    from spamguard.services.message_queries import MAX_PAGE

    value = request.args.get("page", "1").strip()
    if not re.fullmatch(r"-?[0-9]+", value):  # int() also reads "١" and "1_0" (an audit)
        abort(400, description="page must be a whole number")
    digits = value.lstrip("-").lstrip("0") or "0"  # int() refuses 4,301 digits (a 500)
    if value.startswith("-") or len(digits) > len(str(MAX_PAGE)):
        return 1 if value.startswith("-") else MAX_PAGE
    return min(max(1, int(digits)), MAX_PAGE)


def back(default: str, **values: Any):
    """Redirect to a safe local ``next`` form field, or to ``default``."""
    target = request.form.get("next", "")
    return redirect(target if is_local(target) else url_for(default, **values))


ERROR_FIELD = "error_field"  # session entry: the form field a refusal names, for the next page


def fail(message: str, default: str, *, field: str = "", **values: Any):
    """Flash an error and go back; ``field``: the name of the form field at fault, which
    the next page marks (aria-invalid, described by the error) and focuses."""
    flash(message, "error")
    if field:
        cookie[ERROR_FIELD] = field
    return back(default, **values)


@bp.app_context_processor
def error_field() -> dict[str, str]:
    """``error_field`` for every template: the field named by :func:`fail` before the
    redirect (taken once, as a flash is). A view that answers a refused form itself passes
    its own ``error_field`` to render_template, which wins."""
    return {"error_field": cookie.pop(ERROR_FIELD, "") if ERROR_FIELD in cookie else ""}


def run_action(action: Callable[[Session], Any], *, done: Callable[[Any], str],
               endpoint: str, refused: str = "", fields: bool = False, **values: Any):
    """Run a service call in the request's session; commit and flash ``done(result)``, or
    roll back and flash the error (after ``refused``, e.g. "Role not changed", as one
    sentence). Either way go back to ``endpoint``. ``fields``: the form's fields are named
    as the service names them (``SpamguardError.field``), so the page marks the one at
    fault."""
    db = session()
    try:
        result = action(db)
    except SpamguardError as exc:
        db.rollback()
        why = exc.for_ui()
        return fail(sentence(f"{refused}: {why}") if refused else why, endpoint,
                    field=exc.field if fields else "", **values)
    db.commit()
    flash(done(result), "info")
    return back(endpoint, **values)


def start_job(start: Callable[..., int], *, what: str, busy: str, started: str,
              endpoint: str):
    """Start a background job (see services.retrain_jobs) and say so, or say why not
    (``busy``: what to say when its lock is held, as by one started a moment ago)."""
    from spamguard.errors import LockHeldError
    from spamguard.extensions import get_db

    try:
        pid = start(settings=settings(), session_factory=get_db().session_factory)
    except LockHeldError as exc:
        return fail(f"Not started: {busy} ({exc}).", endpoint)
    except OSError as exc:
        return fail(f"Could not start {what}: {exc}", endpoint)
    flash(started.format(pid=pid), "info")
    return redirect(url_for(endpoint))


@bp.app_template_filter("when")
def format_when(value: datetime | None) -> str:
    """Format a timestamp as ``YYYY-MM-DD HH:MM UTC`` (moderators may sit in any zone)."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("pct")
def format_pct(value: float | None, digits: int = 1) -> str:
    """Format a share as a percentage."""
    return "–" if value is None else f"{100 * value:.{digits}f}%"


bp.app_template_filter("counted")(counted)  # {{ total|counted("campaign") }}
bp.app_template_filter("megabytes")(megabytes)  # {{ size|megabytes }}: "5.2 MB"
bp.app_template_filter("sentence")(sentence)  # {{ ("failed: " ~ why)|sentence }}


@bp.app_template_filter("attachments")
def attachments(raw: dict | None) -> dict[str, Any]:
    """A picture message's attachments from its stored gateway fields: how many, and the
    first ones' types, linked only when the address is Twilio's own over https (what came
    with an SMS is never trusted as a URL: a planted link dressed as "image/jpeg" that
    asks for credentials would be a lure)."""
    from spamguard.webhook import MAX_MEDIA

    raw = raw or {}
    count = str(raw.get("NumMedia", "0")).strip()  # stored unstripped before 2026-12-01
    count = int(count) if count.isascii() and count.isdigit() else 0
    items = []
    for index in range(min(count, MAX_MEDIA)):
        url = raw.get(f"MediaUrl{index}")
        items.append({"type": raw.get(f"MediaContentType{index}") or "unknown type",
                      "url": url if is_gateway_media(url) else None})
    return {"count": count, "items": items}


def is_gateway_media(url: Any) -> bool:
    """Whether ``url`` is an https address on Twilio's media hosts."""
    from urllib.parse import urlsplit

    # Browsers read "\" as "/" and drop tabs and line breaks, where urlsplit does not: an
    # address holding any of them, or anything but plain host characters before the
    # path, could name another host than the one checked here.
    if (not isinstance(url, str) or not url.startswith("https://")
            or not URL_CHARS.fullmatch(url)):
        return False
    try:
        authority = urlsplit(url).netloc.lower()
    except ValueError:  # a malformed address: no link
        return False
    host = authority.removesuffix(":443")
    return HOST_CHARS.fullmatch(authority) is not None and any(
        host == domain or host.endswith("." + domain) for domain in MEDIA_DOMAINS)


MEDIA_DOMAINS = ("twilio.com", "twiliocdn.com")  # where Twilio keeps MMS media
URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")  # RFC 3986, nothing else
HOST_CHARS = re.compile(r"[a-z0-9.-]+(:443)?")  # the whole authority: no user, no oddities


# Characters an SMS can use to make a moderator read something other than what was sent:
# bidi overrides, embeddings and isolates reorder what follows ("Your code \u202eexe.txt"
# shows as "txt.exe"; <bdi> keeps them from spilling out of the message, not from acting
# inside it), and invisible ones hide inside words ("fr\u200bee", "fr\u00adee" and
# "ca\u2063sh" read "free" and "cash"): format characters (the musical, shorthand and
# Egyptian ones too, and the language tag), the Hangul and Khmer fillers, the combining
# grapheme joiner. What real text needs stays: the joiners (U+200C/D, emoji and Indic
# scripts), the left-to-right / right-to-left / Arabic marks (U+200E/F, U+061C, Hebrew and
# Arabic), tag characters inside a flag (🏴 + tags + cancel tag) and variation selectors
# after a character they can vary (see :func:`_varies`); elsewhere those are marked too.
_ALWAYS_HIDDEN = ("\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b\u202a-\u202e"
                  "\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
                  "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
                  "\U000e0001")
_TAGS = "\U000e0020-\U000e007f"
_SELECTORS = "\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef"
HIDDEN_CONTROLS = re.compile(
    # A subdivision flag: 🏴, a region's tag letters (gbsct: 2 letters, 1-3 letters or
    # digits), the cancel tag. Any other tags (a sentence spelt in them) are marked.
    "(?P<flag>\U0001f3f4[\U000e0061-\U000e007a]{2}"
    "[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,3}\U000e007f)"
    f"|(?P<selector>[{_SELECTORS}])|[{_ALWAYS_HIDDEN}{_TAGS}]")
# Control characters (line breaks, tabs): part of a message's text, never of a sender's.
LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _varies(selector: str, before: str) -> bool:
    """Whether variation ``selector`` can vary ``before`` (so it is real text, as in "❤️"
    or "1️⃣"): a Mongolian one after a Mongolian letter, an ideographic one after a CJK
    ideograph, the others after a visible character that is not a letter (emoji, digits
    of a keycap, symbols; of letters only ℹ and CJK ones have such variants). After a
    space, a letter of any script ("fr\ufe0fee", "Сбер\ufe0fбанк"), another selector or a
    control they only hide."""
    if not before:
        return False
    name = unicodedata.name(before, "")
    if "\u180b" <= selector <= "\u180f":
        return name.startswith("MONGOLIAN LETTER")
    if selector >= "\U000e0100":
        return name.startswith("CJK")
    if selector <= "\ufe02" and name.startswith(("CJK", "MYANMAR LETTER", "PHAGS-PA LETTER",
                                                 "EGYPTIAN HIEROGLYPH")):
        return True  # Unicode's standardized variants of those letters use only these
    category = unicodedata.category(before)
    if category.startswith("L"):
        return before == "\u2139"  # ℹ️, the one emoji that is a letter
    return category not in {"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Co", "Cn"}


def hidden_characters(text: str, *, line: bool = False) -> list[re.Match[str]]:
    """The matches of each character of ``text`` to mark (:data:`HIDDEN_CONTROLS`; with
    ``line``, control characters too: a sender or recipient is one line)."""
    found = [m for m in HIDDEN_CONTROLS.finditer(text) if not m.group("flag") and not (
        m.group("selector") and _varies(m.group(), text[m.start() - 1:m.start()]))]
    if line:
        found = sorted([*found, *LINE_CONTROLS.finditer(text)], key=lambda m: m.start())
    return found


def _mark(char: str) -> str:
    return f"U+{ord(char):04X}"


def _pieces(text: str, line: bool) -> Iterator[tuple[str, str | None]]:
    """``text`` as (plain text, the hidden character after it) pairs, the last with None:
    what :func:`show_controls` and :func:`controls_as_text` each write in their way."""
    last = 0
    for found in hidden_characters(text, line=line):
        yield text[last:found.start()], found.group()
        last = found.end()
    yield text[last:], None


@bp.app_template_filter("show_controls")
def show_controls(text: str, line: bool = False) -> Markup:
    """Escape an SMS text for HTML, with each of :func:`hidden_characters` shown as a
    marked ``[U+202E]`` (its name on hover) instead of acting."""
    out = []
    for plain, char in _pieces(text, line):
        out.append(escape(plain))
        if char is not None:
            # dir="ltr": the mark reads "[U+202E]" inside right-to-left text too, and a
            # block with dir="auto" skips it when finding the text's direction (its "U" is
            # a Latin letter, which made a Hebrew message starting with one left-to-right).
            out.append(Markup('<span class="ctl" dir="ltr" title="{}">[{}]</span>').format(
                unicodedata.name(char, "control character").lower(), _mark(char)))
    return Markup("").join(out)


@bp.app_template_filter("controls_as_text")
def controls_as_text(text: str, line: bool = False) -> str:
    """``text`` with each of :func:`hidden_characters` written as ``[U+202E]``: plain text
    for an attribute (a ``title``), where a mark cannot be coloured but must not act."""
    return "".join(plain + (f"[{_mark(char)}]" if char is not None else "")
                   for plain, char in _pieces(text, line))


@bp.app_template_filter("num")
def format_num(value: float | None, digits: int = 3) -> str:
    """Format a score with ``digits`` decimals."""
    return "–" if value is None else f"{value:.{digits}f}"
