"""Model versions: list, full report, side-by-side comparison, promote, roll back, retrain,
delete, and holding automatic promotion (services.promotion_hold)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from flask import abort, flash, redirect, render_template, request, send_from_directory, url_for
from flask_login import current_user
from sqlalchemy.orm import Session

from spamguard.admin.base import (
    bp,
    fail,
    request_transaction,
    role_required,
    run_action,
    session,
    settings,
    start_job,
)
from spamguard.errors import SpamguardError
from spamguard.models import ModelVersion
from spamguard.services import promotion_hold, registry, retrain_jobs, version_cleanup
from spamguard.wording import megabytes, sentence

REPORT_IMAGES = ("pr_curve.png", "confusion_matrix.png")  # the only files served


def load_report(version: ModelVersion) -> dict[str, Any] | None:
    """Read the version's ``report.json`` (None when missing or unreadable)."""
    try:
        report = json.loads((Path(version.directory) / "report.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


FIGURES = {"pr_curve.png": "Precision-recall curves", "confusion_matrix.png": "Confusion matrices"}


def figure_alt(name: str, columns: list[tuple[str, dict]]) -> str:
    """The text alternative of report image ``name``: what it shows, and the numbers it
    shows where the report has them (a blind reader gets the same as a sighted one). Each
    of ``columns`` (:func:`report_columns`) is a curve, or a matrix, in the image."""
    def num(value: Any, fmt: str) -> str:
        return "–" if not isinstance(value, int | float) else format(value, fmt)

    said = []
    for column, result in columns:
        threshold = num(result.get("threshold"), "g")
        if name == "pr_curve.png":
            said.append(f"{column}: average precision {num(result.get('average_precision'), '.4f')}"
                        f"; at threshold {threshold} spam precision "
                        f"{num(result.get('spam_precision'), '.3f')}, spam recall "
                        f"{num(result.get('spam_recall'), '.3f')}")
            continue
        matrix = (result.get("confusion_matrix") or {}).get("matrix")
        try:
            (tn, fp), (fn, tp) = matrix
        except (TypeError, ValueError):
            said.append(f"{column}: no matrix in the report")
            continue
        said.append(f"{column} at threshold {threshold}: of true ham, {tn} predicted ham and "
                    f"{fp} spam; of true spam, {fn} predicted ham and {tp} spam")
    what = ("Precision-recall curves of spam (precision against recall)"
            if name == "pr_curve.png" else "Confusion matrices")
    return f"{what}. " + ". ".join(said) + "." if said else f"{what} (no report to read)."


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
                           # no Delete for a version that must stay (its page says why)
                           protected=registry.protected_versions(db, ui=True),
                           rejected=registry.rejected_by_retraining(db),
                           eval_size=registry.eval_size,
                           headline=registry.headline_metrics,
                           hold=promotion_hold.current(db),
                           max_reason=promotion_hold.MAX_REASON)


@bp.route("/models/<version_id>")
def model_detail(version_id: str):
    """Show a version's full classification report beside the TF-IDF baseline."""
    version = _version(version_id)
    report = load_report(version)
    columns = report_columns(report) if report else []
    from spamguard.services import model_diff  # scikit-learn, as report_columns needs

    folder = version_cleanup.describe([version], settings().models_dir)[0]
    return render_template("admin/model.html", version=version, report=report,
                           columns=columns, folder=folder,
                           # how retraining made it: the run, and what changed against
                           # the model then active (changes.json, examples included)
                           run=retrain_jobs.run_of_candidate(session(), version.id),
                           changes=model_diff.load_changes(version.path),
                           flip_kinds=[name for name, _, _ in model_diff.FLIP_KINDS],
                           metric_names=(*model_diff.METRICS, "threshold"),
                           protected=registry.protected_versions(session(), ui=True).get(
                               version.id),
                           rows=headline_rows([r for _, r in columns]) if report else [],
                           images=[n for n in REPORT_IMAGES if (version.path / n).is_file()],
                           alts={name: figure_alt(name, columns) for name in REPORT_IMAGES})


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
                           images=REPORT_IMAGES, figures=FIGURES,
                           alts={(version.id, name): figure_alt(name, report_columns(report)
                                                                if report else [])
                                 for version, report in zip((a, b), reports, strict=True)
                                 for name in REPORT_IMAGES})


@bp.route("/models/<version_id>/promote", methods=["POST"])
@role_required("admin")
def model_promote(version_id: str):
    """Make this version the active one (a stale page's button for the version already
    active changes nothing, and says so)."""
    _no_such_version_unless_storable(version_id)

    def promote(db) -> tuple[ModelVersion, bool, str]:
        before = registry.active_version(db)
        version = registry.promote(session=db, version_id=version_id, by=current_user.username)
        return version, before is not None and before.id == version.id, _still_held(db)

    def done(result: tuple[ModelVersion, bool, str]) -> str:
        version, already, held = result
        return (f"Version {version.id} was already active; nothing changed.{held}" if already
                else f"Version {version.id} is now active.{held}")

    return run_action(promote, done=done, endpoint="admin.model_list")


def _still_held(db: Session) -> str:
    """After a promotion by hand (a person's decision, which a hold does not stop): say
    that retraining still will not promote, when automatic promotion is on hold."""
    held = promotion_hold.current(db)
    if held is None:
        return ""
    return (f" Automatic promotion is still {promotion_hold.describe(held)}: retraining will "
            "not replace this version until the hold is released on this page.")


@bp.route("/models/rollback", methods=["POST"])
@role_required("admin")
def model_rollback():
    """Re-activate the previously active version, and put automatic promotion on hold (as
    `spamguard rollback` does), so the next retraining does not undo the rollback."""
    def roll_back(db) -> tuple[ModelVersion, promotion_hold.Change]:
        before = registry.active_version(db)
        version = registry.rollback(session=db, by=current_user.username)
        return version, promotion_hold.hold(
            db, reason=f"rollback from {before.id} to {version.id}", by=current_user.username)

    def done(result: tuple[ModelVersion, promotion_hold.Change]) -> str:
        version, change = result
        said = f"Rolled back: version {version.id} is active again."
        if change.changed:
            return (f"{said} Automatic promotion is now on hold, so retraining will not "
                    "replace it; release the hold on this page when the active model may be "
                    "replaced again.")
        return (f"{said} Automatic promotion was already "
                f"{promotion_hold.describe(change.hold)}; that hold stays.")

    return run_action(roll_back, done=done, endpoint="admin.model_list")


@bp.route("/models/hold", methods=["POST"])
@role_required("admin")
def model_hold():
    """Put automatic promotion on hold (a hold in force already stays as it is)."""
    def done(change: promotion_hold.Change) -> str:
        if not change.changed:
            return (f"Automatic promotion was already {promotion_hold.describe(change.hold)}; "
                    "that hold stays.")
        return ("Automatic promotion is now on hold: retraining still trains, compares and "
                "reports, but makes no version active until the hold is released.")

    return run_action(lambda db: promotion_hold.hold(db, reason=request.form.get("reason"),
                                                     by=current_user.username),
                      done=done, endpoint="admin.model_list")


@bp.route("/models/release", methods=["POST"])
@role_required("admin")
def model_release():
    """Release the hold on automatic promotion (with none, nothing changes, and it says
    so: a stale page's button)."""
    def done(change: promotion_hold.Change) -> str:
        if not change.changed:
            return "Automatic promotion was not on hold; nothing changed."
        return ("Released the hold on automatic promotion: retraining makes its candidate "
                "active again when it is not worse than the active model.")

    return run_action(lambda db: promotion_hold.release(db, by=current_user.username),
                      done=done, endpoint="admin.model_list")


@bp.route("/models/retrain", methods=["POST"])
@role_required("admin")
def model_retrain():
    """Start `spamguard retrain --trigger ui --min-new-reviews 1` in the background."""
    return start_job(partial(retrain_jobs.start_retrain, by=current_user.username),
                     what="retraining",
                     busy="a retraining is already running",
                     started="Retraining started in the background (process {pid}). This "
                             "page refreshes while it runs.", endpoint="admin.model_list")


def _delete(version: ModelVersion, *, dry_run: bool) -> version_cleanup.Deletion:
    """Delete ``version`` as `spamguard models delete` does (the same rules: the active
    version, the one Roll back returns to and one a running retraining uses are refused)."""
    return version_cleanup.delete_versions(request_transaction, [version.id],
                                           settings().models_dir, dry_run=dry_run,
                                           by=current_user.username)


@bp.route("/models/<version_id>/delete")
@role_required("admin")
def model_delete_confirm(version_id: str):
    """Ask before deleting: what would go (the folder and its size, or only the registry
    entry), or why the version must stay. Changes nothing."""
    version = _version(version_id)
    try:
        deletion, refused = _delete(version, dry_run=True), None
    except SpamguardError as exc:
        deletion, refused = None, sentence(exc.for_ui())
    return render_template("admin/model_delete.html", version=version, refused=refused,
                           folder=deletion.folders[0] if deletion else None,
                           models_dir=settings().models_dir)


@bp.route("/models/<version_id>/delete", methods=["POST"])
@role_required("admin")
def model_delete(version_id: str):
    """Delete the version (confirmed on its page: a form without ``confirmed`` goes there
    and changes nothing), and say what was freed, or why it was refused."""
    version = _version(version_id)
    if request.form.get("confirmed") != version.id:
        return redirect(url_for("admin.model_delete_confirm", version_id=version.id))
    try:
        deletion = _delete(version, dry_run=False)
    except SpamguardError as exc:
        return fail(sentence(exc.for_ui()), "admin.model_list")
    (folder,) = deletion.folders
    flash(*_outcome(folder, deletion.failed.get(folder.version_id)))
    return redirect(url_for("admin.model_list"))


def _outcome(folder: version_cleanup.VersionFolder, failed: str | None) -> tuple[str, str]:
    """What deleting a version did, as a sentence and its flash category: the space freed,
    why none was, or the folder that could not be removed (``failed``: why not)."""
    done = (f"Version {folder.version_id} was already deleted" if folder.already_deleted
            else f"Deleted version {folder.version_id}")
    if failed is not None:
        return (f"{done}, but its folder {folder.directory} could not be removed ({failed}): "
                "remove it by hand, or delete the version again to try again.", "error")
    if folder.removable:
        said = f": removed its folder {folder.directory}, freeing {megabytes(folder.size)}"
    elif folder.already_deleted:
        said = "; nothing to do"
    elif folder.inside:
        said = f"; its folder {folder.directory} was already gone"
    else:
        said = (f" from the registry; its folder {folder.directory} is outside "
                f"{settings().models_dir} and stays where it is")
    return sentence(done + said), "info"
