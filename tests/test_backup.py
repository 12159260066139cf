"""``spamguard backup create / verify / restore``: a backup holds the database and the model
versions its registry names; verification finds any changed, missing or extra file; a
restore goes into an empty instance only, points the registry at the copied versions and
upgrades the schema. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from spamguard import db
from spamguard.cli import build_cli
from spamguard.models import AuditEvent, Message, ModelVersion, TrainingRun
from spamguard.services import backup, registry
from spamguard.services.backup_restore import restore_backup
from tests.fixtures_admin import new_message
from tests.fixtures_db import postgres_server_url, temporary_postgres_database


@pytest.fixture
def instance(migrated_db_url, db_session_factory, make_version_dir, tmp_path):
    """Three messages (one reviewed), versions v1 (retired) and v2 (active, with a
    training run whose report is inside its folder), and v0 deleted."""
    folders = {name: make_version_dir(name, created_at=f"2026-11-2{n}T10:00:00+00:00")
               for n, name in enumerate(("v0", "v1", "v2"), start=1)}
    (folders["v2"] / "changes.md").write_text("# changes\n", encoding="utf-8")
    with db.session_scope(db_session_factory) as session:
        for name in ("v0", "v1", "v2"):
            registry.register_version(session=session, version_dir=folders[name])
        registry.promote(session=session, version_id="v1")
        registry.promote(session=session, version_id="v2")
        session.get(ModelVersion, "v0").status = "deleted"
        session.add(TrainingRun(status="promoted", trigger="cron", candidate_version_id="v2",
                                report_path=str(folders["v2"].resolve() / "changes.md")))
        session.add_all([new_message("WIN a prize", p=0.97),
                         new_message("see you at six", p=0.02, review_label="ham"),
                         new_message("Grüße aus Köln 📱", p=0.1)])
    shutil.rmtree(folders["v0"])  # a deleted version's folder is gone
    return migrated_db_url


@pytest.fixture
def empty_target(db_backend, tmp_path) -> Iterator[str]:
    """A database of the same kind with no tables."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'spamguard.db'}"
        return
    with temporary_postgres_database(postgres_server_url()) as url:
        yield url


def _cli(home: Path, url: str, *args: str, env: dict | None = None):
    return CliRunner().invoke(build_cli(), list(args), env={
        "SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": url, **(env or {})})


def _count(url: str, *what) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(*what)).scalar_one()
    finally:
        engine.dispose()


def test_backup_then_restore_into_a_new_instance(instance, empty_target, tmp_path):
    made = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"))
    assert made.exit_code == 0, made.output
    assert "3 message(s), 2 model version(s)" in made.stdout
    assert sorted(p.name for p in (tmp_path / "bk" / "models").iterdir()) == ["v1", "v2"]
    assert os.stat(tmp_path / "bk").st_mode & 0o077 == 0  # every message: owner only
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []

    checked = _cli(tmp_path, instance, "backup", "verify", str(tmp_path / "bk"))
    assert checked.exit_code == 0, checked.output
    assert "ok (made" in checked.stdout
    quiet = _cli(tmp_path, instance, "backup", "create", "--quiet", str(tmp_path / "bk2"))
    assert (quiet.exit_code, quiet.output) == (0, "")  # cron mails any output, every night
    assert _cli(tmp_path, instance, "backup", "verify", str(tmp_path / "bk2")).exit_code == 0

    home = tmp_path / "elsewhere"
    restored = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert restored.exit_code == 0, restored.output
    assert "2 model version(s)" in restored.stdout
    engine = db.make_engine(empty_target)
    try:
        with engine.connect() as connection:
            bodies = connection.scalars(select(Message.body).order_by(Message.id)).all()
            directories = dict(connection.execute(
                select(ModelVersion.id, ModelVersion.directory)).all())
            statuses = dict(connection.execute(
                select(ModelVersion.id, ModelVersion.status)).all())
            report = connection.scalar(select(TrainingRun.report_path))
            event = connection.execute(select(AuditEvent.action, AuditEvent.actor)
                                       .order_by(AuditEvent.id.desc())).first()
    finally:
        engine.dispose()
    assert bodies == ["WIN a prize", "see you at six", "Grüße aus Köln 📱"]
    assert statuses == {"v0": "deleted", "v1": "retired", "v2": "active"}
    models = (home / "models").resolve()
    assert directories["v1"] == str(models / "v1") and directories["v2"] == str(models / "v2")
    assert report == str(models / "v2" / "changes.md")
    assert (models / "v2" / "head.safetensors").read_bytes() == (
        tmp_path / "models" / "v2" / "head.safetensors").read_bytes()
    assert event.action == "backup.restore" and "@" in event.actor
    listing = _cli(home, empty_target, "models")
    assert listing.exit_code == 0 and "v2" in listing.stdout and "active" in listing.stdout


def test_a_restore_refuses_an_instance_that_is_not_empty(instance, tmp_path):
    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 0
    result = _cli(tmp_path / "other", instance, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 2
    assert "is not empty" in result.stderr and "restore into a new one" in result.stderr
    assert not (tmp_path / "other" / "models").exists()  # nothing copied


def test_a_restore_refuses_a_models_folder_that_holds_a_version(instance, empty_target,
                                                                 tmp_path):
    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 0
    (tmp_path / "other" / "models" / "v1").mkdir(parents=True)
    result = _cli(tmp_path / "other", empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 2 and "v1 already exists" in result.stderr
    assert not (tmp_path / "other" / "models" / "v2").exists()
    assert _tables(empty_target) == []


def _tables(url: str) -> list[str]:
    """The tables of ``url`` ([] for an SQLite file that does not exist)."""
    from sqlalchemy import inspect

    if db.missing_sqlite_file(url):
        return []
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_a_restore_that_fails_half_way_leaves_no_database_and_no_versions(
        instance, empty_target, tmp_path, monkeypatch):
    made = backup.create_backup(instance, tmp_path / "bk")
    assert made.missing == []

    def broken(url, revision="head"):
        raise RuntimeError("disk full")

    monkeypatch.setattr(db, "upgrade_schema", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        restore_backup(tmp_path / "bk", url=empty_target, models_dir=tmp_path / "new" / "models")
    assert list((tmp_path / "new" / "models").iterdir()) == []
    assert _tables(empty_target) == []
    if db.is_sqlite(empty_target):
        folder = db.sqlite_file(empty_target).parent
        assert list(folder.iterdir()) == []  # no database, no temporary copy


@pytest.mark.parametrize("damage, said", [
    (lambda bk: (bk / "models" / "v2" / "model.json").write_text("{}"), "v2/model.json: 2 bytes"),
    (lambda bk: (bk / "models" / "v1" / "head.safetensors").unlink(),
     "v1/head.safetensors: missing"),
    (lambda bk: (bk / "models" / "v1" / "extra.bin").write_bytes(b"x"),
     "extra.bin: not in the manifest"),
    (lambda bk: _flip_a_byte(bk / "models" / "v2" / "head.safetensors"), "changed since"),
    (lambda bk: _link_folder(bk / "models" / "v1"), "models/v1: a symbolic link"),
])
def test_verify_finds_a_damaged_backup_and_restore_refuses_it(instance, tmp_path, damage,
                                                               said):
    backup.create_backup(instance, tmp_path / "bk")
    damage(tmp_path / "bk")
    result = _cli(tmp_path, instance, "backup", "verify", str(tmp_path / "bk"))
    assert result.exit_code == 1 and said in result.stdout
    assert "do not restore from it" in result.stdout
    target = f"sqlite:///{tmp_path / 'new' / 'spamguard.db'}"
    refused = _cli(tmp_path / "new", target, "backup", "restore", str(tmp_path / "bk"))
    assert refused.exit_code == 2 and "fails verification" in refused.stderr
    assert not (tmp_path / "new").exists()


def _link_folder(folder: Path) -> None:
    """Move ``folder`` out of the backup and leave a link to it in its place: every file
    the manifest lists still reads the same through it."""
    moved = folder.parent.parent.parent / f"elsewhere-{folder.name}"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_runs_sqlites_integrity_check_on_the_copy(tmp_path, migrated_db_url,
                                                          db_backend):
    _sqlite_backup(migrated_db_url, db_backend, tmp_path / "bk")
    copy = tmp_path / "bk" / "database.sqlite"
    data = bytearray(copy.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's b-tree: a damaged database
    copy.write_bytes(bytes(data))
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    manifest["files"]["database.sqlite"]["sha256"] = backup.sha256(copy)  # hashes agree
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    check = backup.verify_backup(tmp_path / "bk")
    assert len(check.problems) == 1 and check.problems[0].startswith("database.sqlite: ")


@pytest.mark.parametrize("manifest, said", [
    (None, "holds no manifest.json"),
    ("not json", "cannot be read"),
    ({"format": "other"}, "is not a spamguard backup's manifest"),
    ({"format": "spamguard-backup", "format_version": 99}, "written by a newer spamguard"),
    ({"format": "spamguard-backup", "format_version": 1,
      "database": {"kind": "sqlite", "file": "database.sqlite"}, "models": [],
      "files": {"../../etc/passwd": {}}}, "names a file outside the backup"),
])
def test_a_folder_that_is_not_a_backup_is_refused_in_one_line(tmp_path, manifest, said):
    folder = tmp_path / "bk"
    folder.mkdir()
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (folder / "manifest.json").write_text(text)
    result = CliRunner().invoke(build_cli(), ["backup", "verify", str(folder)])
    assert result.exit_code == 2 and said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("change", [
    lambda m: m["files"].__setitem__("database.sqlite", "x"),
    lambda m: m["files"]["manifest.txt"].__setitem__("size", "12"),
    lambda m: m["models"].append("v9"),
    lambda m: m["models"][0].__setitem__("version", ["v1"]),
    lambda m: m["models"][0].__delitem__("copied"),
    lambda m: m["database"].__setitem__("kind", ["sqlite"]),
    lambda m: m.__delitem__("created_at"),
])
def test_a_damaged_manifest_is_refused_in_one_line(tmp_path, change):
    folder = tmp_path / "bk"
    folder.mkdir()
    (folder / "manifest.txt").write_text("hello world\n")
    manifest = {"format": "spamguard-backup", "format_version": 1,
                "created_at": "2026-12-03T03:00:00+00:00",
                "database": {"kind": "sqlite", "file": "database.sqlite", "revision": "0020"},
                "models": [{"version": "v1", "status": "active", "directory": "/m/v1",
                            "copied": False}],
                "files": {"manifest.txt": {"size": 12, "sha256": "0" * 64}}}
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for command in ("verify", "restore"):
        result = _cli(tmp_path / "new", f"sqlite:///{tmp_path / 'new' / 'db'}", "backup",
                      command, str(folder))
        assert result.exit_code == 2, result.output
        assert "is incomplete or damaged" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_create_refuses_an_existing_folder_and_a_missing_database(tmp_path):
    (tmp_path / "bk").mkdir()
    url = f"sqlite:///{tmp_path / 'spamguard.db'}"
    exists = _cli(tmp_path, url, "backup", "create", str(tmp_path / "bk"))
    assert exists.exit_code == 2 and "already exists" in exists.stderr
    missing = _cli(tmp_path, url, "backup", "create", str(tmp_path / "new"))
    assert missing.exit_code == 2 and "no database at" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bk"]  # nothing half-written
    assert not (tmp_path / "spamguard.db").exists()  # and no database created


def test_a_version_whose_folder_is_gone_is_named_and_the_rest_kept(instance, tmp_path):
    shutil.rmtree(tmp_path / "models" / "v1")
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"))
    assert result.exit_code == 1
    assert "warning: model version v1 not in the backup" in result.stderr
    assert [p.name for p in (tmp_path / "bk" / "models").iterdir()] == ["v2"]
    assert backup.verify_backup(tmp_path / "bk").problems == []


def test_restoring_a_backup_that_lacks_a_version_says_so(instance, empty_target, tmp_path):
    shutil.rmtree(tmp_path / "models" / "v1")
    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 1
    result = _cli(tmp_path / "new", empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 1, result.output
    assert "1 model version(s)" in result.stdout  # the rest is restored
    gone = (tmp_path / "models" / "v1").resolve()
    assert (f"warning: model version v1 (retired) is not in the backup (it could not be "
            f"copied when the backup was made): the restored registry still names {gone}"
            ) in result.stderr
    assert "v0" not in result.stderr  # deleted: nothing to say


def test_an_older_schema_is_upgraded_on_restore(db_url, empty_target, tmp_path):
    db.upgrade_schema(db_url, "0019")
    made = backup.create_backup(db_url, tmp_path / "bk")
    assert made.manifest["database"]["revision"] == "0019"
    result = _cli(tmp_path / "new", empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output
    assert f"upgraded from 0019 to {db.head_revision()}" in result.stdout
    engine = db.make_engine(empty_target)
    try:
        assert db.schema_status(engine).is_current
    finally:
        engine.dispose()
    assert _count(empty_target, AuditEvent) == 1


def test_a_backup_from_a_newer_spamguard_is_refused(instance, empty_target, tmp_path):
    backup.create_backup(instance, tmp_path / "bk")
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    manifest["database"]["revision"] = "9999"
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    result = _cli(tmp_path / "new", empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 2 and "revision 9999, which this spamguard does not know" \
        in result.stderr


def test_sqlite_backup_while_messages_are_stored(tmp_path, migrated_db_url, db_backend,
                                                  db_session_factory):
    """The online backup is one consistent read: the service goes on writing (WAL) and the
    copy is whole, holding a prefix of what was written."""
    if db_backend != "sqlite":
        pytest.skip("SQLite's online backup")
    stop = threading.Event()
    written = [0]

    def keep_writing() -> None:
        while not stop.is_set():
            with db.session_scope(db_session_factory) as session:
                session.add(new_message(f"message {written[0]}", p=0.5))
            written[0] += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while written[0] < 20:
            stop.wait(0.01)
        made = backup.create_backup(migrated_db_url, tmp_path / "bk")
    finally:
        stop.set()
        writer.join()
    copied = made.manifest["database"]["counts"]["messages"]
    assert 20 <= copied <= written[0]
    with sqlite3.connect(tmp_path / "bk" / "database.sqlite") as copy:
        bodies = [row[0] for row in copy.execute("SELECT body FROM messages ORDER BY id")]
    assert bodies == [f"message {i}" for i in range(copied)]
    assert backup.verify_backup(tmp_path / "bk").problems == []


def _sqlite_backup(url: str, db_backend: str, folder: Path) -> None:
    """Back up ``url`` into ``folder``; the test is skipped on PostgreSQL."""
    if db_backend != "sqlite":
        pytest.skip("an SQLite backup")
    backup.create_backup(url, folder)


def test_a_sqlite_backup_is_not_restored_into_postgresql(instance, db_backend, tmp_path):
    if not postgres_server_url():
        pytest.skip("needs a PostgreSQL server")
    _sqlite_backup(instance, db_backend, tmp_path / "bk")
    with temporary_postgres_database(postgres_server_url()) as target:
        result = _cli(tmp_path / "new", target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 2 and "holds a sqlite database and the target is postgresql" \
        in result.stderr


def test_a_stray_sqlite_journal_stops_the_restore(instance, db_backend, tmp_path):
    _sqlite_backup(instance, db_backend, tmp_path / "bk")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "spamguard.db-wal").write_bytes(b"old")
    target = f"sqlite:///{tmp_path / 'new' / 'spamguard.db'}"
    result = _cli(tmp_path / "new", target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 2 and "spamguard.db-wal is there without its database" \
        in result.stderr


def test_without_pg_dump_the_error_says_what_to_install(instance, db_backend, tmp_path):
    if db_backend != "postgresql":
        pytest.skip("pg_dump")
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"),
                  env={"PATH": str(tmp_path / "no-tools")})
    assert result.exit_code == 2
    assert "pg_dump not found on PATH" in result.stderr and "postgresql-client" in result.stderr
    assert not (tmp_path / "bk").exists()


def test_the_benchmark_prints_a_row_for_each_step(capsys):
    from tests.bench_modules import load_bench

    load_bench("backup").main(["--messages", "300"])
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines()]
    assert rows[0][0].startswith("sqlite: 300 messages, backup ")
    steps = {row[0].split(",")[0].split(" (")[0]: row[1:] for row in rows[2:]}
    assert list(steps) == ["storing 200 messages", "backup create", "backup verify",
                           "backup restore"]
    assert all(float(steps[step][0]) >= 0 for step in list(steps)[1:])  # seconds
    assert rows[4][0] == "backup verify (ok)"


@pytest.mark.parametrize("url", [
    "postgresql://spamguard:s3cret@127.0.0.1:5432/spamguard?sslmode=require",
    "postgresql+psycopg://odd%20user:p%40ss%2Fw%25rd%3A@/spamguard?host=/var/run/postgresql",
])
def test_the_password_is_not_on_pg_dumps_command_line(url):
    uri = backup.libpq_uri(url)
    assert "s3cret" not in uri and "p%40ss" not in uri and "p@ss" not in uri
    assert uri.startswith(("postgresql://spamguard@127.0.0.1:5432/spamguard?",
                           "postgresql://odd user@/spamguard?host="))


def test_pg_dump_and_pg_restore_get_the_password_from_the_environment_only(
        instance, empty_target, db_backend, tmp_path, monkeypatch):
    if db_backend != "postgresql":
        pytest.skip("pg_dump and pg_restore")
    import subprocess

    run, seen = subprocess.run, []

    def recording(command, *args, **kwargs):
        seen.append((command, kwargs.get("env") or {}))
        return run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording)
    backup.create_backup(instance, tmp_path / "bk")
    restore_backup(tmp_path / "bk", url=empty_target, models_dir=tmp_path / "new" / "models")
    password = str(db.normalise_url(instance).password)
    tools = [(c, env) for c, env in seen if "--dbname" in c]  # not pg_restore --list
    assert {Path(c[0]).name for c, _ in tools} == {"pg_dump", "pg_restore"}
    assert all(password not in " ".join(c) for c, _ in tools)
    assert all(env.get("PGPASSWORD") == password for _, env in tools)


def _as_postgres_superuser(url: str, sql: str) -> None:
    """Run ``sql`` in the database of ``url`` as the server's superuser (``runuser -u
    postgres psql``, as .ci/postgres.sh does); skip the test where that is not possible."""
    import subprocess

    parsed = db.normalise_url(url)
    if os.geteuid() != 0 or shutil.which("runuser") is None or parsed.host not in {
            "127.0.0.1", "localhost"}:
        pytest.skip("needs the local server's superuser (root, runuser)")
    done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-p",
                           str(parsed.port or 5432), "-d", parsed.database, "-v",
                           "ON_ERROR_STOP=1", "-qc", sql],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot run psql as postgres: {done.stderr.strip()[:200]}")


def test_a_restore_into_a_database_where_an_admin_created_pg_trgm(instance, empty_target,
                                                                   db_backend, tmp_path):
    """A role that may not create extensions gets a database in which an administrator
    created pg_trgm: the dump's COMMENT ON EXTENSION needs the extension's owner."""
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL extensions")
    _as_postgres_superuser(empty_target, "CREATE EXTENSION pg_trgm")
    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 0
    result = _cli(tmp_path / "new", empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output
    assert _count(empty_target, Message) == 3
    engine = db.make_engine(empty_target)
    try:
        with engine.connect() as connection:
            index = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_body_trgm'"
            ).scalar()
    finally:
        engine.dispose()
    assert "gin_trgm_ops" in index


def test_a_restore_that_fails_while_copying_a_version_leaves_nothing_in_models(
        instance, empty_target, tmp_path, monkeypatch):
    """A full disk (or Ctrl-C) half-way through copying a version: neither the versions
    already in place nor the half-copied one's temporary folder stay behind."""
    backup.create_backup(instance, tmp_path / "bk")
    from spamguard.services import backup_restore

    copytree = shutil.copytree

    def fills_the_disk(source, target, **kwargs):
        if Path(source).name == "v2":
            (Path(target) / "model.json").write_text("{")
            raise OSError(28, "No space left on device")
        return copytree(source, target, **kwargs)

    monkeypatch.setattr(backup_restore.shutil, "copytree", fills_the_disk)
    with pytest.raises(OSError, match="No space left"):
        restore_backup(tmp_path / "bk", url=empty_target,
                       models_dir=tmp_path / "new" / "models")
    assert list((tmp_path / "new" / "models").iterdir()) == []
    assert _tables(empty_target) == []


def test_a_full_disk_while_copying_a_version_stops_the_backup(instance, tmp_path,
                                                               monkeypatch):
    """Not a backup with the final name that lacks versions (as if they could not be
    read): nothing is kept, and the error says why."""
    import errno

    copyfile = shutil.copyfile

    def fills_the_disk(source, target, **kwargs):
        if Path(source).name == "head.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        return copyfile(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", fills_the_disk)
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"))
    assert result.exit_code == 2, result.output
    assert "cannot write the backup (No space left on device)" in result.stderr
    assert "nothing kept" in result.stderr and "warning" not in result.stderr
    assert not (tmp_path / "bk").exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_a_version_deleted_while_it_is_copied_is_named_not_kept_in_part(instance, tmp_path,
                                                                         monkeypatch):
    """`models prune` removes a retired version's folder after the registry was read: a
    copy that lacks files is not kept as if whole."""
    copytree = shutil.copytree

    def pruned_meanwhile(source, target, **kwargs):
        if Path(source).name == "v1":  # rmtree got to head.safetensors first ...
            (Path(source) / "head.safetensors").unlink()
        copied = copytree(source, target, **kwargs)
        if Path(source).name == "v1":  # ... and finishes after the copy
            shutil.rmtree(source)
        return copied

    monkeypatch.setattr(backup.shutil, "copytree", pruned_meanwhile)
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"))
    assert result.exit_code == 1, result.output
    assert "warning: model version v1 not in the backup" in result.stderr
    assert "was deleted or changed while it was copied" in result.stderr
    assert [p.name for p in (tmp_path / "bk" / "models").iterdir()] == ["v2"]
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert {e["version"]: e["copied"] for e in manifest["models"]} == {
        "v0": False, "v1": False, "v2": True}


def test_a_version_that_cannot_be_read_is_named_in_one_line(instance, tmp_path,
                                                             monkeypatch):
    copyfile = shutil.copyfile

    def unreadable(source, target, **kwargs):
        if Path(source).parent.name == "v1" and Path(source).name != "model.json":
            raise PermissionError(13, "Permission denied")
        return copyfile(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", unreadable)
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"))
    assert result.exit_code == 1
    line, = (x for x in result.stderr.splitlines() if x.startswith("warning:"))
    assert line.endswith("v1/head.safetensors: [Errno 13] Permission denied")
    assert "[(" not in line


def test_a_pg_dump_older_than_the_server_says_which_versions(instance, db_backend, tmp_path):
    if db_backend != "postgresql":
        pytest.skip("pg_dump")
    tools = tmp_path / "old-tools"
    tools.mkdir()
    (tools / "pg_dump").write_text(
        "#!/bin/sh\necho 'pg_dump: error: aborting because of server version mismatch' >&2\n"
        "echo 'pg_dump: detail: server version: 17.2; pg_dump version: 15.18' >&2\nexit 1\n")
    (tools / "pg_dump").chmod(0o755)
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"),
                  env={"PATH": f"{tools}:{os.environ['PATH']}"})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: pg_dump failed: pg_dump: error: aborting because of server version mismatch "
        "(server version: 17.2; pg_dump version: 15.18): install PostgreSQL's client tools "
        "of the server's major version or newer (Debian: postgresql-client)")
    assert not (tmp_path / "bk").exists()


def test_a_database_that_appears_during_a_sqlite_restore_is_never_replaced(
        instance, db_backend, tmp_path, monkeypatch):
    _sqlite_backup(instance, db_backend, tmp_path / "bk")
    target = tmp_path / "new" / "spamguard.db"
    from spamguard.services import backup_restore

    real_finish = backup_restore._finish

    def service_started_meanwhile(*args, **kwargs):
        real_finish(*args, **kwargs)
        target.write_bytes(b"the service's new database")

    monkeypatch.setattr(backup_restore, "_finish", service_started_meanwhile)
    result = _cli(tmp_path / "new", f"sqlite:///{target}", "backup", "restore",
                  str(tmp_path / "bk"))
    assert result.exit_code == 2 and "appeared while the backup was restored" in result.stderr
    assert target.read_bytes() == b"the service's new database"
    assert sorted(p.name for p in target.parent.iterdir()) == ["models", "spamguard.db"]
    assert list((target.parent / "models").iterdir()) == []


def test_a_postgresql_server_that_refuses_connections_exits_1_to_try_later(tmp_path):
    from spamguard.db import normalise_url

    down = normalise_url("postgresql://u:p@127.0.0.1:1/spamguard").render_as_string(
        hide_password=False)  # nothing listens on port 1
    result = _cli(tmp_path, down, "backup", "create", str(tmp_path / "bk"),
                  env={"PATH": os.environ["PATH"]})
    if "pg_dump not found" in result.stderr:
        pytest.skip("needs pg_dump")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: cannot read the database ")
    assert not (tmp_path / "bk").exists()


def test_backing_up_a_database_a_newer_spamguard_upgraded_says_who_can_restore_it(
        instance, tmp_path):
    plain = _cli(tmp_path / "home", instance, "backup", "create", str(tmp_path / "bk0"))
    assert plain.exit_code == 0 and "newer than this spamguard" not in plain.stderr
    engine = db.make_engine(instance)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    result = _cli(tmp_path / "home", instance, "backup", "create", str(tmp_path / "bk"))
    assert result.exit_code == 0, result.output  # the backup itself is whole
    assert ("note: the database is at revision 9999, newer than this spamguard knows: "
            "restore this backup with the release that upgraded it") in result.stderr


def test_a_server_that_ends_idle_transactions_does_not_end_the_backups_snapshot(
        instance, db_backend, tmp_path):
    """The transaction whose snapshot pg_dump reads sits idle while pg_dump runs: a server
    with idle_in_transaction_session_timeout (a common guard) ended it under a slow dump."""
    if db_backend != "postgresql":
        pytest.skip("pg_dump")
    import shutil as shell

    from sqlalchemy import text

    name = db.normalise_url(instance).database
    engine = db.make_engine(instance)
    with engine.begin() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" '
                                "SET idle_in_transaction_session_timeout = '300ms'"))
    engine.dispose()
    tools = tmp_path / "slow-tools"
    tools.mkdir()
    (tools / "pg_dump").write_text(f'#!/bin/sh\nsleep 1.5\nexec "{shell.which("pg_dump")}" "$@"\n')
    (tools / "pg_dump").chmod(0o755)
    result = _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk"),
                  env={"PATH": f"{tools}:{os.environ['PATH']}"})
    assert result.exit_code == 0, result.output
    assert _cli(tmp_path, instance, "backup", "verify", str(tmp_path / "bk")).exit_code == 0


# --- stopped or killed part-way (a real process, signalled) -------------------------------


def _holding_pg_dump(folder: Path, marker: Path) -> dict[str, str]:
    """An environment whose pg_dump writes its process id to ``marker`` and then waits:
    a dump that takes a while."""
    folder.mkdir()
    fake = folder / "pg_dump"
    fake.write_text(f'#!/bin/sh\necho $$ > "{marker}.tmp" && mv "{marker}.tmp" "{marker}"\n'
                    "exec sleep 120\n")
    fake.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def _start_backup(instance: str, db_backend: str, tmp_path: Path):
    """`backup create` held part-way (SQLite: copying the versions; PostgreSQL: in pg_dump),
    and pg_dump's process id (None on SQLite)."""
    from tests.fixtures_signals import hold_at, start, wait_for

    marker, env = tmp_path / "held", {"SPAMGUARD_HOME": str(tmp_path),
                                      "SPAMGUARD_DATABASE_URL": instance}
    hook = ""
    if db_backend == "sqlite":
        hook = hold_at("spamguard.services.backup", "_copy_versions", marker)
    else:
        env.update(_holding_pg_dump(tmp_path / "bin", marker))
    process = start(["backup", "create", str(tmp_path / "bk")], env=env, hook=hook)
    wait_for(marker, process)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bk.partial-")]
    return process, (int(marker.read_text()) if db_backend != "sqlite" else None)


def test_sigterm_stops_a_backup_and_its_pg_dump_and_leaves_no_folder(instance, db_backend,
                                                                      tmp_path):
    from tests.fixtures_signals import alive, gone, stop

    process, pg_dump = _start_backup(instance, db_backend, tmp_path)
    status, _, stderr = stop(process)
    assert status == 143 and stderr.endswith("error: stopped by SIGTERM\n"), stderr
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not (tmp_path / "bk").exists()
    if pg_dump is not None:  # subprocess.run killed it and waited for it
        left_running = alive(pg_dump)
        gone(pg_dump)  # (which kills it, if it was left running)
        assert not left_running


def test_a_killed_backup_takes_pg_dump_with_it_and_its_folder_is_named(instance, db_backend,
                                                                       tmp_path):
    """SIGKILL runs no cleanup: pg_dump dies with spamguard (Linux), and the folder left
    behind is named for what it is by verify and by the next backup."""
    import signal

    from tests.fixtures_signals import gone, stop

    process, pg_dump = _start_backup(instance, db_backend, tmp_path)
    assert stop(process, signal.SIGKILL)[0] == -signal.SIGKILL
    assert pg_dump is None or gone(pg_dump)
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".bk.partial-")]
    checked = _cli(tmp_path, instance, "backup", "verify", str(partial))
    assert checked.exit_code == 2 and checked.stderr == (
        f"error: {partial} is what a `backup create` of {tmp_path / 'bk'} that was killed "
        "left, not a backup: delete it, unless that backup is still running\n")
    # the next night's backup, of another name, quiet as cron runs it: still said
    made = _cli(tmp_path, instance, "backup", "create", "--quiet", str(tmp_path / "bk2"))
    assert made.exit_code == 0, made.output
    assert made.stderr == (f"note: {partial} is what a `backup create` of {tmp_path / 'bk'} "
                           "that was killed left (not a backup): delete it, unless that "
                           "backup is still running\n")


def test_pg_tools_die_with_a_killed_spamguard(tmp_path):
    """Whatever the database: run_pg_tool's child gets SIGKILL when its parent dies."""
    import signal
    import subprocess
    import sys

    from tests.fixtures_signals import ROOT, gone, stop, wait_for

    marker = tmp_path / "held"
    env = _holding_pg_dump(tmp_path / "bin", marker)
    code = ("from spamguard.services.backup import run_pg_tool\n"
            f"run_pg_tool([{str(tmp_path / 'bin' / 'pg_dump')!r}], 'postgresql://u@127.0.0.1/x')")
    process = subprocess.Popen([sys.executable, "-c", code], text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    wait_for(marker, process)
    stop(process, signal.SIGKILL)
    assert gone(int(marker.read_text()))


def _start_restore(instance: str, target: str, tmp_path: Path):
    """`backup restore` into ``target`` held once the versions and the database are copied,
    before the registry is pointed at the copies."""
    from tests.fixtures_signals import hold_at, start, wait_for

    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 0
    marker, home = tmp_path / "held", tmp_path / "elsewhere"
    process = start(["backup", "restore", str(tmp_path / "bk")],
                    env={"SPAMGUARD_HOME": str(home), "SPAMGUARD_DATABASE_URL": target},
                    hook=hold_at("spamguard.services.backup_restore", "_finish", marker))
    wait_for(marker, process)
    assert sorted(p.name for p in (home / "models").iterdir() if not p.name.startswith(".")) \
        == ["v1", "v2"]
    return process, home


def _restore_temporaries(url: str) -> list[str]:
    if not db.is_sqlite(url):
        return []
    return [p.name for p in db.sqlite_file(url).parent.iterdir() if ".restore-" in p.name]


def test_sigterm_undoes_a_restore(instance, empty_target, tmp_path):
    from tests.fixtures_signals import stop

    process, home = _start_restore(instance, empty_target, tmp_path)
    if db.is_sqlite(empty_target):
        assert _restore_temporaries(empty_target)  # the database's copy, being upgraded
    status, _, stderr = stop(process)
    assert status == 143 and stderr.endswith("error: stopped by SIGTERM\n"), stderr
    assert list((home / "models").iterdir()) == []
    assert _restore_temporaries(empty_target) == [] and _tables(empty_target) == []
    again = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert again.exit_code == 0, again.output


def test_a_restore_still_running_is_not_called_killed(instance, empty_target, tmp_path):
    """A second restore into the same instance (two terminals, a repeated deploy step) was
    told to delete the live one's files as a killed restore's (a review)."""
    from tests.fixtures_signals import stop

    process, home = _start_restore(instance, empty_target, tmp_path)
    try:
        second = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
        assert second.exit_code == 2
        assert second.stderr.startswith(
            f"error: a restore into this instance is running (pid {process.pid}, started ")
        assert second.stderr.endswith("): wait for it to end\n")
    finally:
        stop(process)


def test_a_killed_restore_is_named_with_what_to_delete(instance, empty_target, tmp_path):
    """SIGKILL runs no cleanup: the next restore says the versions and the hidden database
    copy are an interrupted restore's, and which paths to delete."""
    import re
    import signal

    from spamguard.services.backup_restore import UNFINISHED, _drop_restored_tables
    from tests.fixtures_signals import stop

    process, home = _start_restore(instance, empty_target, tmp_path)
    assert stop(process, signal.SIGKILL)[0] == -signal.SIGKILL
    refused = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1
    if not db.is_sqlite(empty_target):  # pg_restore had committed: the tables are there
        assert "is not empty (" in refused.stderr
        assert f"{home / 'models' / UNFINISHED} says a restore into it was stopped before " \
               "the end (killed)" in refused.stderr
        _drop_restored_tables(empty_target)
        refused = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
        assert refused.exit_code == 2
    said = re.fullmatch(r"error: (\S+) already exists, left by an earlier restore that was "
                        r"stopped before the end \(killed\): delete (.+) and restore again\n",
                        refused.stderr)
    assert said and said[1] == str(home / "models" / "v1"), refused.stderr
    listed = said[2].split(", ")
    expected = {str(home / "models" / name) for name in (UNFINISHED, "v1", "v2")}
    if db.is_sqlite(empty_target):
        folder = db.sqlite_file(empty_target).parent
        expected |= {str(folder / name) for name in _restore_temporaries(empty_target)}
        assert any(".spamguard.db.restore-" in path for path in listed)
    assert set(listed) == expected
    for path in map(Path, listed):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    again = _cli(home, empty_target, "backup", "restore", str(tmp_path / "bk"))
    assert again.exit_code == 0, again.output


def test_an_older_releases_killed_restore_is_named_by_its_database_copy(instance, tmp_path):
    """Before the marker, a killed restore left the versions and the database's hidden
    copy: that copy tells them from another instance's versions."""
    if not db.is_sqlite(instance):
        pytest.skip("the hidden copy is SQLite's")
    assert _cli(tmp_path, instance, "backup", "create", str(tmp_path / "bk")).exit_code == 0
    home = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "bk" / "models" / "v1", home / "models" / "v1")
    copy = home / ".spamguard.db.restore-k2j4x9ab"
    copy.write_bytes(b"half")
    refused = _cli(home, "", "backup", "restore", str(tmp_path / "bk"))
    assert refused.exit_code == 2 and refused.stderr == (
        f"error: {home / 'models' / 'v1'} already exists, left by an earlier restore that was "
        f"stopped before the end (killed): delete {copy}, {home / 'models' / 'v1'} and "
        "restore again\n")
