"""The review queue: the most uncertain unreviewed message first, decided with one key.

The message shown to a moderator is claimed for them for a while, so that moderators
working the queue together are shown different messages (services.queue_claims)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask import session as cookie
from flask_login import current_user

from spamguard.admin.base import (
    bp,
    controls_as_text,
    fail,
    role_required,
    session,
    settings,
    user_id,
)
from spamguard.errors import SpamguardError
from spamguard.models import Review
from spamguard.services import message_queries, queue_claims, registry, reviews
from spamguard.sqltypes import parse_id, utcnow

MAX_SKIPPED = 300  # remembered per login session, so the signed cookie stays small
MAX_DECISIONS = 20  # queue decisions that "u" can take back, newest last
UPCOMING = 10


def _threshold() -> float:
    """The active model's threshold (0.5 when none is active)."""
    active = registry.active_version(session())
    return active.threshold if active else 0.5


def _decisions() -> list[list[int]]:
    """This login session's queue decisions, oldest first, as [review id, message id].

    Undo takes back only these, so a relabel made elsewhere (message list, detail page,
    campaigns) is never undone by the queue's "u"."""
    return [list(item) for item in cookie.get("queue_decisions", [])]


def _undoable(db, decision: list[int]) -> Review | None:
    """The review of a remembered queue decision if it is still the message's current one."""
    review_id, message_id = decision
    review = db.get(Review, review_id)
    if review is None or not review.is_current or review.message_id != message_id \
            or review.user_id != user_id():
        return None
    return review


@bp.route("/queue")
def queue():
    """Show the next message to review, claimed for this moderator, and the ones after it."""
    db = session()
    threshold = _threshold()
    skipped = cookie.get("queue_skip", [])
    now = utcnow()
    reviewer = user_id() if current_user.can("moderator") else None  # viewers claim nothing
    focus = cookie.pop("queue_focus", None)  # just undone: show it again first
    said, refused = said_line("queue")  # what the last decision did, for the status line
    shown = queue_claims.next_for(db, user_id=reviewer, now=now, limit=UPCOMING + 1,
                                  seconds=settings().queue_claim_seconds, exclude_ids=skipped,
                                  first=[focus] if focus is not None else [])
    holder = None if shown.current is None or reviewer is not None \
        else queue_claims.holder(db, shown.current.id, now)
    decisions = _decisions()
    last = _undoable(db, decisions[-1]) if decisions else None
    # The queue shows only unreviewed messages, so its decision form always says "seen no
    # review" (reviews.Seen(None)); queue_decide refuses the decision if one exists by then.
    # Reading the latest review id in a second query instead could pick up a review saved
    # after the queue was read, and the form would then let this decision overwrite it.
    return render_template("admin/queue.html", current=shown.current,
                           upcoming=shown.upcoming, threshold=threshold, skipped=len(skipped),
                           backlog=message_queries.queue_size(db), last=last,
                           can_undo=bool(decisions), holder=holder, said=said,
                           said_refused=refused,
                           held_elsewhere=queue_claims.held_by_others(db, user_id=reviewer,
                                                                      now=now))


@bp.route("/queue/decide", methods=["POST"])
@role_required("moderator")
def queue_decide():
    """Record the decision on one message and move on, unless someone else reviewed it
    since the page was shown (then say so and show the next message)."""
    db = session()
    label = request.form.get("label", "")
    try:
        message_id = parse_id(request.form.get("message_id", ""))
        review = reviews.add_review(session=db, message_id=message_id, label=label,
                                    user_id=user_id(), note=request.form.get("note"),
                                    seen=reviews.Seen.parse(request.form.get("seen")))
    except reviews.ReviewConflict as exc:
        say_conflict("queue", exc, label, request.form.get("note"))
        db.rollback()
        return redirect(url_for("admin.queue"))
    except (ValueError, SpamguardError) as exc:
        db.rollback()
        return fail(f"Not recorded: {exc}", "admin.queue")
    db.commit()
    cookie["queue_decisions"] = [*_decisions(), [review.id, message_id]][-MAX_DECISIONS:]
    # Said by the next page's status line (read out by screen readers, see queue.html).
    say("queue", f"Marked message {message_id} as {review.label}.")
    return redirect(url_for("admin.queue"))


def say(page: str, text: str, refused: bool = False) -> None:
    """What the last decision, skip or undo did, for the status line of the next ``page``
    ("queue", "spot_check"; see :func:`said_line`); ``refused``: it was not saved."""
    cookie[f"{page}_said"] = [text, refused]


def said_line(page: str) -> tuple[str, bool]:
    """The status line :func:`say` left for ``page``, once (a reload says nothing), and
    whether it says a decision was refused; ("", False) when there is none. Its page then
    puts the focus on the next message (review_card), not the top of the page."""
    said = cookie.pop(f"{page}_said", None)
    if isinstance(said, str):  # a login from before: the text alone
        return said, False
    return (str(said[0]), bool(said[1])) if said else ("", False)


def say_conflict(page: str, exc: reviews.ReviewConflict, label: str, note: str | None) -> None:
    """:func:`flash_conflict`, on ``page``'s status line (call before the rollback)."""
    say(page, conflict_message(exc, label, note), refused=not exc.agrees_with(label))


def flash_conflict(exc: reviews.ReviewConflict, label: str, note: str | None) -> None:
    """Say who decided the message first (call before the rollback expires the review): as
    information when they gave the same label, else as an error."""
    flash(conflict_message(exc, label, note),
          "info" if exc.agrees_with(label) else "error")


QUOTED_NOTE = 300  # characters of an unsaved note said back (flashes ride in the cookie)


def conflict_message(exc: reviews.ReviewConflict, label: str, note: str | None) -> str:
    """Say who decided the message first (read before the rollback expires the review),
    and, whatever they decided, that a note given was not saved, quoted so it can be
    copied rather than typed again."""
    return f"{_conflict_said(exc, label)}{unsaved_note(note)}"


def unsaved_note(note: str | None) -> str:
    note = (note or "").strip()
    if not note:
        return ""
    quoted = note if len(note) <= QUOTED_NOTE else note[:QUOTED_NOTE - 1] + "…"
    return f" Your note was not saved: “{controls_as_text(quoted)}”."


def _conflict_said(exc: reviews.ReviewConflict, label: str) -> str:
    theirs = exc.review
    if exc.agrees_with(label):  # so theirs is not None
        who = "you" if theirs.user_id == user_id() else \
            theirs.user.username if theirs.user is not None else "someone"
        return f"Message {exc.message_id} is already labelled {label} by {who} — nothing to do."
    if theirs is None:
        return (f"Message {exc.message_id} changed while you were looking (a decision on it "
                f"was undone); your label was not saved.")
    if theirs.user_id == user_id():
        return (f"You had already labelled message {exc.message_id} {theirs.label} (in "
                f"another tab or window); this {label} label was not saved.")
    who = theirs.user.username if theirs.user is not None else "Someone"
    if exc.went_back:
        return (f"Message {exc.message_id} changed while you were looking: the decision "
                f"shown was undone, and its label is {who}'s earlier {theirs.label} again; "
                f"your {label} label was not saved.")
    return (f"{who} labelled message {exc.message_id} {theirs.label} while you were "
            f"looking; your {label} label was not saved.")


@bp.route("/queue/skip", methods=["POST"])
@role_required("moderator")
def queue_skip():
    """Put a message aside for this login session."""
    try:
        message_id = parse_id(request.form.get("message_id", ""))
    except ValueError:
        return fail("Nothing to skip.", "admin.queue")
    skipped = [i for i in cookie.get("queue_skip", []) if i != message_id]
    cookie["queue_skip"] = [*skipped, message_id][-MAX_SKIPPED:]
    db = session()
    queue_claims.release(db, user_id=user_id(), message_id=message_id)  # others may take it
    db.commit()
    say("queue", f"Skipped message {message_id}.")
    return redirect(url_for("admin.queue"))


@bp.route("/queue/reset-skipped", methods=["POST"])
@role_required("moderator")
def queue_reset_skipped():
    """Bring skipped messages back into the queue."""
    cookie.pop("queue_skip", None)
    return redirect(url_for("admin.queue"))


@bp.route("/queue/undo", methods=["POST"])
@role_required("moderator")
def queue_undo():
    """Take back this user's latest decision in the queue, if it is still current."""
    decisions = _decisions()
    if not decisions:
        return fail("Nothing to undo in the queue.", "admin.queue")
    *older, decision = decisions
    cookie["queue_decisions"] = older  # undone or not undoable: either way it is done with
    db = session()
    review = _undoable(db, decision)
    if review is None:
        return fail(f"Nothing to undo in the queue: message {decision[1]} was relabelled or "
                    f"undone after your decision there.", "admin.queue")
    try:
        message = reviews.undo_review(session=db, review_id=review.id)
    except SpamguardError as exc:  # another decision on that message came first
        db.rollback()
        return fail(f"Could not undo: {exc}.", "admin.queue")
    db.commit()
    cookie["queue_focus"] = message.id
    say("queue", f"Undid your decision on message {message.id}.")
    return redirect(url_for("admin.queue"))
