"""Deleting old model versions: `spamguard models delete` / `models prune` and the registry
rules behind them (what must stay, deleted versions never active again, concurrent
promotes), on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from spamguard.cli import build_cli
from spamguard.db import session_scope
from spamguard.errors import RegistryError
from spamguard.models import ModelVersion, TrainingRun
from spamguard.services import registry, version_cleanup
from tests.fixtures_db import waits_for_commit

PADDING = 1_500_000  # bytes added to some folders, so the freed megabytes say something


@pytest.fixture
def versions(db_session_factory, make_version_dir, tmp_path: Path) -> dict[str, Path]:
    """v0 (outside the models folder) and v1..v6 under ``tmp_path/models``, created a day
    apart (v0 oldest). v1, v2, v3 and v4 were promoted in turn: v4 is active and v3 is what
    rollback returns to; v0, v5 and v6 are candidates. v1 and v2 hold PADDING more bytes."""
    folders = {}
    outside = make_version_dir("v0", created_at="2026-11-20T10:00:00+00:00")
    (tmp_path / "elsewhere").mkdir()
    folders["v0"] = shutil.move(outside, tmp_path / "elsewhere" / "v0")
    for n in range(1, 7):
        folders[f"v{n}"] = make_version_dir(f"v{n}", created_at=f"2026-11-2{n}T10:00:00+00:00")
    for name in ("v1", "v2"):
        (folders[name] / "padding.bin").write_bytes(b"\0" * PADDING)
    with session_scope(db_session_factory) as session:
        for name in ("v1", "v0", "v2", "v3", "v4", "v5", "v6"):
            registry.register_version(session=session, version_dir=folders[name])
        for name in ("v2", "v3", "v4"):
            registry.promote(session=session, version_id=name)
    return {name: Path(folder) for name, folder in folders.items()}


def _statuses(factory) -> dict[str, str]:
    with factory() as session:
        return dict(session.execute(select(ModelVersion.id, ModelVersion.status)).all())


def _cli(tmp_path: Path, db_url: str, *args: str):
    env = {"SPAMGUARD_HOME": str(tmp_path), "SPAMGUARD_DATABASE_URL": db_url}
    return CliRunner().invoke(build_cli(), list(args), env=env)


def _running_run(factory, version_id: str) -> int:
    with session_scope(factory) as session:
        run = TrainingRun(status="running", trigger="cron", active_version_id=version_id)
        session.add(run)
        session.flush()
        return run.id


# The registry's rules


def test_delete_marks_the_version_and_keeps_its_row(db_session_factory, versions) -> None:
    with session_scope(db_session_factory) as session:
        deleted, already = registry.delete_versions(session=session, version_ids=["v1", "v5"])
    assert [v.id for v in deleted] == ["v1", "v5"] and already == frozenset()
    statuses = _statuses(db_session_factory)
    assert statuses["v1"] == statuses["v5"] == "deleted"
    assert statuses["v4"] == "active" and len(statuses) == 7
    with session_scope(db_session_factory) as session:  # a second time: nothing new
        _, already = registry.delete_versions(session=session, version_ids=["v1"])
    assert already == {"v1"}


@pytest.mark.parametrize(("target", "reason"), [
    ("v4", "cannot delete v4: it is the active version (promote another one first)"),
    ("v3", "cannot delete v3: it is the version `spamguard rollback` would return to "
           "(active before v4)"),
    ("v2", "cannot delete v2: training run {run}, recorded as running, uses it (a run that "
           "was killed stays so until the next `spamguard retrain`)"),
])
def test_delete_refuses_a_version_that_must_stay_and_deletes_nothing(
        db_session_factory, versions, target, reason) -> None:
    run = _running_run(db_session_factory, "v2")
    before = _statuses(db_session_factory)
    with pytest.raises(RegistryError) as error, session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v1", target])
    assert str(error.value) == reason.format(run=run) + "; nothing was deleted"
    assert _statuses(db_session_factory) == before  # v1 was not deleted either
    # The admin UI says the same in its own words: no command lines.
    shown = error.value.for_ui()
    assert shown.startswith(f"cannot delete {target}: ") and "spamguard" not in shown
    assert shown.endswith("; nothing was deleted")


def test_delete_of_an_unknown_version_deletes_nothing(db_session_factory, versions) -> None:
    with pytest.raises(RegistryError) as error, session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v1", "nope"])
    assert str(error.value) == ("no model version 'nope'; nothing was deleted (see "
                                "`spamguard models`)")
    assert _statuses(db_session_factory)["v1"] == "retired"


def test_a_finished_run_protects_nothing(db_session_factory, versions) -> None:
    with session_scope(db_session_factory) as session:
        session.add(TrainingRun(status="failed", trigger="cron", active_version_id="v2"))
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v2"])
    assert _statuses(db_session_factory)["v2"] == "deleted"


def test_prune_keeps_the_newest_and_the_protected(db_session_factory, versions) -> None:
    run = _running_run(db_session_factory, "v1")
    with session_scope(db_session_factory) as session:
        dry = registry.prune_versions(session=session, keep=2, dry_run=True)
    assert [v.id for v in dry.deleted] == ["v2", "v0"] and dry.newest == ["v6", "v5"]
    assert list(dry.protected) == ["v4", "v3", "v1"]
    assert f"training run {run}" in dry.protected["v1"]
    assert "deleted" not in _statuses(db_session_factory).values()  # a dry run marks nothing

    with session_scope(db_session_factory) as session:
        pruning = registry.prune_versions(session=session, keep=2)
    assert [v.id for v in pruning.deleted] == ["v2", "v0"]
    assert _statuses(db_session_factory) == {
        "v0": "deleted", "v1": "retired", "v2": "deleted", "v3": "retired", "v4": "active",
        "v5": "candidate", "v6": "candidate"}
    with session_scope(db_session_factory) as session:  # deleted ones do not count again
        again = registry.prune_versions(session=session, keep=1)
    assert [v.id for v in again.deleted] == ["v5"] and again.newest == ["v6"]


def test_prune_keeps_the_version_a_rollback_left(db_session_factory, versions) -> None:
    """After promote v5 and a rollback to v4, v5 is what `promote` would bring back (the
    rollback's own hint): prune keeps it though it is neither newest nor protected (a
    lifecycle audit saw it deleted); `delete` by name still may delete it."""
    with session_scope(db_session_factory) as session:
        registry.promote(session=session, version_id="v5")
    with session_scope(db_session_factory) as session:
        assert registry.rollback(session=session).id == "v4"
    with session_scope(db_session_factory) as session:
        pruning = registry.prune_versions(session=session, keep=1)
    assert pruning.newest == ["v6"] and list(pruning.protected) == ["v5", "v4", "v3"]
    assert pruning.protected["v5"] == ("it was active last before v4 (`spamguard promote` "
                                       "brings it back)")
    assert [v.id for v in pruning.deleted] == ["v2", "v1", "v0"]
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v5"])
    assert _statuses(db_session_factory)["v5"] == "deleted"


def test_a_deleted_version_behind_a_rollback_can_be_deleted_again(db_session_factory,
                                                                  versions) -> None:
    """v2 deleted, then a rollback to v3 (which came after v2): v2 is not the version
    rollback would return to (it cannot be), so deleting it again (a retry of a folder that
    could not be removed) is not refused (a review found it refused)."""
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v2"])
    with session_scope(db_session_factory) as session:
        assert registry.rollback(session=session).id == "v3"
    with session_scope(db_session_factory) as session:
        assert "v2" not in registry.protected_versions(session)
        _, already = registry.delete_versions(session=session, version_ids=["v2"])
    assert already == {"v2"}


def test_prune_needs_to_keep_one(db_session: Session, versions) -> None:
    for keep in (0, -3):
        with pytest.raises(RegistryError, match=f"--keep must be at least 1 .got {keep}."):
            registry.prune_versions(session=db_session, keep=keep)


def test_a_deleted_version_is_never_active_again(db_session_factory, versions) -> None:
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v5"])
    with pytest.raises(RegistryError) as error, session_scope(db_session_factory) as session:
        registry.promote(session=session, version_id="v5")
    assert str(error.value) == ("version v5 was deleted and cannot be promoted again; choose "
                                "another version (see `spamguard models`)")
    assert error.value.for_ui().endswith("cannot be promoted again; choose another version")
    with pytest.raises(RegistryError, match="v5 was deleted"), \
            session_scope(db_session_factory) as session:
        registry.reject(session=session, version_id="v5")
    assert _statuses(db_session_factory)["v4"] == "active"


def test_rollback_stops_before_a_deleted_version(db_session_factory, versions) -> None:
    """Rollback walks v4 -> v3 -> v2 -> v1; with v1 deleted it stops at v2."""
    with session_scope(db_session_factory) as session:
        registry.delete_versions(session=session, version_ids=["v1"])
    with session_scope(db_session_factory) as session:
        assert registry.rollback(session=session).id == "v3"
        assert registry.rollback(session=session).id == "v2"
        assert registry.rollback_target(session) is None
    with pytest.raises(RegistryError) as error, session_scope(db_session_factory) as session:
        registry.rollback(session=session)
    assert str(error.value) == ("version v2 rolls back to v1, which was deleted; run "
                                "`spamguard promote VERSION` instead (see `spamguard models`)")
    assert _statuses(db_session_factory)["v2"] == "active"


def test_nothing_to_roll_back_to_does_not_suggest_a_deleted_version(db_session_factory,
                                                                   versions) -> None:
    with session_scope(db_session_factory) as session:
        registry.rollback(session=session)  # v3, whose predecessor is v2
        registry.rollback(session=session)  # v2
        registry.rollback(session=session)  # v1, the first: nothing before it
        registry.delete_versions(session=session, version_ids=["v2"])
    with pytest.raises(RegistryError) as error, session_scope(db_session_factory) as session:
        registry.rollback(session=session)
    # v2 was active last before v1, but is deleted: v3, active before v2, is suggested
    assert "to re-activate v3, active before it, run `spamguard promote v3`" in str(
        error.value)


def test_a_promote_waits_for_a_deletion_of_its_version_and_refuses(db_session_factory,
                                                                   versions) -> None:
    """Deleting v5 has marked it, not committed; a promote of v5 meanwhile (which has
    found its files still there) must not make it active, or the folder removed after the
    deletion commits would leave the service an active version without files."""
    holder = db_session_factory()
    registry.delete_versions(session=holder, version_ids=["v5"])
    holder.flush()

    def promote() -> str:
        try:
            with session_scope(db_session_factory) as session:
                return registry.promote(session=session, version_id="v5").status
        except RegistryError as exc:
            return str(exc)

    outcome = waits_for_commit(holder, promote)
    assert outcome.startswith("version v5 was deleted meanwhile and cannot be promoted")
    assert _statuses(db_session_factory)["v5"] == "deleted"
    assert _statuses(db_session_factory)["v4"] == "active"


def test_a_deletion_waits_for_a_promote_of_its_version_and_refuses(db_session_factory,
                                                                   versions) -> None:
    holder = db_session_factory()
    registry.promote(session=holder, version_id="v5")
    holder.flush()

    def delete() -> str:
        try:
            with session_scope(db_session_factory) as session:
                registry.delete_versions(session=session, version_ids=["v5"])
            return "deleted"
        except RegistryError as exc:
            return str(exc)

    assert waits_for_commit(holder, delete) == (
        "cannot delete v5: it is the active version (promote another one first); nothing "
        "was deleted")
    assert _statuses(db_session_factory)["v5"] == "active"


def test_only_folders_inside_the_models_folder_are_removed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (models / "link").symlink_to(tmp_path / "b")
    assert version_cleanup.inside(models / "a", models)
    assert not version_cleanup.inside(models, models)
    assert not version_cleanup.inside(tmp_path / "b", models)
    assert not version_cleanup.inside(models / "link", models)  # its real path is outside
    assert not version_cleanup.inside(models / ".." / "b", models)


# The commands


def test_prune_dry_run_lists_and_deletes_nothing(tmp_path, migrated_db_url, db_session_factory,
                                                 versions) -> None:
    result = _cli(tmp_path, migrated_db_url, "models", "prune", "--keep", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    models = tmp_path / "models"
    assert result.stdout.splitlines() == [
        "would keep v4: it is the active version (promote another one first)",
        "would keep v3: it is the version `spamguard rollback` would return to (active "
        "before v4)",
        f"would delete v2: would remove {models / 'v2'} (1.5 MB)",
        f"would delete v1: would remove {models / 'v1'} (1.5 MB)",
        f"would delete v0: registry entry only; its folder {versions['v0']} is outside "
        f"{models} and stays where it is",
        "would delete 3 model versions, freeing 3.0 MB; would keep 4: the 2 newest and 2 "
        "that must stay (above)",
    ]
    assert all(folder.is_dir() for folder in versions.values())
    assert "deleted" not in _statuses(db_session_factory).values()


def test_prune_removes_old_folders_and_keeps_the_rest(tmp_path, migrated_db_url,
                                                      db_session_factory, versions) -> None:
    result = _cli(tmp_path, migrated_db_url, "models", "prune", "--keep", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2] == f"deleted v2: removed {versions['v2']} (1.5 MB)"
    assert lines[4].startswith("deleted v0: registry entry only; its folder ")
    assert lines[-1] == ("deleted 3 model versions, freed 3.0 MB; kept 4: the 2 newest and 2 "
                         "that must stay (above)")
    assert not versions["v1"].exists() and not versions["v2"].exists()
    assert all(versions[name].is_dir() for name in ("v0", "v3", "v4", "v5", "v6"))
    assert _statuses(db_session_factory) == {
        "v0": "deleted", "v1": "deleted", "v2": "deleted", "v3": "retired", "v4": "active",
        "v5": "candidate", "v6": "candidate"}
    # Left out of the list, which says so; --all shows them as deleted, in the table and in
    # JSON; and promote refuses them.
    table = _cli(tmp_path, migrated_db_url, "models").stdout.splitlines()
    assert [line.split()[:2] for line in table[1:-1]] == [
        ["v6", "candidate"], ["v5", "candidate"], ["v4", "active"], ["v3", "retired"]]
    assert table[-1] == "(3 deleted versions not shown: --all lists them)"
    table = _cli(tmp_path, migrated_db_url, "models", "--all").stdout.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [
        ["v6", "candidate"], ["v5", "candidate"], ["v4", "active"], ["v3", "retired"],
        ["v2", "deleted"], ["v1", "deleted"], ["v0", "deleted"]]
    assert '"status": "deleted"' not in _cli(tmp_path, migrated_db_url, "models",
                                             "--json").stdout
    listed = _cli(tmp_path, migrated_db_url, "models", "--json", "--all").stdout
    assert '"version": "v1", "status": "deleted"' in listed
    promoted = _cli(tmp_path, migrated_db_url, "promote", "v1")
    assert promoted.exit_code == 2 and promoted.stderr == (
        "error: version v1 was deleted and cannot be promoted again; choose another version "
        "(see `spamguard models`)\n")
    # ... also given its folder, which was left where it was.
    promoted = _cli(tmp_path, migrated_db_url, "promote", str(versions["v0"]))
    assert promoted.exit_code == 2 and "version v0 was deleted" in promoted.stderr
    classified = _cli(tmp_path, migrated_db_url, "classify", "--model", "v1", "-")
    assert classified.exit_code == 2 and "model version v1 was deleted" in classified.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["delete", "v4"], "error: cannot delete v4: it is the active version (promote another "
                       "one first); nothing was deleted"),
    (["delete", "v2", "v3"], "error: cannot delete v3: it is the version `spamguard "
                             "rollback` would return to (active before v4); nothing was "
                             "deleted"),
    (["delete", "v2", "zz"], "error: no model version 'zz'; nothing was deleted (see "
                             "`spamguard models`)"),
    (["prune", "--keep", "0"], "error: spamguard models prune: Invalid value for '--keep': "
                               "must be at least 1 (got 0): the newest version always stays "
                               "(see 'spamguard models prune --help')"),
    (["prune"], "error: spamguard models prune: Missing option '--keep'. (see 'spamguard "
                "models prune --help')"),
    (["delete"], "error: spamguard models delete: Missing argument 'VERSION...'. (see "
                 "'spamguard models delete --help')"),
    (["--json", "delete", "v2"], "error: spamguard models: --json and --all go with the "
                                 "list, not with a subcommand (see 'spamguard models --help')"),
])
def test_user_errors_are_one_line_and_delete_nothing(tmp_path, migrated_db_url,
                                                     db_session_factory, versions, args,
                                                     message) -> None:
    result = _cli(tmp_path, migrated_db_url, "models", *args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [message] and result.stdout == ""
    assert all(folder.is_dir() for folder in versions.values())
    assert "deleted" not in _statuses(db_session_factory).values()


def test_delete_removes_the_folder_after_the_database_commits(
        tmp_path, migrated_db_url, db_session_factory, versions, monkeypatch) -> None:
    seen = []
    remove = version_cleanup.remove

    def checked(folders):
        seen.append(_statuses(db_session_factory)["v5"])  # another connection's view
        assert versions["v5"].is_dir()
        return remove(folders)

    monkeypatch.setattr(version_cleanup, "remove", checked)
    result = _cli(tmp_path, migrated_db_url, "models", "delete", "v5")
    assert result.exit_code == 0, result.output
    assert seen == ["deleted"] and not versions["v5"].exists()
    assert result.stdout.splitlines()[-1].startswith("deleted 1 model version, freed 0.0 MB")


def test_a_folder_that_cannot_be_removed_is_named(tmp_path, migrated_db_url,
                                                  db_session_factory, versions,
                                                  monkeypatch) -> None:
    """rmtree removed part of the folder and then failed: the version is deleted in the
    registry (committed before), and the error says which folder to remove by hand; a
    second delete tries again."""
    rmtree = shutil.rmtree

    def partly(path, *args, **kwargs):
        if Path(path).name != "v1":
            return rmtree(path, *args, **kwargs)
        (Path(path) / "padding.bin").unlink()
        raise PermissionError(13, "Permission denied", str(Path(path) / "model.json"))

    monkeypatch.setattr(version_cleanup.shutil, "rmtree", partly)
    result = _cli(tmp_path, migrated_db_url, "models", "delete", "v1", "v5")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: could not remove {versions['v1']} (Permission denied): version v1 is deleted "
        "in the registry; remove the folder by hand"]
    assert result.stdout.splitlines()[-1] == "deleted 2 model versions, freed 0.0 MB"
    assert _statuses(db_session_factory)["v1"] == "deleted"
    assert (versions["v1"] / "model.json").exists()

    monkeypatch.undo()
    again = _cli(tmp_path, migrated_db_url, "models", "delete", "v1")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0].startswith(f"v1 was already deleted: removed "
                                                   f"{versions['v1']} (")
    assert not versions["v1"].exists()
    assert _cli(tmp_path, migrated_db_url, "models", "delete", "v1").stdout.splitlines() == [
        "v1 was already deleted; nothing to do", "deleted 0 model versions, freed 0.0 MB"]


def test_a_version_whose_folder_is_gone_is_deleted_all_the_same(
        tmp_path, migrated_db_url, db_session_factory, versions) -> None:
    shutil.rmtree(versions["v6"])
    result = _cli(tmp_path, migrated_db_url, "models", "delete", "v6")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (f"deleted v6: its folder {versions['v6']} was "
                                             "already gone")
    assert _statuses(db_session_factory)["v6"] == "deleted"


def test_delete_needs_an_instance(tmp_path) -> None:
    env = {"SPAMGUARD_HOME": str(tmp_path / "nowhere"), "SPAMGUARD_DATABASE_URL": ""}
    result = CliRunner().invoke(build_cli(), ["models", "prune", "--keep", "3"], env=env)
    assert result.exit_code == 2 and "no spamguard database at" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_retrain_commit_waiting_on_a_rollback_finds_the_version_it_activated(
        db_session_factory, versions) -> None:
    """From a review: a retraining run about to promote locks the active row; when a
    rollback held it, PostgreSQL re-read the row after the rollback's commit, found it
    retired and returned no active version at all (the run failed saying "-> none"). It
    now sees the version the rollback made active, and fails as stale naming it."""
    from spamguard.services.registry import locked_active_id

    holder = db_session_factory()
    registry.rollback(session=holder)  # v4 -> v3, not committed yet
    holder.flush()

    def commit_step() -> str:
        with session_scope(db_session_factory) as session:
            return str(locked_active_id(session))

    assert waits_for_commit(holder, commit_step) == "v3"
