"""Dashboard numbers (buckets computed in SQL on both backends) and the dashboard page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from spamguard.services import dashboard, reviews

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # a Wednesday; 47 h after the first message


@pytest.fixture
def traffic(add_messages):
    # Monday 09:00 ... : two spam and one ham per hour for three hours, plus a pending one.
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    items = [("spam now", 0.9), ("spam again", 0.8), ("hi", 0.1)] * 3
    ids = add_messages(*items, start=start, step=timedelta(minutes=20))
    ids += add_messages("pending", start=datetime(2026, 11, 25, 7, 10, tzinfo=UTC))
    return ids


def test_volume_by_hour_day_week(db_session, traffic):
    hours = dashboard.volume(db_session, bucket="hour", now=NOW)
    assert [(p.start.hour, p.total, p.spam) for p in hours] == \
        [(9, 3, 2), (10, 3, 2), (11, 3, 2), (7, 1, 0)]
    assert hours[0].start == datetime(2026, 11, 23, 9, tzinfo=UTC)
    days = dashboard.volume(db_session, bucket="day", now=NOW)
    assert [(p.start.day, p.total, p.spam) for p in days] == [(23, 9, 6), (25, 1, 0)]
    weeks = dashboard.volume(db_session, bucket="week", now=NOW)
    assert [(p.start, p.total) for p in weeks] == [(datetime(2026, 11, 23, tzinfo=UTC), 10)]
    assert weeks[0].spam_share == pytest.approx(6 / 9)  # of the classified: pending has none
    assert (hours[3].classified, hours[3].spam_share) == (0, None)
    with pytest.raises(ValueError):
        dashboard.volume(db_session, bucket="month")


def test_summary_counts(db_session, traffic):
    reviews.add_review(session=db_session, message_id=traffic[0], label="spam", user_id=None)
    reviews.add_review(session=db_session, message_id=traffic[2], label="spam", user_id=None)
    db_session.commit()
    s = dashboard.summary(db_session, now=NOW)
    assert s.total == 10 and s.labels == {"spam": 6, "ham": 3, "pending": 1}
    assert (s.reviewed, s.backlog, s.disagreements) == (2, 8, 1)
    assert s.disagreement_rate == pytest.approx(0.5)
    assert s.reviews_total == 2 and s.active is None


def test_the_share_line_breaks_where_no_message_was_classified():
    """Hours 0 and 1 are joined; hour 2 held only pending messages and hours 3-4 nothing,
    so the line stops after hour 1 and starts again at hour 5 (it ran straight across)."""
    import math

    hour = timedelta(hours=1)
    points = [dashboard.Point(NOW, 4, 1, 4), dashboard.Point(NOW + hour, 2, 1, 2),
              dashboard.Point(NOW + 2 * hour, 3, 0, 0), dashboard.Point(NOW + 5 * hour, 5, 5, 5)]
    xs, ys = dashboard._share_line(points, hour)
    assert [y if not math.isnan(y) else None for y in ys] == [25.0, 50.0, None, 100.0]
    assert xs[0] == NOW + 0.4 * hour and xs[3] == NOW + 5.4 * hour


def test_chart_is_svg():
    points = [dashboard.Point(NOW, 10, 3), dashboard.Point(NOW + timedelta(days=1), 5, 0)]
    svg = dashboard.volume_svg(points, bucket="day")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "<svg" in dashboard.volume_svg([], bucket="hour")


def test_dashboard_page(viewer_client, traffic):
    page = viewer_client.get("/admin/dashboard?bucket=hour")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "waiting for review" in text
    assert "/admin/dashboard/volume.svg?bucket=hour" in text
    for label in ("spam", "ham", "pending"):  # each share bar in its label's colour
        assert f'<meter class="share {label}" min="0"' in text
    assert "Active model" in text and "spam F1" in text.replace("Spam F1", "spam F1")
    chart = viewer_client.get("/admin/dashboard/volume.svg?bucket=week")
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
    # Opened by its address, an SVG is a document: no script may run in it (a helper's
    # browser check found it served without a policy).
    assert chart.headers["Content-Security-Policy"].startswith("default-src 'none';")
    assert viewer_client.get("/admin/dashboard?bucket=year").status_code == 400
    assert viewer_client.get("/admin/").status_code == 302


def test_the_dashboard_table_is_the_last_buckets_up_to_now(viewer_client, add_messages,
                                                           monkeypatch):
    """'Latest 12 hours' are the 12 hours ending with the current one, empty ones as 0: it
    listed the last 12 hours that had messages (15 hours, gaps skipped), topped by a message
    dated 20 hours ahead that the chart left out. Such a message is in neither now."""
    import spamguard.admin.dashboard as view

    now = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    monkeypatch.setattr(view, "utcnow", lambda: now)
    for hours_ago in (0, 2, 3, 14, -20):  # -20: dated ahead, as the API allows
        add_messages(("spam now", 0.9), "hi", start=now - timedelta(hours=hours_ago))
    text = viewer_client.get("/admin/dashboard?bucket=hour").get_data(as_text=True)
    assert "Latest 12 hours as a table" in text
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td>", text)
    hour = now.replace(minute=0)
    assert rows == [((hour - timedelta(hours=k)).strftime("%Y-%m-%d %H:%M UTC"),
                     "2" if k in (0, 2, 3) else "0") for k in range(12)]
    assert "–</td></tr>" in text  # an empty hour's share: none, not 0%
    for bucket, first in (("day", ("2026-11-25 00:00 UTC", "6")),
                          ("week", ("2026-11-23 00:00 UTC", "10"))):  # 26th: this week
        text = viewer_client.get(f"/admin/dashboard?bucket={bucket}").get_data(as_text=True)
        rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td>", text)
        assert len(rows) == 12 and rows[0] == first, bucket  # no row of the 26th


def _tick_labels(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


@pytest.mark.parametrize("totals", [[], [1], [3], [2, 4, 1]], ids=["none", "one", "three",
                                                                   "few"])
def test_chart_y_labels_are_whole_message_counts(totals):
    """EngFormatter writes 0.2 as "200m" (milli): a y axis of "200m ... 800m messages" reads
    as millions, and with no messages it shows "-40m" (negative). Counts of messages
    should be whole numbers, k and M only."""
    from datetime import timedelta

    from spamguard.sqltypes import utcnow

    now = utcnow().replace(minute=0, second=0, microsecond=0)
    points = [dashboard.Point(now - timedelta(days=i), n, 0) for i, n in enumerate(totals)]
    labels = _tick_labels(dashboard.volume_svg(points, bucket="day", now=now))
    bad = [t for t in labels if re.fullmatch(r"[−-]?[\d.]+\s?[mµunp]", t) or t.startswith("−")]
    assert bad == [], labels


def test_the_dashboard_says_how_many_senders_rules_label(viewer_client, db_session_factory):
    from spamguard.db import session_scope
    from spamguard.services import sender_rules

    assert "sender rules" not in viewer_client.get("/admin/dashboard").get_data(as_text=True)
    with session_scope(db_session_factory) as session:
        for sender, action in (("MyBank", "allow"), ("+447700900123", "allow"),
                               ("PRIZES", "block")):
            sender_rules.set_rule(session, sender=sender, action=action, note=None, by="a")
    text = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    assert ('2 senders allowed and 1 blocked by <a href="/admin/senders">sender rules</a>: '
            "their messages are counted here with the label the rule gave.") in text
