"""Campaigns by size or recency; one decision labels a whole campaign."""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for

from spamguard.admin.base import (
    bp,
    page_number,
    role_required,
    run_action,
    session,
    start_job,
    user_id,
)
from spamguard.services import campaign_rebuilds, campaigns, retrain_jobs
from spamguard.services.message_queries import page_count
from spamguard.sqltypes import parse_id

PER_PAGE = 50


@bp.route("/campaigns")
def campaign_list():
    """List campaigns, largest or most recent first."""
    order = request.args.get("order", "size")
    if order not in ("size", "recent"):
        abort(400, description="order must be size or recent")
    page = page_number()
    db = session()
    total = campaigns.count_campaigns(db)
    last = page_count(total, PER_PAGE)
    if page > last:  # an old link after a rebuild, or a hand-made URL: "No campaigns yet"
        return redirect(url_for("admin.campaign_list", order=order, page=last))
    items = campaigns.list_campaigns(db, order=order, limit=PER_PAGE,
                                     offset=(page - 1) * PER_PAGE)
    return render_template("admin/campaigns.html", campaigns=items, order=order, page=page,
                           has_next=page * PER_PAGE < total, total=total,
                           similarity=campaigns.DEFAULT_SIMILARITY,
                           reviewed=campaigns.latest_reviews(db, [c.id for c in items]),
                           labels=campaigns.label_counts(db, [c.id for c in items]),
                           rebuilding=retrain_jobs.campaign_rebuild_running(db),
                           last_rebuild=campaign_rebuilds.latest(db))


@bp.route("/campaigns/<integer_id:campaign_id>/label", methods=["POST"])
@role_required("moderator")
def campaign_label(campaign_id: int):
    """Label every message of the campaign."""
    label = request.form.get("label", "")
    try:  # what the moderator was shown; a rebuild or label since is refused (label_campaign)
        representative = request.form.get("representative", "")
        reviewed = request.form["reviewed"]
        seen = (parse_id(request.form["size"]),  # ASCII digits, as ids (int() reads "٢٢")
                parse_id(representative) if representative else None,
                None if reviewed == "none" else parse_id(reviewed))
    except (KeyError, ValueError):
        abort(400, description="the form lacks what the page showed of the campaign (its "
                               "size, representative message and latest review): reload "
                               "the page")
    return run_action(
        lambda db: campaigns.label_campaign(session=db, campaign_id=campaign_id, label=label,
                                            user_id=user_id(), note=request.form.get("note"),
                                            seen=seen),
        done=lambda count: f"Campaign {campaign_id}: {count} messages labelled {label}.",
        endpoint="admin.campaign_list", order=request.form.get("order", "size"))


@bp.route("/campaigns/rebuild", methods=["POST"])
@role_required("moderator")
def campaign_rebuild():
    """Start `spamguard campaigns rebuild` in the background (one at a time: each one
    embeds and compares every recent message)."""
    return start_job(retrain_jobs.start_campaign_rebuild, what="the campaign rebuild",
                     busy="a campaign rebuild is already running",
                     started="Campaign rebuild started in the background (process {pid}); "
                             "this page says when it has finished.",
                     endpoint="admin.campaign_list")
