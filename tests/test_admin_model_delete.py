"""Deleting a model version from the admin UI: asked first, admins only, the same rules and
service as `spamguard models delete`, and a message saying what was freed or why not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spamguard.db import session_scope
from spamguard.models import ModelVersion, TrainingRun
from spamguard.services import registry, version_cleanup
from tests.fixtures_admin import flashes

PADDING = 1_500_000  # bytes added to "old", so the freed megabytes say something
ODD = "<b>x&\"'"  # a version id that must be escaped wherever it is shown


@pytest.fixture
def shelf(app, app_home, install_model, make_version_dir, db_session_factory,
          tmp_path) -> dict[str, Path]:
    """The app's tiny model (active, "active"), and: "prev" (what Roll back returns to),
    "busy" (a training run recorded as running compares with it), "old" (a candidate under
    the models folder, PADDING bytes more), "far" (a candidate registered outside it) and
    ODD (a candidate with markup in its id). Returns each version's folder."""
    with db_session_factory() as session:
        active = registry.active_version(session)
        folders = {"active": Path(active.directory), "active_id": active.id}
    for day, name in enumerate(("prev", "busy", "old", ODD), start=1):
        source = make_version_dir(name, created_at=f"2026-11-0{day}T10:00:00+00:00")
        install_model(source, activate=False)
        folders[name] = app_home / "models" / name
    (folders["old"] / "padding.bin").write_bytes(b"\0" * PADDING)
    far = make_version_dir("far", created_at="2026-11-09T10:00:00+00:00")
    folders["far"] = Path(shutil.move(far, tmp_path / "elsewhere-far"))
    with session_scope(db_session_factory) as session:
        registry.register_version(session=session, version_dir=folders["far"],
                                  activate_if_none=False)
        registry.promote(session=session, version_id="prev")
        registry.promote(session=session, version_id=active.id)  # prev: the rollback target
        session.add(TrainingRun(status="running", trigger="cron", active_version_id="busy"))
    return folders


def _status(factory, version_id: str) -> str:
    with factory() as session:
        return session.get(ModelVersion, version_id).status


def _confirmed(version_id: str) -> dict[str, str]:
    return {"confirmed": version_id}


def test_delete_asks_first_then_removes_the_folder_and_says_what_was_freed(
        admin_client, shelf, db_session_factory, monkeypatch):
    listing = admin_client.get("/admin/models").get_data(as_text=True)
    for name in ("old", "far"):
        assert (f'<a class="btn small" href="/admin/models/{name}/delete" '
                f'aria-label="Delete version {name}">Delete</a>') in listing
    for name in ("prev", "busy", shelf["active_id"]):  # must stay: no Delete
        assert f'href="/admin/models/{name}/delete"' not in listing
    assert 'href="/admin/models/old/delete">Delete</a>' in admin_client.get(
        "/admin/models/old").get_data(as_text=True)

    asked = admin_client.get("/admin/models/old/delete")
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "<h1>Delete model version old?</h1>" in page
    assert (f"Its folder <code>{shelf['old']}</code> is removed from the disk, freeing "
            "1.5 MB.") in page
    assert '<input type="hidden" name="confirmed" value="old">' in page
    assert 'name="csrf_token"' in page and "data-confirm" not in page  # no JavaScript needed
    assert shelf["old"].is_dir() and _status(db_session_factory, "old") == "candidate"

    # The Delete button's form without the confirmation (a stale or hand-made one) only
    # leads to the question.
    unconfirmed = admin_client.post("/admin/models/old/delete")
    assert unconfirmed.status_code == 302
    assert unconfirmed.headers["Location"] == "/admin/models/old/delete"
    other = admin_client.post("/admin/models/old/delete", data=_confirmed("far"))
    assert other.headers["Location"] == "/admin/models/old/delete"
    assert shelf["old"].is_dir() and _status(db_session_factory, "old") == "candidate"

    calls = []  # the UI goes through the service `spamguard models delete` uses
    real = version_cleanup.delete_versions
    monkeypatch.setattr(version_cleanup, "delete_versions",
                        lambda *args, **kwargs: calls.append(args[1]) or real(*args, **kwargs))
    done = admin_client.post("/admin/models/old/delete", data=_confirmed("old"),
                             follow_redirects=True)
    assert calls == [["old"]]
    assert flashes(done) == [
        ("info", f"Deleted version old: removed its folder {shelf['old']}, freeing 1.5 MB.")]
    assert not shelf["old"].exists() and _status(db_session_factory, "old") == "deleted"
    listing = done.get_data(as_text=True)
    assert 'href="/admin/models/old/delete"' not in listing
    assert 'href="/admin/models/old/delete"' not in admin_client.get(
        "/admin/models/old").get_data(as_text=True)
    again = admin_client.get("/admin/models/old/delete").get_data(as_text=True)
    assert "<h1>Model version old is already deleted</h1>" in again
    assert 'name="confirmed"' not in again
    twice = admin_client.post("/admin/models/old/delete", data=_confirmed("old"),
                              follow_redirects=True)
    assert flashes(twice) == [("info", "Version old was already deleted; nothing to do.")]


def test_a_folder_outside_the_models_folder_stays(admin_client, shelf, db_session_factory,
                                                  app_home):
    page = admin_client.get("/admin/models/far/delete").get_data(as_text=True)
    assert (f"Its folder <code>{shelf['far']}</code> is outside <code>{app_home / 'models'}"
            "</code>, so it stays where it is: only the registry entry changes.") in page
    done = admin_client.post("/admin/models/far/delete", data=_confirmed("far"),
                             follow_redirects=True)
    assert flashes(done) == [
        ("info", f"Deleted version far from the registry; its folder {shelf['far']} is "
                 f"outside {app_home / 'models'} and stays where it is.")]
    assert shelf["far"].is_dir() and _status(db_session_factory, "far") == "deleted"


@pytest.mark.parametrize(("name", "reason"), [
    ("active", "Cannot delete {id}: it is the active version (promote another one first); "
               "nothing was deleted."),
    ("prev", "Cannot delete prev: it is the version Roll back would return to (active "
             "before {id}); nothing was deleted."),
    ("busy", "Cannot delete busy: training run {run}, recorded as running, uses it (a run "
             "that was killed stays so until the next retraining); nothing was deleted."),
])
def test_a_version_that_must_stay_is_refused_with_the_reason(admin_client, shelf,
                                                             db_session_factory, name,
                                                             reason):
    """The rules of `spamguard models delete`, in the UI's words (no command lines): said
    on the version's page and the question's, and by a form sent all the same."""
    version_id = shelf["active_id"] if name == "active" else name
    with db_session_factory() as session:
        run = session.query(TrainingRun).one().id
    reason = reason.format(id=shelf["active_id"], run=run)
    asked = admin_client.get(f"/admin/models/{version_id}/delete")
    assert flashes(asked) == [("error", reason)]
    assert 'name="confirmed"' not in asked.get_data(as_text=True)
    detail = admin_client.get(f"/admin/models/{version_id}").get_data(as_text=True)
    assert f'href="/admin/models/{version_id}/delete"' not in detail
    if name != "active":
        said = reason.split(": ", 1)[1].split("; nothing")[0]
        assert f'<p class="muted">Cannot be deleted: {said}.</p>' in detail
    sent = admin_client.post(f"/admin/models/{version_id}/delete",
                             data=_confirmed(version_id), follow_redirects=True)
    assert flashes(sent) == [("error", reason)]
    assert "spamguard" not in sent.get_data(as_text=True).split("<main", 1)[1]
    assert _status(db_session_factory, version_id) != "deleted"
    assert shelf[name].is_dir()


@pytest.mark.parametrize("role", ["moderator", "viewer"])
def test_only_admins_delete(login_as, shelf, db_session_factory, role):
    client = login_as(role)
    assert "/delete" not in client.get("/admin/models").get_data(as_text=True)
    assert "/delete" not in client.get("/admin/models/old").get_data(as_text=True)
    assert client.get("/admin/models/old/delete").status_code == 403
    assert client.post("/admin/models/old/delete", data=_confirmed("old")).status_code == 403
    assert shelf["old"].is_dir() and _status(db_session_factory, "old") == "candidate"


def test_delete_needs_the_csrf_token(admin_client, shelf, db_session_factory):
    refused = admin_client.client.post("/admin/models/old/delete", data=_confirmed("old"))
    assert refused.status_code == 400
    assert shelf["old"].is_dir() and _status(db_session_factory, "old") == "candidate"
    for path in ("/admin/models/nope/delete", "/admin/models/%00/delete",
                 f"/admin/models/{'v' * 65}/delete"):
        assert admin_client.get(path).status_code == 404, path
        assert admin_client.post(path, data=_confirmed("nope")).status_code == 404, path


def test_a_folder_that_cannot_be_removed_is_named_and_can_be_removed_later(
        admin_client, shelf, db_session_factory, monkeypatch):
    rmtree = shutil.rmtree

    def partly(path, *args, **kwargs):
        (Path(path) / "padding.bin").unlink()
        raise PermissionError(13, "Permission denied", str(Path(path) / "model.json"))

    monkeypatch.setattr(version_cleanup.shutil, "rmtree", partly)
    done = admin_client.post("/admin/models/old/delete", data=_confirmed("old"),
                             follow_redirects=True)
    assert flashes(done) == [
        ("error", f"Deleted version old, but its folder {shelf['old']} could not be removed "
                  "(Permission denied): remove it by hand, or delete the version again to "
                  "try again.")]
    assert _status(db_session_factory, "old") == "deleted" and shelf["old"].is_dir()
    detail = admin_client.get("/admin/models/old").get_data(as_text=True)
    assert f"its folder {shelf['old']} could not be removed entirely" in detail
    assert 'href="/admin/models/old/delete">Remove its folder</a>' in detail
    asked = admin_client.get("/admin/models/old/delete").get_data(as_text=True)
    assert "<h1>Remove the folder of model version old?</h1>" in asked

    monkeypatch.setattr(version_cleanup.shutil, "rmtree", rmtree)
    again = admin_client.post("/admin/models/old/delete", data=_confirmed("old"),
                              follow_redirects=True)
    (said,) = flashes(again)
    assert said[0] == "info" and said[1].startswith(
        f"Version old was already deleted: removed its folder {shelf['old']}, freeing 0.0")
    assert not shelf["old"].exists()


def test_what_a_version_id_holds_is_escaped(admin_client, shelf, db_session_factory):
    from urllib.parse import quote

    url = f"/admin/models/{quote(ODD, safe='')}/delete"
    escaped = "&lt;b&gt;x&amp;&#34;&#39;"
    listing = admin_client.get("/admin/models").get_data(as_text=True)
    assert ODD not in listing and f'aria-label="Delete version {escaped}"' in listing
    asked = admin_client.get(url).get_data(as_text=True)
    assert ODD not in asked and f"<h1>Delete model version {escaped}?</h1>" in asked
    assert f'name="confirmed" value="{escaped}"' in asked
    done = admin_client.post(url, data=_confirmed(ODD), follow_redirects=True)
    page = done.get_data(as_text=True)
    assert ODD not in page and f"Deleted version {escaped}: removed its folder" in page
    assert _status(db_session_factory, ODD) == "deleted"
