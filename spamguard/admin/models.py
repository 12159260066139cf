"""Model versions: list, full report, side-by-side comparison, promote, roll back, retrain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import abort, render_template, request, send_from_directory

from spamguard.admin.base import bp, role_required, run_action, session, start_job
from spamguard.models import ModelVersion
from spamguard.services import registry, retrain_jobs

REPORT_IMAGES = ("pr_curve.png", "confusion_matrix.png")  # the only files served


def load_report(version: ModelVersion) -> dict[str, Any] | None:
    """Read the version's ``report.json`` (None when missing or unreadable)."""
    try:
        report = json.loads((Path(version.directory) / "report.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def headline_rows(results: list[dict | None]) -> list[list[str]]:
    """Rows of (metric, one formatted value per result) in the report's own format."""
    from spamguard.ml.report import HEADLINE

    rows = []
    for label, key, fmt in HEADLINE:
        cells = [fmt(r[key]) if r and r.get(key) is not None else "–" for r in results]
        rows.append([label, *cells])
    return rows


MAX_VERSION_ID = 64  # model_versions.id is String(64)


def _no_such_version_unless_storable(version_id: str) -> None:
    """404 for an id no version can have: PostgreSQL refuses a NUL in a text value with an
    error (a 500 for /admin/models/%00, found by an audit)."""
    if "\x00" in version_id or len(version_id) > MAX_VERSION_ID:
        abort(404, description=f"no model version {version_id[:MAX_VERSION_ID]!r}")


def _version(version_id: str) -> ModelVersion:
    _no_such_version_unless_storable(version_id)
    version = session().get(ModelVersion, version_id)
    if version is None:
        abort(404, description=f"no model version {version_id}")
    return version


@bp.route("/models")
def model_list():
    """List every version with its status and headline metrics, and recent training runs."""
    db = session()
    versions = registry.list_versions(db)
    runs = retrain_jobs.recent_runs(db)
    statuses = retrain_jobs.shown_statuses(db, runs)
    return render_template("admin/models.html", versions=versions, runs=runs,
                           statuses=statuses, stopped=retrain_jobs.STOPPED,
                           # "Roll back" with nothing to go back to (or to a deleted
                           # version) only errs after a dialog
                           can_roll_back=registry.rollback_target(db) is not None,
                           # or a run just started, before it has written its row
                           running=retrain_jobs.any_running(statuses)
                           or retrain_jobs.retrain_running(db) is not None,
                           headline=registry.headline_metrics)


@bp.route("/models/<version_id>")
def model_detail(version_id: str):
    """Show a version's full classification report beside the TF-IDF baseline."""
    version = _version(version_id)
    report = load_report(version)
    columns = report_columns(report) if report else []
    return render_template("admin/model.html", version=version, report=report,
                           columns=columns,
                           rows=headline_rows([r for _, r in columns]) if report else [],
                           images=[n for n in REPORT_IMAGES if (version.path / n).is_file()])


def report_columns(report: dict) -> list[tuple[str, dict]]:
    """(name, result) of the model, its parts on their own (the BERT head alone of a
    blended model) and the baseline, as far as the report has them."""
    from spamguard.ml.report import named_results

    columns = named_results(report.get("model"), report.get("baseline"),
                            report.get("components"), baseline_name="TF-IDF + SVM baseline")
    return [(name, result) for name, result in columns if isinstance(result, dict)]


@bp.route("/models/<version_id>/files/<name>")
def model_file(version_id: str, name: str):
    """Serve one of the version's report images (no other file of the folder)."""
    if name not in REPORT_IMAGES:
        abort(404)
    return send_from_directory(_version(version_id).path, name, mimetype="image/png")


@bp.route("/models/compare")
def model_compare():
    """Compare two versions side by side."""
    names = [request.args.get(key, "").strip() for key in ("a", "b")]
    if not all(names):
        abort(400, description="compare needs two versions: /admin/models/compare?a=VERSION"
                               "&b=VERSION")
    if names[0] == names[1]:  # every row would be equal to itself
        abort(400, description=f"compare needs two different versions; both are {names[0]}")
    a, b = (_version(name) for name in names)
    reports = [load_report(a), load_report(b)]
    rows = headline_rows([(r or {}).get("model") for r in reports])
    return render_template("admin/compare.html", versions=[a, b], rows=rows, reports=reports,
                           images=REPORT_IMAGES)


@bp.route("/models/<version_id>/promote", methods=["POST"])
@role_required("admin")
def model_promote(version_id: str):
    """Make this version the active one (a stale page's button for the version already
    active changes nothing, and says so)."""
    _no_such_version_unless_storable(version_id)

    def promote(db) -> tuple[ModelVersion, bool]:
        before = registry.active_version(db)
        version = registry.promote(session=db, version_id=version_id)
        return version, before is not None and before.id == version.id

    def done(result: tuple[ModelVersion, bool]) -> str:
        version, already = result
        return (f"Version {version.id} was already active; nothing changed." if already
                else f"Version {version.id} is now active.")

    return run_action(promote, done=done, endpoint="admin.model_list")


@bp.route("/models/rollback", methods=["POST"])
@role_required("admin")
def model_rollback():
    """Re-activate the previously active version."""
    return run_action(lambda db: registry.rollback(session=db),
                      done=lambda v: f"Rolled back: version {v.id} is active again.",
                      endpoint="admin.model_list")


@bp.route("/models/retrain", methods=["POST"])
@role_required("admin")
def model_retrain():
    """Start `spamguard retrain --trigger ui --min-new-reviews 1` in the background."""
    return start_job(retrain_jobs.start_retrain, what="retraining",
                     busy="a retraining is already running",
                     started="Retraining started in the background (process {pid}). This "
                             "page refreshes while it runs.", endpoint="admin.model_list")
