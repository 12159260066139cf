"""Taking erased texts out of model versions' ``changes.md`` / ``changes.json``.

A retraining run writes, beside each candidate, the evaluation messages whose label
changed, with their texts (:mod:`spamguard.services.model_diff`). Those texts come from the
evaluation set: the shipped data set's, or reviewed messages a moderator added. Once a
message is deleted (``spamguard messages purge`` / ``erase``) and no stored message has its
text any longer, its copies there are replaced by :data:`ERASED` (``"erased": true`` in
the JSON), so the trail of what a model learnt does not outlive the message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.ml.data import text_hash
from spamguard.models import EvalExample, Message, ModelVersion
from spamguard.services import model_diff

ERASED = "[erased]"
IN_CHUNK = 1000  # values in one IN (...) list


def unused_hashes(session: Session, hashes: set[str]) -> set[str]:
    """The text hashes in ``hashes`` that no stored message has."""
    used: set[str] = set()
    for chunk in chunks(sorted(hashes)):
        used.update(session.scalars(select(Message.text_hash).distinct()
                                    .where(Message.text_hash.in_(chunk))))
    return hashes - used


def example_hashes(session: Session,
                   versions: Collection[str] | None = None) -> dict[str, set[str]]:
    """The text hashes of the example messages in each model version's ``changes.json``
    (a few dozen a version), by version id; of ``versions`` only, when given."""
    found: dict[str, set[str]] = {}
    query = select(ModelVersion).order_by(ModelVersion.id)
    if versions is not None:
        query = query.where(ModelVersion.id.in_(list(versions)))
    for version in session.scalars(query):
        changes = model_diff.load_changes(version.path)
        hashes = {text_hash(e["text"]) for e in examples(changes) if not e.get("erased")}
        if hashes:
            found[version.id] = hashes
    return found


def redact_orphan_examples(session: Session,
                           versions: Collection[str] | None = None) -> list[str]:
    """Redact every version's (or ``versions``') example texts that neither a stored
    message nor the shipped data's evaluation examples hold (an example comes from the
    evaluation set: from the shipped data, or from a reviewed message, which only a
    deletion takes away); return the versions rewritten. Reads each version's few
    examples, not the messages table.

    Each deletion sweeps every version when it ends; a retraining run sweeps its own
    candidate as it registers it, for messages erased while it trained."""
    by_version = example_hashes(session, versions)
    wanted = sorted(set().union(*by_version.values()))
    kept: set[str] = set()
    for chunk in chunks(wanted):
        kept.update(session.scalars(select(EvalExample.text_hash).where(
            EvalExample.source == "base", EvalExample.text_hash.in_(chunk))))
    orphans = unused_hashes(session, set(wanted) - kept)
    hit = [v for v, hashes in by_version.items() if hashes & orphans]
    return redact_examples(session, hit, orphans) if hit else []


def redact_examples(session: Session, version_ids: Iterable[str], hashes: set[str]) -> list[str]:
    """Replace by :data:`ERASED` the example texts with a hash in ``hashes`` in those
    versions' ``changes.json`` (marked ``"erased": true``) and ``changes.md``; return the
    versions rewritten."""
    rewritten = []
    for version_id in sorted(version_ids):
        version = session.get(ModelVersion, version_id)
        changes = model_diff.load_changes(version.path) if version else None
        hit = [e for e in examples(changes)
               if not e.get("erased") and text_hash(e["text"]) in hashes]
        if not hit:
            continue
        for example in hit:
            example.update(text=ERASED, erased=True)
        model_diff.write_changes(Path(version.path), changes)
        rewritten.append(version_id)
    return rewritten


def examples(changes: dict | None) -> list[dict]:
    """The example messages (with a text) of a version's ``changes.json``."""
    flipped = (changes or {}).get("flips") or {}
    return [example for name, _, _ in model_diff.FLIP_KINDS
            for example in (flipped.get(name) or {}).get("examples", [])
            if isinstance(example.get("text"), str)]


def chunks(values: Sequence, size: int = IN_CHUNK) -> Iterable[Sequence]:
    """``values`` in slices of ``size`` (one SQL ``IN (...)`` list each)."""
    for start in range(0, len(values), size):
        yield values[start:start + size]
