"""The dashboard: volume, spam share, verdicts, reviews, backlog, disagreement, model."""

from __future__ import annotations

from flask import Response, abort, redirect, render_template, request, url_for

from spamguard.admin.base import bp, session
from spamguard.services import dashboard, promotion_hold
from spamguard.sqltypes import utcnow


def _bucket() -> str:
    bucket = request.args.get("bucket", "day")
    if bucket not in dashboard.BUCKETS:
        abort(400, description=f"bucket must be one of {', '.join(dashboard.BUCKETS)}")
    return bucket


@bp.route("/")
def index():
    """Send the bare /admin/ to the dashboard."""
    return redirect(url_for("admin.dashboard"))


@bp.route("/dashboard", endpoint="dashboard")
def dashboard_page():
    """Show the dashboard."""
    bucket = _bucket()
    db, now = session(), utcnow()
    points = dashboard.volume(db, bucket=bucket, now=now)
    latest = dashboard.latest(points, bucket=bucket, now=now) if points else []
    # A hold nobody released keeps every retrained model out of service, and a held run
    # exits 0 (cron says nothing): the page everyone opens says so too, not only Models.
    return render_template("admin/dashboard.html", summary=dashboard.summary(db, now=now),
                           points=latest, bucket=bucket, buckets=list(dashboard.BUCKETS),
                           hold=promotion_hold.current(db))


@bp.route("/dashboard/volume.svg")
def dashboard_chart():
    """Render the volume chart as SVG."""
    bucket = _bucket()
    svg = dashboard.volume_svg(dashboard.volume(session(), bucket=bucket), bucket=bucket)
    return Response(svg, mimetype="image/svg+xml")

