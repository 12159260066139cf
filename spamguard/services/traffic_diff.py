"""What a model version would change on recent traffic: the messages stored in the last days,
scored by the model in service and by another version (a retraining candidate, or any
version an operator thinks of promoting).

The retraining gate decides on a fixed evaluation set, mostly SMS from 2010-2012; what the
service labels is today's traffic. So beside the gate's numbers, ``retrain`` (in
``changes.md`` / ``changes.json``) and ``spamguard models compare`` say how many of the
last days' verdicts a version would change, each way, naming the messages (by id, most
changed first) for a moderator to open. There is no truth to score against here, except
for reviewed messages, which are counted apart: a retraining candidate learnt their
labels, so its agreeing with them says little. Messages a sender rule labelled are left
out (a rule, not the model, labels them, and would go on doing so).

Only ids and counts are kept, never a text: erasing a message leaves nothing to redact.
Embeddings of these texts are read from the embedding cache where there (reviewed texts
were trained on) but never written to it (traffic would grow it every day); two versions
on the same encoder share one embedding pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spamguard.config import TRAFFIC_DAYS, TRAFFIC_LIMIT
from spamguard.models import Message
from spamguard.sqltypes import utcnow

IDS_PER_KIND = 20
KINDS = (("ham_to_spam", "ham", "spam"), ("spam_to_ham", "spam", "ham"))


@dataclass
class Traffic:
    """The newest messages received since ``since`` (at most a limit), sender rules' aside."""

    since: datetime
    days: float
    limit: int
    ids: list[int]
    texts: list[str]
    reviewed: list[str | None]  # the moderator's current label, if any
    left_out_by_rule: int  # messages of the period a sender rule labelled
    in_period: int | None = None  # messages of the period no rule labelled (None: len(ids))
    oldest: datetime | None = None  # when the oldest of ``ids`` was received


def recent_traffic(session: Session, *, days: float = TRAFFIC_DAYS, limit: int = TRAFFIC_LIMIT,
                   now: datetime | None = None) -> Traffic:
    """The newest ``limit`` messages received in the last ``days`` days (by ``received_at``,
    as the admin UI shows them) that no sender rule labelled."""
    since = (now or utcnow()) - timedelta(days=days)
    period = Message.received_at >= since
    rows = session.execute(
        select(Message.id, Message.body, Message.review_label, Message.received_at)
        .where(period, Message.sender_rule.is_(None))
        .order_by(Message.received_at.desc(), Message.id.desc()).limit(limit)).all()
    by_rule = session.scalar(select(func.count()).select_from(Message)
                             .where(period, Message.sender_rule.is_not(None))) or 0
    # When the limit cut the period short, the messages compared span less than ``days``:
    # the report says of how many, and since when, so "since <date>" does not mislead.
    in_period = len(rows) if len(rows) < limit else int(session.scalar(
        select(func.count()).select_from(Message)
        .where(period, Message.sender_rule.is_(None))) or 0)
    rows.reverse()  # oldest first reads more naturally in a list of ids
    return Traffic(since=since, days=days, limit=limit, ids=[r.id for r in rows],
                   texts=[r.body for r in rows], reviewed=[r.review_label for r in rows],
                   left_out_by_rule=int(by_rule), in_period=in_period,
                   oldest=rows[0].received_at if rows else None)


def compare(traffic: Traffic, active: Any, other: Any, *, served: bool = True
            ) -> dict[str, Any]:
    """Score ``traffic`` with both classifiers (``active``: the model in service, or with
    ``served`` False another version it is compared with, ``models compare --against``)
    and say what ``other`` would change; JSON-ready."""
    old_p, new_p = scores([active, other], traffic.texts)
    old = np.array([active.label_for(p) for p in old_p], dtype=object)
    new = np.array([other.label_for(p) for p in new_p], dtype=object)
    reviewed = np.array(traffic.reviewed, dtype=object)
    is_reviewed = reviewed != None  # noqa: E711  (elementwise: an object array of labels)
    result: dict[str, Any] = {
        "since": traffic.since.isoformat(timespec="seconds"), "days": traffic.days,
        "limit": traffic.limit, "messages": len(traffic.ids),
        "in_period": max(traffic.in_period or 0, len(traffic.ids)),
        "oldest": (traffic.oldest.isoformat(timespec="seconds") if traffic.oldest else None),
        "left_out_by_sender_rule": traffic.left_out_by_rule,
        "versions": {"active": active.version, "other": other.version},
        "active_served": served,  # False: "active" is the version given with --against
        "spam": {"active": int((old == "spam").sum()), "other": int((new == "spam").sum())},
        "changed": int((old != new).sum()),
        "reviewed": {"messages": int(is_reviewed.sum()),
                     "active_agrees": int((is_reviewed & (old == reviewed)).sum()),
                     "other_agrees": int((is_reviewed & (new == reviewed)).sum())},
    }
    moved = np.abs(new_p - old_p)
    for name, before, after in KINDS:
        index = np.flatnonzero((old == before) & (new == after))
        ranked = index[np.argsort(-moved[index], kind="stable")]
        result[name] = {"count": int(len(index)),
                        "texts": len({traffic.texts[i] for i in index}),
                        "reviewed_as_after": int((reviewed[index] == after).sum()),
                        "reviewed_as_before": int((reviewed[index] == before).sum()),
                        "message_ids": _one_per_text(ranked, traffic)}
    return result


def _one_per_text(ranked: np.ndarray, traffic: Traffic) -> list[int]:
    """The ids of the first :data:`IDS_PER_KIND` messages of ``ranked`` with a text not
    named yet: a campaign's hundred copies (or every media-only MMS, whose text is empty)
    score alike, and would otherwise fill the list and hide every other change."""
    seen: set[str] = set()
    ids = []
    for i in ranked:
        if traffic.texts[i] not in seen:
            seen.add(traffic.texts[i])
            ids.append(traffic.ids[i])
            if len(ids) == IDS_PER_KIND:
                break
    return ids


def scores(classifiers: Sequence[Any], texts: list[str]) -> list[np.ndarray]:
    """Each classifier's spam probabilities for ``texts``, embedding once per encoder
    (backbone, pooling, length), reading the embedding cache (reviewed texts are in it)
    but never writing it."""
    from spamguard.ml.classifier import build_inputs

    if not texts:
        return [np.zeros(0) for _ in classifiers]
    inputs: dict[tuple, np.ndarray] = {}
    out = []
    for classifier in classifiers:
        encoder = classifier.encoder
        features = tuple(classifier.metadata.get("features", []))
        key = (encoder.backbone.cache_key, encoder.pooling, encoder.max_length, features)
        if key not in inputs:
            inputs[key] = build_inputs(encoder.reading_only(), texts, features)
        out.append(np.asarray(classifier.proba_from_inputs(inputs[key], texts),
                              dtype=np.float64))
    return out


def failed(stage: str, exc: BaseException) -> dict[str, Any]:
    """The ``traffic`` entry of a run whose recent-traffic comparison failed while
    ``stage`` ("reading" the messages, "scoring" them): the exception's type only, since
    its message may quote a message's text, and only ids and counts are written."""
    return {"error": type(exc).__name__, "stage": stage}


def failure_note(stage: str, exc: BaseException) -> str:
    """The run's stderr line for a comparison that failed while ``stage`` (its first
    line may quote a message: stderr, as the service's own logs, may)."""
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"retrain: {stage} recent traffic failed ({type(exc).__name__}"
            f"{': ' + reason if reason else ''}); the report leaves it out")


def counts(diff: dict[str, Any] | None) -> dict[str, Any] | None:
    """The numbers of ``diff`` for ``training_runs.counts`` (no ids)."""
    if not diff:
        return None
    if diff.get("error"):
        return {"error": diff["error"], "stage": diff.get("stage")}
    return {"messages": diff["messages"], "changed": diff["changed"],
            **{name: diff[name]["count"] for name, _, _ in KINDS}}


def summary(diff: dict[str, Any]) -> str:
    """One line: ``on 1,850 recent messages (7 days) 37 verdicts would change: 12 ham to
    spam, 25 spam to ham``."""
    if diff.get("error"):
        return (f"recent traffic not compared: {diff.get('stage', 'comparing')} the messages "
                f"failed ({diff['error']}); the gate does not use it")
    if not diff["messages"]:
        return f"no recent messages since {diff['since'][:10]} to compare on"
    if _cut_short(diff):
        which = (f"the newest {diff['messages']:,} of {diff['in_period']:,} messages since "
                 f"{diff['since'][:10]} (received from {_minute(diff['oldest'])} UTC)")
    else:
        which = f"{diff['messages']:,} recent messages (since {diff['since'][:10]})"
    return (f"on {which} {diff['changed']:,} verdicts would change: "
            f"{diff['ham_to_spam']['count']:,} ham to spam, {diff['spam_to_ham']['count']:,} "
            "spam to ham")


def _cut_short(diff: dict[str, Any]) -> bool:
    """Whether the limit left out older messages of the period (the messages compared
    span less than the days asked)."""
    return bool(diff.get("oldest")) and diff.get("in_period", 0) > diff["messages"]


def _minute(iso: str) -> str:
    return iso[:16].replace("T", " ")


def render_markdown(diff: dict[str, Any]) -> list[str]:
    """Lines of the "Recent traffic" section of ``changes.md``."""
    if diff.get("error"):
        return [f"## Recent traffic: not compared: {diff.get('stage', 'comparing')} the "
                f"messages failed ({diff['error']}); the run's log says why. The gate does "
                "not use it.", ""]
    versions = diff["versions"]
    served = diff.get("active_served", True)
    against = f"{versions['active']} (active)" if served else versions["active"]
    before_said = "the active model" if served else versions["active"]
    lines = [f"## Recent traffic: {summary(diff)}", "",
             f"The newest {diff['messages']:,} messages received since {diff['since']} "
             f"(at most {diff['limit']:,}"
             + (f"; of {diff['in_period']:,} in the period, so only those received from "
                f"{diff['oldest']}" if _cut_short(diff) else "")
             + "), scored by both versions; "
             f"{diff['left_out_by_sender_rule']:,} labelled by a sender rule left out. No "
             "truth here but moderators' labels, and a retraining candidate learnt those.", "",
             f"| | {against} | {versions['other']} |", "|---|---|---|",
             f"| called spam | {diff['spam']['active']:,} | {diff['spam']['other']:,} |",
             f"| agrees with the {diff['reviewed']['messages']:,} reviewed | "
             f"{diff['reviewed']['active_agrees']:,} | {diff['reviewed']['other_agrees']:,} |",
             ""]
    for name, _before, after in KINDS:
        kind = diff[name]
        ids = ", ".join(str(i) for i in kind["message_ids"]) or "none"
        texts = kind.get("texts", kind["count"])
        distinct = (f", {texts:,} distinct text{'' if texts == 1 else 's'}"
                    if texts != kind["count"] else "")
        lines += [f"- {name.replace('_', ' ')}: {kind['count']:,}{distinct} (reviewed as "
                  f"{after}: {kind['reviewed_as_after']:,}; as {before_said} said: "
                  f"{kind['reviewed_as_before']:,}); message ids, most changed first, one "
                  f"per text: {ids}"]
    return [*lines, ""]
