"""Tests for ``spamguard db``, ``models``, ``promote`` and ``rollback`` through Click."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from spamguard import db
from spamguard.cli import _Group, db_commands, model_commands
from spamguard.services import registry


@pytest.fixture
def cli() -> click.Group:
    """Build a command group holding only this area's commands."""
    group = _Group("spamguard")
    db_commands.register(group)
    model_commands.register(group)
    return group


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Point SPAMGUARD_HOME at a folder that does not exist yet."""
    path = tmp_path / "nested" / "instance"
    monkeypatch.setenv("SPAMGUARD_HOME", str(path))
    monkeypatch.delenv("SPAMGUARD_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def registered(migrated_db_url, make_version_dir, monkeypatch) -> str:
    """Point the CLI at a migrated database holding v1 (active) and v2."""
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    engine = db.make_engine(migrated_db_url)
    with db.session_scope(db.make_session_factory(engine)) as session:
        registry.register_version(session=session, version_dir=make_version_dir(
            "v1", created_at="2026-11-01T09:30:00Z", spam_f1=0.9123, mcc=0.8, ham_fpr=0.0123))
        registry.register_version(session=session, version_dir=make_version_dir(
            "v2", created_at="2026-11-02T09:30:00Z"))
    engine.dispose()
    return migrated_db_url


def run(cli: click.Group, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_db_upgrade_creates_home_and_database(cli, home) -> None:
    result = run(cli, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert (home / "spamguard.db").exists()
    assert f"revision {db.head_revision()}" in result.output
    assert run(cli, "db", "upgrade").exit_code == 0


def test_db_current(cli, home) -> None:
    result = run(cli, "db", "current")  # a brand-new home: not even its folder exists
    assert result.exit_code == 0 and "no database yet" in result.output
    assert not home.exists()  # looking creates nothing
    home.mkdir(parents=True)
    result = run(cli, "db", "current", "--check")
    assert result.exit_code == 1
    assert "no database yet" in result.output and "spamguard db upgrade" in result.output
    run(cli, "db", "upgrade")
    result = run(cli, "db", "current", "--check")
    assert result.exit_code == 0 and "up to date" in result.output


def test_models_on_a_fresh_home(cli, home) -> None:
    result = run(cli, "models")
    assert result.exit_code == 0, result.output
    assert "no model versions yet: no spamguard database at " in result.output
    assert str(home.resolve()) in result.output  # where it looked, as an absolute path
    assert not home.exists()  # a read-only command leaves no empty instance behind
    as_json = run(cli, "models", "--json")
    assert as_json.exit_code == 2 and "no spamguard database at " in as_json.output


def test_models_table_and_json(cli, registered) -> None:
    lines = run(cli, "models").output.splitlines()
    assert lines[0].split() == ["VERSION", "STATUS", "CREATED", "BACKBONE", "TEST", "F1",
                                "TEST", "MCC", "TEST", "HAM", "FPR", "EVAL", "MCC", "EVAL",
                                "HAM", "FPR", "EVAL", "N"]
    assert lines[1].split()[:2] == ["v2", "candidate"]
    assert lines[2].split() == ["v1", "active", "2026-11-01", "09:30", "all-MiniLM-L6-v2",
                                "0.912", "0.800", "1.23%", "-", "-", "-"]
    rows = [json.loads(line) for line in run(cli, "models", "--json").output.splitlines()]
    assert [(r["version"], r["status"], r["mcc"]) for r in rows] == [
        ("v2", "candidate", 0.85), ("v1", "active", 0.8)]


def test_promote_and_rollback(cli, registered) -> None:
    result = run(cli, "promote", "v2")
    assert result.exit_code == 0 and "promoted v2 (was v1)" in result.output
    result = run(cli, "rollback")
    assert result.exit_code == 0 and "rolled back to v1 (was v2)" in result.output
    statuses = [line.split()[:2] for line in run(cli, "models").stdout.splitlines()[1:]]
    assert statuses == [["v2", "retired"], ["v1", "active"]]


def test_promote_registers_a_version_folder(cli, registered, make_version_dir) -> None:
    folder = make_version_dir("v3", created_at="2026-11-03T09:30:00Z")
    result = run(cli, "promote", str(folder))
    assert result.exit_code == 0 and "promoted v3 (was v1)" in result.output
    statuses = [line.split()[:2] for line in run(cli, "models").stdout.splitlines()[1:]]
    assert statuses == [["v3", "active"], ["v2", "candidate"], ["v1", "retired"]]
    assert "v3 is already the active version" in run(cli, "promote", str(folder)).output


def test_errors_are_one_line(cli, registered) -> None:
    result = CliRunner().invoke(cli, ["promote", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: no model version 'nope' (see `spamguard models`)"]
    empty = CliRunner().invoke(cli, ["promote", " "])  # named the working folder before
    assert empty.exit_code == 2 and "give a version id or a version folder" in empty.output
    gone = CliRunner().invoke(cli, ["promote", "instance/models/nope"])
    assert gone.exit_code == 2 and "instance/models/nope: no such folder" in gone.output
    result = CliRunner().invoke(cli, ["rollback"])
    assert result.exit_code == 2 and "v1 has no previously active version" in result.output


def test_refuses_an_out_of_date_schema(cli, home, monkeypatch) -> None:
    assert run(cli, "db", "upgrade").exit_code == 0
    current = db.head_revision()
    monkeypatch.setattr(db.schema, "head_revision", lambda: "9999")
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: database schema is out of date (at {current}, need 9999): run "
        "`spamguard db upgrade`")


@pytest.mark.parametrize("url, fragment", [
    ("bogus://x", "bogus is not supported"),
    ("notaurl", "is not a URL"),
    # a driver that is not installed (psycopg2 is the form many other tools' docs give)
    ("postgresql+psycopg2://u:p@127.0.0.1/db", "the driver psycopg2 is not installed"),
    ("postgresql+pg8000://u:p@127.0.0.1/db", "the driver pg8000 is not installed"),
])
def test_bad_database_urls_are_one_line_errors(tmp_path, url, fragment):
    from spamguard.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["models"], env={
        "SPAMGUARD_HOME": str(tmp_path), "SPAMGUARD_DATABASE_URL": url})
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["user", "disable", "bob"], ["user", "list"], ["rollback"], ["promote", "v1"],
    ["api-key", "list"], ["api-key", "revoke", "1"], ["classify-pending"],
    ["evalset", "show"], ["evalset", "add", "--from-reviews", "1"], ["campaigns", "rebuild"],
    ["promotion", "status"], ["promotion", "hold"], ["promotion", "release"],
])
def test_commands_that_need_existing_rows_create_no_database(home, args) -> None:
    """A mistyped SPAMGUARD_HOME used to leave a new empty instance behind."""
    from spamguard.cli import build_cli

    result = CliRunner().invoke(build_cli(), args, input="long-enough\n")
    assert result.exit_code == 2, result.output
    assert "no spamguard database at " in result.output
    assert "set SPAMGUARD_DATABASE_URL if the service uses PostgreSQL" in result.output
    assert not home.exists()


@pytest.mark.parametrize("args, stdin, said", [
    (["user", "create", "bob"], "short\nshort\n", "password must have at least 8"),
    (["api-key", "create", ""], None, "an API key needs a name"),
    (["serve", "--port", "{taken}"], None, "cannot listen on"),
])
def test_a_command_refused_for_its_input_leaves_no_new_instance(home, monkeypatch, args,
                                                                stdin, said) -> None:
    """A helper's walkthrough: these made the database, then refused their input, and
    left a new empty instance in a mistyped home, where `retrain` then trained a first
    model instead of saying that there was none."""
    import socket

    from spamguard.cli import build_cli

    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 32)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(build_cli(), [a.format(taken=port) for a in args],
                                    input=stdin)
    assert result.exit_code == 2 and said in result.output, result.output
    assert not home.parent.exists()  # the folders it made went too
    after = CliRunner().invoke(build_cli(), ["retrain", "--dry-run"])
    assert after.exit_code == 2 and "no spamguard database at " in after.output


def test_only_a_new_database_that_holds_nothing_is_removed_after_a_failure(tmp_path) -> None:
    from spamguard.models import ModelVersion
    from spamguard.sqltypes import utcnow

    url = f"sqlite:///{tmp_path / 'a' / 'spamguard.db'}"
    with pytest.raises(RuntimeError), db.new_sqlite_removed_on_failure(url):
        db.open_database(url, create_if_empty=True).dispose()
        raise RuntimeError("refused")
    assert not (tmp_path / "a").exists()
    # One that got a row before the failure stays, and so does one that was there before.
    with pytest.raises(RuntimeError), db.new_sqlite_removed_on_failure(url):
        engine = db.open_database(url, create_if_empty=True)
        with db.session_scope(db.make_session_factory(engine)) as session:
            session.add(ModelVersion(id="v1", directory="/x", backbone="b",
                                     backbone_hash="h", created_at=utcnow(), threshold=0.5))
        engine.dispose()
        raise RuntimeError("refused later")
    assert (tmp_path / "a" / "spamguard.db").is_file()
    # Nor one another process opened meanwhile (a `serve` on the new instance, a review
    # found): deleting it would pull the database from under it.
    import sqlite3
    from contextlib import closing

    url = f"sqlite:///{tmp_path / 'c' / 'spamguard.db'}"
    other = None
    try:
        with pytest.raises(RuntimeError), db.new_sqlite_removed_on_failure(url):
            db.open_database(url, create_if_empty=True).dispose()
            other = sqlite3.connect(tmp_path / "c" / "spamguard.db")
            other.execute("SELECT count(*) FROM alembic_version").fetchone()
            raise RuntimeError("refused while another has it open")
        assert (tmp_path / "c" / "spamguard.db").is_file()
    finally:
        with closing(other):
            pass
    (tmp_path / "b").mkdir()
    url = f"sqlite:///{tmp_path / 'b' / 'spamguard.db'}"
    db.open_database(url, create_if_empty=True).dispose()
    with pytest.raises(RuntimeError), db.new_sqlite_removed_on_failure(url):
        raise RuntimeError("refused")
    assert (tmp_path / "b" / "spamguard.db").is_file()


@pytest.mark.parametrize("leftover", ["zero bytes", "no tables"])
@pytest.mark.parametrize("args", [["api-key", "list"], ["retrain", "--dry-run"], ["rollback"]])
def test_an_empty_database_file_is_no_instance_either(home, args, leftover) -> None:
    """From an audit: an Alembic downgrade run with a mistyped home left an empty
    spamguard.db there; `api-key list` then made it a database, and `retrain` trained and
    promoted a first model into it."""
    import sqlite3

    from spamguard.cli import build_cli

    home.mkdir(parents=True)
    database = home / "spamguard.db"
    if leftover == "zero bytes":
        database.touch()
    else:
        sqlite3.connect(database).execute("PRAGMA user_version = 1").connection.close()
    size = database.stat().st_size
    result = CliRunner().invoke(build_cli(), args)
    assert result.exit_code == 2, result.output
    assert "no spamguard database at " in result.output
    assert "(the file there is empty)" in result.output
    assert database.stat().st_size == size and not (home / "models").exists()


def test_db_upgrade_of_a_newer_schema_is_one_line(cli, home, monkeypatch) -> None:
    """Going back to an older release and running `db upgrade` (docs/service.md, upgrading):
    one line saying the database is newer, exit 2, not Alembic's traceback."""
    from sqlalchemy import text

    assert run(cli, "db", "upgrade").exit_code == 0
    url = f"sqlite:///{(home / 'spamguard.db').resolve()}"
    engine = db.make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: database schema is newer than this spamguard (at 9999, know "
        f"{db.head_revision()}): upgrade spamguard")


def test_db_upgrade_shows_the_migrations_warnings(cli, home, monkeypatch) -> None:
    """Migration 0010 warns when the database user may not create pg_trgm (docs/service.md,
    upgrading); alembic's NullHandler used to swallow it, so the operator never saw it."""
    import logging

    from alembic import command

    real_upgrade = command.upgrade

    def upgrade(config, revision):
        real_upgrade(config, revision)
        logging.getLogger("alembic.runtime.migration").warning(
            "could not create the pg_trgm extension or its index (permission denied)")

    monkeypatch.setattr(command, "upgrade", upgrade)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # nothing set up (a CLI run)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert ("warning: could not create the pg_trgm extension or its index (permission denied)"
            in result.output)
    assert not logging.getLogger("alembic.runtime.migration").handlers  # removed again


def _as_another_user(work):
    """Run ``work()`` (returning a string) where the folder permissions bind: in a forked
    child that, when this is root (which may write anything), becomes nobody first. The
    modules it needs must be imported already (root's Python may be unreadable to nobody)."""
    import os

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's coverage is not collected)
        said = "child failed"
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            said = work()
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            said = f"child failed: {exc!r}"
        finally:
            os.write(write, said.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(child, 0)
    return said


def test_a_database_folder_it_may_not_write_is_named(cli) -> None:
    """SQLite's WAL mode creates -wal and -shm beside the database, even to read: with the
    folder read-only every command, `models` too, said only "unable to open database file"."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="spamguard-ro-", dir="/tmp"))  # nobody may reach it
    plots = Path(tempfile.mkdtemp(prefix="spamguard-mpl-", dir="/tmp"))  # (root's ~ is not)
    os.chmod(plots, 0o777)
    try:
        env = {"SPAMGUARD_HOME": str(folder), "SPAMGUARD_DATABASE_URL": "",
               "MPLCONFIGDIR": str(plots)}
        assert CliRunner().invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
        assert CliRunner().invoke(cli, ["models"], env=env).exit_code == 0  # (imports)
        assert not list(folder.glob("*-shm"))  # closed cleanly: the next reader makes it
        if os.geteuid() == 0:  # the database is the user's; only its folder is not
            os.chown(folder / "spamguard.db", 65534, 65534)
        os.chmod(folder, 0o555)

        def models() -> str:
            result = CliRunner().invoke(cli, ["models"], env=env)
            return f"{result.exit_code} {result.output}"

        said = _as_another_user(models)
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)
        shutil.rmtree(plots)
    # (which of the two SQLite says depends on its version and what files are there)
    assert said in {
        f"2 error: cannot read the database sqlite:///{folder}/spamguard.db: {sqlite_said} "
        f"(the folder {folder} is not writable by this user: SQLite needs to create "
        "spamguard.db-wal and spamguard.db-shm in it, even to read; run as the user the "
        "database belongs to, or let it write the folder)\n"
        for sqlite_said in ("unable to open database file",
                            "attempt to write a readonly database")}, said
