"""Campaigns: groups of near-identical messages, found from frozen-backbone embeddings.

Two messages belong together when the cosine similarity of their embeddings is at least
:data:`DEFAULT_SIMILARITY` (0.92), or when their normalised texts are equal; a campaign is
a connected group of at least :data:`DEFAULT_MIN_SIZE` messages. Embeddings come from the
active model's encoder, whose on-disk cache means each distinct text is embedded once; the
cosine is taken on the last layer's mean part of them, whatever else the head reads
(:func:`spamguard.ml.embeddings.last_layer_mean`), which is what 0.92 was chosen on.

A message with no word or number in it (only emoji or punctuation: "😂", "??", "❤️") joins no
campaign. Its normalised text is empty, and the backbone's tokenizer reads every emoji as
the same unknown token, so "😂" from one person and "❤️" from another would otherwise make
a campaign of unrelated messages, and labelling it would relabel them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, selectinload

from spamguard.errors import SpamguardError
from spamguard.ml.data import WORDLESS_HASH
from spamguard.models import Campaign, Message, Review
from spamguard.services import reviews
from spamguard.sqltypes import utcnow

DEFAULT_SIMILARITY = 0.92
DEFAULT_MIN_SIZE = 3
DEFAULT_DAYS = 30
ENCODE_CHUNK = 2000  # texts per encoder call (bounded memory, one cache shard each)
BLOCK = 1024  # rows per similarity block
REBUILD_LOCK_KEY = 0x5347_4341  # PostgreSQL advisory lock id of a rebuild ("SGCA")
Encoder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class RebuildResult:
    """What a rebuild looked at and found."""

    messages: int
    distinct_texts: int
    campaigns: int
    grouped_messages: int


def group_vectors(vectors: np.ndarray, *, similarity: float = DEFAULT_SIMILARITY) -> np.ndarray:
    """Return a component id per row: rows linked by cosine similarity >= ``similarity``.

    Rows are taken a block at a time against every earlier row. Earlier rows already carry
    their component's label, so a block's links collapse to (row, component) pairs: memory
    stays about a block times the row count, even when one campaign holds most rows (storing
    every similar pair would grow with the square of the campaign's size).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    unit = np.asarray(vectors, dtype=np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    label = np.arange(n)  # rows before the block: the smallest row of their component
    for start in range(0, n, BLOCK):
        end = min(start + BLOCK, n)
        hits = unit[start:end] @ unit[:end].T >= similarity
        # Within the block, pairs (i, j) with j < i; earlier rows, by component.
        rows, cols = np.nonzero(np.tril(hits[:, start:end], k=-1))
        pairs = [(rows + start, cols + start)]
        if start:
            order = np.argsort(label[:start], kind="stable")
            sorted_labels = label[:start][order]
            first = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
            touched = (hits[:, :start] if len(first) == start  # no groups yet: as it is
                       else np.logical_or.reduceat(hits[:, order], first, axis=1))
            rows, groups = np.nonzero(touched)
            pairs.append((rows + start, sorted_labels[first[groups]]))
        a = np.concatenate([p[0] for p in pairs])
        b = np.concatenate([p[1] for p in pairs])
        nodes = np.unique(np.concatenate([np.arange(start, end), b]))
        ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
        graph = coo_matrix((np.ones(len(ia), dtype=np.int8), (ia, ib)),
                           shape=(len(nodes), len(nodes)))
        _, component = connected_components(graph, directed=False)
        smallest = np.full(component.max() + 1, n)
        np.minimum.at(smallest, component, nodes)
        remap = np.arange(n)
        remap[nodes] = smallest[component]
        label[:end] = remap[label[:end]]
    return np.unique(label, return_inverse=True)[1]


def _encode(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Embed ``texts`` in chunks."""
    parts = [encoder(texts[i:i + ENCODE_CHUNK]) for i in range(0, len(texts), ENCODE_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


def _groups(rows: list, encoder: Encoder, similarity: float) -> list[list]:
    """Group message rows by text hash, then link the distinct texts by embedding."""
    by_hash: dict[str, list] = {}
    for row in rows:
        if row.text_hash != WORDLESS_HASH:
            by_hash.setdefault(row.text_hash, []).append(row)
    hashes = list(by_hash)
    component = group_vectors(_encode(encoder, [by_hash[h][0].body for h in hashes]),
                              similarity=similarity)
    groups: dict[int, list] = {}
    for h, comp in zip(hashes, component, strict=True):
        groups.setdefault(int(comp), []).extend(by_hash[h])
    return list(groups.values())


def rebuild_campaigns(*, session: Session, encoder: Encoder,
                      similarity: float = DEFAULT_SIMILARITY, min_size: int = DEFAULT_MIN_SIZE,
                      days: int | None = DEFAULT_DAYS, now: datetime | None = None
                      ) -> RebuildResult:
    """Replace all campaigns by those found among the messages of the last ``days`` days.

    A label a moderator gave an old campaign carries over to the new campaign holding its
    messages when all of them agree and every member's current review says the same (a
    campaign with new, unreviewed members shows no label). Flushes; the caller commits.
    """
    wait_for_rebuilds(session)
    query = select(Message.id, Message.body, Message.text_hash, Message.received_at,
                   Message.campaign_id, Message.review_label)
    if days:
        query = query.where(Message.received_at >= (now or utcnow()) - timedelta(days=days))
    rows = list(session.execute(query))
    old_labels = dict(session.execute(select(Campaign.id, Campaign.label)).all())
    groups = [g for g in _groups(rows, encoder, similarity) if len(g) >= min_size]
    session.execute(update(Message).where(Message.campaign_id.is_not(None))
                    .values(campaign_id=None).execution_options(synchronize_session=False))
    groups = _still_stored(session, groups, min_size)
    session.execute(update(Campaign).values(representative_message_id=None))
    session.execute(delete(Campaign))
    for members in groups:
        _store(session, members, old_labels)
    session.expire_all()
    distinct = len({row.text_hash for row in rows})
    return RebuildResult(len(rows), distinct, len(groups), sum(len(g) for g in groups))


def _still_stored(session: Session, groups: list[list], min_size: int) -> list[list]:
    """SQLite: ``groups`` without the messages deleted since they were read (a purge batch
    may commit while the texts are embedded, as the read took no lock); the write above
    holds SQLite's write lock now, so none goes after this. PostgreSQL: as they are (a
    deletion takes :func:`wait_for_rebuilds`' lock)."""
    if session.get_bind().dialect.name != "sqlite":
        return groups
    ids = sorted(m.id for members in groups for m in members)
    stored: set[int] = set()
    for start in range(0, len(ids), 5000):
        stored.update(session.scalars(select(Message.id).where(
            Message.id.in_(ids[start:start + 5000]))))
    kept = [[m for m in members if m.id in stored] for members in groups]
    return [members for members in kept if len(members) >= min_size]


def wait_for_rebuilds(session: Session) -> None:
    """PostgreSQL: make a concurrent rebuild wait until this one commits, then read afresh
    (also taken by anything else that rewrites campaigns, e.g. deleting messages).

    Two rebuilds that both read before either writes would each insert every campaign
    (duplicates, half of them empty). A transaction-scoped advisory lock blocks only other
    rebuilds, not message intake or reviews. SQLite needs nothing: its writers take turns,
    and a rebuild's delete-all and insert-all are one write transaction.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REBUILD_LOCK_KEY})


def _store(session: Session, members: list, old_labels: dict[int, str | None]) -> Campaign:
    """Insert one campaign and point its messages at it."""
    members = sorted(members, key=lambda r: (r.received_at, r.id))
    labels = {old_labels.get(m.campaign_id) for m in members if m.campaign_id is not None}
    label = labels.pop() if len(labels) == 1 else None
    if any(m.review_label != label for m in members):
        label = None  # new or relabelled members: the campaign needs a moderator's look again
    campaign = Campaign(first_seen=members[0].received_at, last_seen=members[-1].received_at,
                        size=len(members), representative_message_id=members[0].id,
                        label=label)
    session.add(campaign)
    session.flush()
    ids = [m.id for m in members]
    for start in range(0, len(ids), 5000):
        session.execute(update(Message).where(Message.id.in_(ids[start:start + 5000]))
                        .values(campaign_id=campaign.id)
                        .execution_options(synchronize_session=False))
    return campaign


def list_campaigns(session: Session, *, order: str = "size", limit: int = 50,
                   offset: int = 0) -> list[Campaign]:
    """Return campaigns by size (largest first) or recency (latest message first)."""
    keys = {"size": (Campaign.size.desc(), Campaign.last_seen.desc()),
            "recent": (Campaign.last_seen.desc(), Campaign.size.desc())}
    if order not in keys:
        raise SpamguardError("order must be size or recent")
    query = (select(Campaign).options(selectinload(Campaign.representative))
             .order_by(*keys[order], Campaign.id).limit(limit).offset(offset))
    return list(session.scalars(query))


def count_campaigns(session: Session) -> int:
    """Count campaigns."""
    return session.scalar(select(func.count()).select_from(Campaign)) or 0


def latest_reviews(session: Session, campaign_ids: Sequence[int]) -> dict[int, int]:
    """The id of the latest review of any message of each campaign (campaigns whose
    messages were never reviewed are left out): what a campaign's label form shows."""
    if not campaign_ids:
        return {}
    query = (select(Message.campaign_id, func.max(Review.id))
             .join(Review, Review.message_id == Message.id)
             .where(Message.campaign_id.in_(list(campaign_ids)))
             .group_by(Message.campaign_id))
    return {campaign_id: review_id for campaign_id, review_id in session.execute(query)}


@dataclass
class CampaignLabels:
    """How a campaign's messages stand: the model's verdicts and moderators' labels."""

    model: dict[str, int] = field(default_factory=dict)  # spam / ham / pending
    reviewed: dict[str, int] = field(default_factory=dict)  # spam / ham
    unreviewed: int = 0


def label_counts(session: Session, campaign_ids: Sequence[int]) -> dict[int, CampaignLabels]:
    """Count each campaign's messages by model verdict and by moderator label (one grouped
    read over ``ix_messages_campaign_id`` for a page of campaigns), so a moderator sees
    whether a group is already handled, or is one the model calls ham, before labelling
    it all at once."""
    out = {campaign_id: CampaignLabels() for campaign_id in campaign_ids}
    if not campaign_ids:
        return out
    query = (select(Message.campaign_id, Message.model_label, Message.review_label, func.count())
             .where(Message.campaign_id.in_(list(campaign_ids)))
             .group_by(Message.campaign_id, Message.model_label, Message.review_label))
    for campaign_id, model_label, review_label, n in session.execute(query):
        labels = out[campaign_id]
        model = model_label or "pending"
        labels.model[model] = labels.model.get(model, 0) + n
        if review_label is None:
            labels.unreviewed += n
        else:
            labels.reviewed[review_label] = labels.reviewed.get(review_label, 0) + n
    return out


def label_campaign(*, session: Session, campaign_id: int, label: str, user_id: int | None,
                   note: str | None = None,
                   seen: tuple[int, int | None, int | None] | None = None) -> int:
    """Label every message of a campaign with one decision; return how many.

    ``seen`` is the (size, representative message id, latest review id of its messages)
    the moderator was shown. A rebuild replaces every campaign and may reuse ids, so a page
    loaded before it could otherwise label a different group under the same id; and a
    label given to any of its messages since (another moderator's "All spam", or one
    message from the queue) would be silently replaced. Either mismatch is refused.
    """
    # SQLite: take the write lock first, so nothing is committed between the checks below
    # and the relabel (it ignores FOR UPDATE, and reads take no lock).
    session.execute(update(Campaign).where(Campaign.id == campaign_id)
                    .values(size=Campaign.size).execution_options(synchronize_session=False))
    # FOR NO KEY UPDATE: a rebuild (DELETE) still waits for us, but a queue decision's
    # foreign-key check (FOR KEY SHARE) does not, so it cannot deadlock with bulk_relabel.
    campaign = session.scalars(select(Campaign).where(Campaign.id == campaign_id)
                               .with_for_update(key_share=True)
                               .execution_options(populate_existing=True)).first()
    if campaign is None:
        raise SpamguardError(f"no campaign {campaign_id} (campaigns were rebuilt): reload "
                             "the page")
    if seen is not None and seen[:2] != (campaign.size, campaign.representative_message_id):
        raise SpamguardError(f"campaign {campaign_id} changed since the page was loaded "
                             f"(campaigns were rebuilt; it now holds {campaign.size} "
                             "messages): nothing was labelled; reload the page and check it")
    # Lock the members (id order, as bulk_relabel) before reading their latest review: a
    # decision in progress on one of them is then either seen here or refused as stale.
    session.execute(select(Message.id).where(Message.campaign_id == campaign_id)
                    .order_by(Message.id).with_for_update(key_share=True))
    if seen is not None and seen[2] != latest_reviews(session, [campaign_id]).get(campaign_id):
        raise SpamguardError(f"messages of campaign {campaign_id} were labelled since the "
                             "page was loaded (by another moderator, or in another tab): "
                             "nothing was labelled; reload the page and check them")
    ids = select(Message.id).where(Message.campaign_id == campaign_id)
    count = reviews.bulk_relabel(session=session, ids=ids, label=label, user_id=user_id,
                                 note=note or f"campaign {campaign_id}")
    campaign = session.get(Campaign, campaign_id)
    campaign.label = label
    session.flush()
    return count


def active_encoder(*, session: Session, settings) -> Encoder:
    """Load the active model's cached encoder (raises when no model is active)."""
    from spamguard.ml.classifier import SpamClassifier
    from spamguard.ml.embeddings import last_layer_mean
    from spamguard.services import registry

    version = registry.active_version(session)
    if version is None:
        raise SpamguardError("no active model version: run `spamguard train` first")
    classifier = SpamClassifier.load(version.directory, cache_root=settings.cache_dir)
    encoder = classifier.encoder
    return lambda texts: last_layer_mean(encoder(texts, progress=False), encoder.pooling,
                                         encoder.backbone.hidden_size)
