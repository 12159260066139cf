"""Numbers for the moderators' dashboard: volume and spam share over time, verdicts,
reviews and backlog, model/moderator disagreement, and the active model.

Time buckets are computed in SQL (``strftime`` on SQLite, ``date_trunc`` on PostgreSQL) so a
window of tens of thousands of messages costs one indexed scan, not a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from spamguard.models import Message, ModelVersion, Review, SenderRule
from spamguard.services import message_queries, registry, reviews, spot_checks
from spamguard.services.message_queries import MessageFilter
from spamguard.sqltypes import as_utc, utcnow

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
WINDOWS = {"hour": timedelta(hours=48), "day": timedelta(days=30), "week": timedelta(weeks=26)}
_SQLITE_FORMATS = {"hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}


@dataclass(frozen=True)
class Point:
    """Messages received in one time bucket."""

    start: datetime
    total: int
    spam: int
    classified: int | None = None  # messages with a verdict (the rest are pending)

    @property
    def spam_share(self) -> float | None:
        """Spam among the bucket's classified messages (pending ones have no verdict yet:
        counting them as ham showed an hour of pending messages as 0% spam)."""
        judged = self.total if self.classified is None else self.classified
        return self.spam / judged if judged else None


@dataclass
class Summary:
    """Everything the dashboard shows."""

    total: int = 0
    labels: dict[str, int] = field(default_factory=dict)  # spam / ham / pending
    reviewed: int = 0
    backlog: int = 0
    reviews_total: int = 0
    reviews_recent: int = 0  # in the last 24 hours
    disagreements: int = 0
    active: ModelVersion | None = None
    headline: dict[str, float | None] = field(default_factory=dict)
    spot_checks: list[spot_checks.Estimate] = field(default_factory=list)  # active model's
    spot_checks_undecided: int = 0  # its drawn messages nobody has decided or skipped yet
    sender_rules: dict[str, int] = field(default_factory=dict)  # rules in force by action

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.reviewed if self.reviewed else None


def _bucket_expr(session: Session, bucket: str):
    """SQL expression for the start of ``received_at``'s bucket (as text or timestamp)."""
    column = Message.received_at
    if session.get_bind().dialect.name == "sqlite":
        if bucket == "week":  # Monday of the week: 'weekday 0' is the next Sunday
            return func.strftime("%Y-%m-%d 00:00:00", column, "weekday 0", "-6 days")
        return func.strftime(_SQLITE_FORMATS[bucket], column)
    return func.date_trunc(bucket, func.timezone("UTC", column))


def volume(session: Session, *, bucket: str = "day", now: datetime | None = None
           ) -> list[Point]:
    """Return messages and spam (model label) per bucket over the bucket's default window."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    now = now or utcnow()
    since, until = now - WINDOWS[bucket], bucket_start(now, bucket) + BUCKETS[bucket]
    key = _bucket_expr(session, bucket).label("bucket")
    spam = func.sum(case((Message.model_label == "spam", 1), else_=0))
    # A message dated after the current bucket (the API takes received_at up to 24 hours
    # ahead) is counted nowhere until its bucket comes: the chart ends with the current one.
    query = (select(key, func.count(), spam, func.count(Message.model_label))
             .where(Message.received_at >= since, Message.received_at < until)
             .group_by(key).order_by(key))
    # SQLite's strftime buckets come back as text, PostgreSQL's date_trunc as timestamps.
    return [Point(as_utc(datetime.fromisoformat(start) if isinstance(start, str) else start),
                  int(total), int(spam or 0), int(classified))
            for start, total, spam, classified in session.execute(query)]


def bucket_start(moment: datetime, bucket: str) -> datetime:
    """The start of ``moment``'s bucket, as the SQL of :func:`_bucket_expr` computes it
    (weeks start on Monday)."""
    start = moment.replace(minute=0, second=0, microsecond=0)
    if bucket == "hour":
        return start
    start = start.replace(hour=0)
    return start - timedelta(days=start.weekday()) if bucket == "week" else start


def latest(points: list[Point], *, bucket: str, count: int = 12,
           now: datetime | None = None) -> list[Point]:
    """The last ``count`` buckets up to the current one, newest first, as :func:`volume`
    gave them, with the empty ones as zeros (not the last ``count`` that had messages)."""
    current = bucket_start(now or utcnow(), bucket)
    found = {point.start: point for point in points}
    starts = (current - k * BUCKETS[bucket] for k in range(count))
    return [found.get(start, Point(start, 0, 0, 0)) for start in starts]


def _share_line(points: list[Point], step: timedelta) -> tuple[list, list[float]]:
    """The spam-share line's points, mid-bucket, broken (NaN) across buckets without a
    classified message: a line drawn straight over 18 empty hours suggests data there."""
    xs: list = []
    ys: list[float] = []
    for point in points:
        if point.spam_share is None:
            continue
        if xs and point.start - xs[-1] > step:  # xs[-1] is the previous point's mid
            xs.append(xs[-1] + step / 2)
            ys.append(float("nan"))
        xs.append(point.start + step * 0.4)
        ys.append(100 * point.spam_share)
    return xs, ys


def summary(session: Session, *, now: datetime | None = None) -> Summary:
    """Return the dashboard's counts and the active model's headline metrics."""
    now = now or utcnow()
    out = Summary()
    # Grouped by the column itself, not coalesce(model_label, 'pending'), so the counts are
    # read from ix_messages_model_label alone (75 -> 20 ms at 200,000 messages on SQLite).
    by_label = session.execute(select(Message.model_label, func.count())
                               .group_by(Message.model_label))
    out.labels = {name or "pending": int(n) for name, n in by_label}
    out.total = sum(out.labels.values())
    reviewed = Message.review_label.is_not(None)
    out.reviewed = _count(session, reviewed, Message.model_label.is_not(None))
    out.backlog = message_queries.queue_size(session)
    out.disagreements = message_queries.count_messages(session, MessageFilter(disagreement=True))
    out.reviews_total = reviews.count_reviews(session)
    out.reviews_recent = session.scalar(select(func.count()).select_from(Review).where(
        Review.created_at >= now - timedelta(hours=24))) or 0
    # The small rules table, not the messages a rule labelled (no index to count those by).
    out.sender_rules = dict(session.execute(select(SenderRule.action, func.count())
                                            .group_by(SenderRule.action)).all())
    out.active = registry.active_version(session)
    if out.active is not None:
        out.headline = registry.headline_metrics(out.active)
        out.spot_checks = spot_checks.estimates(session, out.active.id)
        out.spot_checks_undecided = spot_checks.undecided(session, out.active.id)
    return out


def _count(session: Session, *where) -> int:
    return session.scalar(select(func.count()).select_from(Message).where(*where)) or 0


def volume_svg(points: list[Point], *, bucket: str, now: datetime | None = None) -> str:
    """Render messages and spam share per bucket as an SVG chart (matplotlib, no pyplot)."""
    import io

    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, MaxNLocator

    end = (now or utcnow()) + BUCKETS[bucket]
    # Fixed margins: matplotlib's constrained layout measured every label twice, which was
    # 140 of the chart's 250 ms.
    fig = Figure(figsize=(9, 3))
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.14, top=0.86)
    ax = fig.add_subplot()
    width, starts = BUCKETS[bucket] * 0.8, [p.start for p in points]
    ax.bar(starts, [p.total for p in points], width=width, align="edge", color="#9db4cf",
           label="messages")
    ax.bar(starts, [p.spam for p in points], width=width, align="edge", color="#c0392b",
           label="spam")
    ax.set_xlim(end - WINDOWS[bucket] - BUCKETS[bucket], end)  # the whole window, always
    locator = AutoDateLocator()
    ax.xaxis.set(major_locator=locator, major_formatter=ConciseDateFormatter(locator))
    ax.set_ylabel("messages", fontsize=9)
    # Whole messages from 0 up (never "200m", milli, or a negative axis when empty), and
    # 140k rather than 140000, which would not fit the margin.
    ax.yaxis.set_major_locator(MaxNLocator(steps=[1, 2, 2.5, 5, 10], integer=True))
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylim(0, max((p.total for p in points), default=0) * 1.05 or 1)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    share = ax.twinx()
    share.plot(*_share_line(points, BUCKETS[bucket]), color="#222", lw=1.2, marker=".",
               label="spam %")
    share.set_ylim(0, 105)
    share.set_ylabel("spam share (%)", fontsize=9)
    share.tick_params(labelsize=8)
    fig.legend(loc="upper left", bbox_to_anchor=(0.06, 1.0), ncols=3, fontsize=8,
               frameon=False)
    if not points:
        ax.text(0.5, 0.5, "no messages in this window", ha="center", va="center",
                transform=ax.transAxes)
    out = io.StringIO()
    import matplotlib

    # Text as SVG text, not a path per glyph: a third of the size, and faster.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        FigureCanvasSVG(fig).print_svg(out)
    return out.getvalue()
