"""``spamguard export``: moderators' labels to a file the training loader reads back
exactly; every message as JSON lines; date bounds; no half-written or replaced file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from spamguard import db
from spamguard.cli import _Group, export_commands
from spamguard.ml.data import load_labelled, load_texts
from spamguard.models import Message
from spamguard.services import export
from tests.fixtures_admin import new_message

TRICKY = ['Hello, "world"\nsecond line', '=HYPERLINK("http://x.example")', "tab\there",
          "WIN £100 now! 📱", '"quoted all over"', "trailing comma,", "plain"]


@pytest.fixture
def stored(migrated_db_url, monkeypatch):
    """Messages on 1, 2 and 3 December: reviewed ones with tricky texts, one blank
    reviewed, two unreviewed (one classified by a sender rule)."""
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    engine = db.make_engine(migrated_db_url)
    with db.session_scope(db.make_session_factory(engine)) as session:
        for i, body in enumerate(TRICKY):
            session.add(new_message(body, p=0.2, sender=f"+4479111234{i:02d}",
                                    received_at=datetime(2026, 12, 1 + i % 3, 12, tzinfo=UTC),
                                    review_label="spam" if i % 2 else "ham"))
        session.add(new_message(" ", p=0.1, review_label="ham",
                                received_at=datetime(2026, 12, 1, tzinfo=UTC)))
        session.add(new_message("not reviewed", p=0.9,
                                received_at=datetime(2026, 12, 2, tzinfo=UTC)))
        session.add(new_message("from the bank", p=0.95, sender="MyBank", sender_rule="allow",
                                received_at=datetime(2026, 12, 3, tzinfo=UTC)))
    engine.dispose()
    return migrated_db_url


@pytest.fixture
def cli() -> click.Group:
    group = _Group("spamguard")
    export_commands.register(group)
    return group


def test_reviewed_messages_round_trip_through_the_training_loader(cli, stored, tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "labels.csv"
    result = CliRunner().invoke(cli, ["export", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"exported 7 message(s) (3 spam, 4 ham) to {out}; left out 1 "
                             "with a blank text, which training and classify refuse\n")
    data = load_labelled(out)
    assert list(data.texts) == TRICKY
    assert [("spam" if y else "ham") for y in data.labels] == [
        "spam" if i % 2 else "ham" for i in range(len(TRICKY))]
    assert list(load_texts(out)) == TRICKY  # classify reads it too
    assert "+447911" not in out.read_text(encoding="utf-8")  # no senders unless asked
    assert os.stat(out).st_mode & 0o077 == 0  # personal data: owner only
    assert [p.name for p in out.parent.iterdir()] == ["labels.csv"]  # no temporary left


def test_all_messages_as_json_lines_with_senders_and_day_bounds(cli, stored):
    result = CliRunner().invoke(cli, ["export", "--all", "--format", "jsonl",
                                      "--with-senders", "--since", "2026-12-02",
                                      "--until", "2026-12-03"], catch_exceptions=False)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    days = {row["received_at"][:10] for row in rows}
    assert days == {"2026-12-02", "2026-12-03"}
    assert len(rows) == 6  # 5 tricky ones on those days, the unreviewed, the bank's
    bank = next(row for row in rows if row["text"] == "from the bank")
    assert (bank["label"], bank["model_label"], bank["sender_rule"], bank["sender"]) == (
        None, "spam", "allow", "MyBank")
    assert bank["spam_probability"] == pytest.approx(0.95)
    assert "exported 6 message(s) (2 spam, 2 ham, 2 not reviewed) to standard output" in (
        result.stderr)


def test_an_existing_file_is_kept_unless_forced(cli, stored, tmp_path):
    out = tmp_path / "labels.csv"
    out.write_text("keep me", encoding="utf-8")
    refused = CliRunner().invoke(cli, ["export", str(out)])
    assert refused.exit_code == 2
    assert f"{out} exists; choose another name, or --force to replace it" in refused.stderr
    assert out.read_text(encoding="utf-8") == "keep me"
    assert CliRunner().invoke(cli, ["export", str(out), "--force"]).exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("label,text,message_id")


@pytest.mark.parametrize(("args", "error"), [
    (["--since", "2026-12-03", "--until", "2026-12-02"], "--since is after --until"),
    (["--since", "3 Dec"], "Invalid value for '--since'"),
    (["missing-folder/labels.csv"], "no folder missing-folder"),
    ([".", "--force"], ". is not a regular file"),
])
def test_bad_options_are_one_line_errors(cli, stored, args, error):
    refused = CliRunner().invoke(cli, ["export", *args])
    assert refused.exit_code == 2 and error in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_link_is_refused_not_replaced(cli, stored, tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1, a regular file when output goes to one:
    moving the export into its place replaced the link (as root, for the whole machine)."""
    (tmp_path / "real.csv").write_text("keep me", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "real.csv")
    refused = CliRunner().invoke(cli, ["export", str(link), "--force"])
    assert refused.exit_code == 2 and "is not a regular file" in refused.stderr
    assert link.is_symlink() and link.read_text(encoding="utf-8") == "keep me"


def test_a_failed_export_leaves_no_file(cli, stored, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(export, "record", broken)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "labels.csv"
    with pytest.raises(RuntimeError):
        CliRunner().invoke(cli, ["export", str(out)], catch_exceptions=False)
    assert list(out.parent.iterdir()) == []


def test_batches_cover_every_message_once(stored, monkeypatch):
    import io

    monkeypatch.setattr(export, "BATCH", 3)
    engine = db.make_engine(stored)
    with db.session_scope(db.make_session_factory(engine)) as session:
        out = io.StringIO()
        counts = export.write(session, out, selection=export.Selection(reviewed_only=False),
                              fmt="jsonl")
        ids = [json.loads(line)["message_id"] for line in out.getvalue().splitlines()]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) == 10 == counts.written
        assert export.count(session, export.Selection()) == 8
    engine.dispose()


def test_an_export_is_one_moment_whatever_is_labelled_or_stored_meanwhile(cli, stored,
                                                                          monkeypatch):
    """Batches of 2: after the first row, another session labels a message further on and
    stores a labelled one; the file and its summary are the 8 of the moment it began."""
    monkeypatch.setattr(export, "BATCH", 2)
    engine = db.make_engine(stored)
    factory = db.make_session_factory(engine)
    real_write, changed = export.write, []

    def meanwhile(session, out, **kwargs):
        given = kwargs.pop("on_message")

        def on_message():
            given()
            if not changed:
                with db.session_scope(factory) as other:
                    waiting = other.scalars(select(Message).where(
                        Message.body == "not reviewed")).one()
                    waiting.review_label = "ham"
                    other.add(new_message("stored meanwhile", p=0.5, review_label="spam",
                                          received_at=datetime(2026, 12, 2, tzinfo=UTC)))
                changed.append(True)

        return real_write(session, out, on_message=on_message, **kwargs)

    monkeypatch.setattr(export, "write", meanwhile)
    result = CliRunner().invoke(cli, ["export", "--format", "jsonl"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert changed
    texts = [json.loads(line)["text"] for line in result.stdout.splitlines()]
    assert len(texts) == 8 and "not reviewed" not in texts and "stored meanwhile" not in texts
    assert "8 message(s)" in result.stderr
    with db.session_scope(factory) as session:  # and both changes did land
        assert export.count(session, export.Selection()) == 10
    engine.dispose()


def test_standard_output_is_utf8_whatever_the_locale_says(cli, stored):
    """Under a locale whose encoding is not UTF-8 (LANG=en_US.ISO-8859-1, or
    PYTHONIOENCODING=ascii) standard output could not write "£" or an emoji: the export
    stopped half-way with a traceback. The loader reads UTF-8 only."""
    result = CliRunner(charset="ascii").invoke(cli, ["export"], catch_exceptions=False)
    assert result.exit_code == 0
    assert list(load_labelled("labels.csv", result.stdout_bytes).texts) == TRICKY


def test_a_json_line_is_one_line_for_every_reader(cli, stored, migrated_db_url):
    """JSON keeps U+2028, U+2029 and U+0085 raw in a string, and str.splitlines (or an
    older JavaScript) ends a line at each: they are escaped."""
    engine = db.make_engine(migrated_db_url)
    texts = ["line\u2028separator", "paragraph\u2029separator", "next\x85line"]
    with db.session_scope(db.make_session_factory(engine)) as session:
        for body in texts:
            session.add(new_message(body, p=0.2, review_label="ham",
                                    received_at=datetime(2026, 12, 4, tzinfo=UTC)))
    engine.dispose()
    result = CliRunner().invoke(cli, ["export", "--format", "jsonl", "--since", "2026-12-04"],
                                catch_exceptions=False)
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == texts


def test_until_the_last_day_there_is(cli, stored):
    """--until 9999-12-31 (no upper bound) ends before "the next day", which does not
    exist: an OverflowError's traceback, not an export."""
    result = CliRunner().invoke(cli, ["export", "--until", "9999-12-31"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "exported 7 message(s)" in result.stderr


def test_sigterm_leaves_no_half_written_file(stored, tmp_path):
    """`kill` (or `systemctl stop`, `timeout`) mid-export: the temporary file beside the
    target went on holding every message written so far, and nothing was said."""
    from tests.fixtures_signals import hold_at, start, stop, wait_for

    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "all.csv"
    marker = tmp_path / "writing"
    process = start(["export", "--all", str(out)], env={"SPAMGUARD_HOME": str(tmp_path)},
                    hook=hold_at("spamguard.services.export", "write", marker))
    wait_for(marker, process)
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".part")]  # half-way
    status, _, stderr = stop(process)
    assert status == 143 and stderr == "error: stopped by SIGTERM\n"
    assert list(out.parent.iterdir()) == []
