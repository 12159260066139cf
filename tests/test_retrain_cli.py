"""Tests for ``spamguard retrain`` (exit codes, summary line) and the change report."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard.cli import build_cli
from spamguard.services import locks, model_diff
from spamguard.services.retrain import LOCK_NAME
from tests.fixtures_retrain import (
    CANNOT_WRITE,
    DATABASE_FAILURES,
    database_fails,
    inverting_reviews,
    read_only_standby,
    store_reviews,
)


@pytest.fixture
def invoke(retrain_env, one_torch_thread):
    runner, cli = CliRunner(), build_cli()

    def run(*args: str):
        return runner.invoke(cli, ["retrain", *args], env=retrain_env)

    return run


def test_exit_codes_and_summary_lines(invoke, retrain_env, db_session_factory) -> None:
    first = invoke("--trigger", "cron")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip().splitlines()[-1].startswith("retrain: promoted ")
    skipped = invoke()
    assert skipped.exit_code == 0 and "retrain: skipped: 0 new review(s)" in skipped.stdout
    store_reviews(db_session_factory, inverting_reviews(db_session_factory))
    rejected = invoke()
    assert rejected.exit_code == 3 and "retrain: rejected " in rejected.stdout
    with locks.acquire(session_factory=db_session_factory, name=LOCK_NAME, ttl=60):
        locked = invoke("--force")
    assert locked.exit_code == 4 and "retrain: locked: " in locked.stdout
    models = CliRunner().invoke(build_cli(), ["models"], env=retrain_env)
    statuses = [line.split()[1] for line in models.stdout.splitlines()[1:]]
    assert sorted(statuses) == ["active", "rejected"]
    rejected_row = next(line.split() for line in models.stdout.splitlines()
                        if " rejected " in line)
    # The evaluation-set numbers the gate rejected it by are in the table, with the set's
    # size then; the active version it lost to shows its numbers from that comparison.
    assert rejected_row[-3].replace(".", "", 1).lstrip("-").isdigit()
    assert rejected_row[-2].endswith("%") and rejected_row[-1] == "17"
    active_row = next(line.split() for line in models.stdout.splitlines() if " active " in line)
    assert active_row[-2].endswith("%") and active_row[-1] == "17"
    assert models.stdout.splitlines()[0].split()[-3:] == ["FPR", "EVAL", "N"]


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "ham_fpr"], "Invalid value for '--metric'"),
    (["--trigger", "web"], "Invalid value for '--trigger'"),
    (["--margin", "-1"], "Invalid value for '--margin'"),
])
def test_usage_errors_exit_2(invoke, args, message) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.stderr
    # A scheduler's log still ends with the summary line, as for any other failure.
    last = result.stdout.splitlines()[-1]
    assert last.startswith("retrain: failed: spamguard retrain: ") and message in last


def test_other_commands_usage_errors_print_nothing_on_stdout() -> None:
    result = CliRunner().invoke(build_cli(), ["models", "--bogus"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: spamguard models: No such option")


def test_failure_exit_2_names_the_problem(invoke, retrain_env, tmp_path) -> None:
    result = CliRunner().invoke(build_cli(), ["retrain"], env={
        **retrain_env, "SPAMGUARD_BASE_DATA": str(tmp_path / "missing.tsv")})
    assert result.exit_code == 2
    assert result.stdout.strip().startswith("retrain: failed: ")
    assert "missing.tsv" in result.stdout


def test_flips_and_markdown_escape_message_text() -> None:
    y = np.array([0, 0, 1, 1])
    texts = ["fine", "<script>alert(1)</script> | pipe", "spam one",
             "spam two ![x](http://track.example/p.png) [win](http://x.example)"]
    changes = model_diff.compare(texts=texts, y_true=y,
                                 new_scores=np.array([0.1, 0.9, 0.9, 0.2]), new_threshold=0.5,
                                 old_scores=np.array([0.1, 0.2, 0.2, 0.9]), old_threshold=0.5)
    flips = changes["flips"]
    assert (flips["total"], flips["fixed"], flips["broken"]) == (3, 1, 2)
    assert flips["ham_to_spam"]["count"] == 2 and flips["ham_to_spam"]["broken"] == 1
    assert flips["spam_to_ham"]["examples"][0]["text"] == texts[3]
    assert model_diff.flip_counts(changes) == {"total": 3, "fixed": 1, "broken": 2,
                                               "ham_to_spam": 2, "spam_to_ham": 1}
    markdown = model_diff.render_markdown(changes)
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert "&#124; pipe" in markdown
    assert "](http" not in markdown and r"\!\[x\]\(http://track.example/p.png\)" in markdown
    # A dry run's decision reads as its outcome line does (it said "dry_run").
    for passed, said in ((False, "dry run, would reject"), (True, "dry run, would promote")):
        changes["decision"] = {"outcome": "dry_run", "passed": passed, "reason": "mcc ..."}
        assert f"**Decision: {said}** - mcc ..." in model_diff.render_markdown(changes)
    changes["decision"] = {"outcome": "rejected", "passed": False, "reason": "mcc ..."}
    assert "**Decision: rejected** - mcc ..." in model_diff.render_markdown(changes)


def test_unreachable_database_exits_1_so_a_scheduler_retries(retrain_env) -> None:
    result = CliRunner().invoke(build_cli(), ["retrain", "--trigger", "cron"], env={
        **retrain_env,
        "SPAMGUARD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1, result.output
    assert "cannot read the database" in result.output


@pytest.mark.parametrize(("orig", "exit_code", "said"), [
    *DATABASE_FAILURES,
    pytest.param(read_only_standby, 2, f"{CANNOT_WRITE}: cannot execute INSERT in a "
                 "read-only transaction", id="read-only"),
])
def test_a_database_failing_mid_run_is_one_line(invoke, monkeypatch, caplog, orig, exit_code,
                                                said) -> None:
    database_fails(monkeypatch, orig(), from_stage="registering")
    with caplog.at_level("WARNING"):
        result = invoke("--trigger", "cron")
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # not an escaped database error
    assert result.stdout.splitlines()[-1] == f"retrain: failed: {said}"
    assert "Traceback" not in result.output + caplog.text


def test_a_refused_login_exits_2_so_a_person_fixes_it(retrain_env, db_backend) -> None:
    if db_backend != "postgresql":
        pytest.skip("a password is a PostgreSQL setting")
    from sqlalchemy.engine import make_url

    wrong = make_url(retrain_env["SPAMGUARD_DATABASE_URL"]).set(password="not-the-password")
    result = CliRunner().invoke(build_cli(), ["retrain", "--trigger", "cron"], env={
        **retrain_env, "SPAMGUARD_DATABASE_URL": wrong.render_as_string(hide_password=False)})
    assert result.exit_code == 2, result.output
    assert "password authentication failed" in result.output
    assert "not-the-password" not in result.output


@pytest.mark.parametrize("margin", ["-0.1", "1.5"])
def test_margin_setting_out_of_range_is_refused(margin) -> None:
    from spamguard.config import load_settings

    with pytest.raises(ValueError, match="SPAMGUARD_RETRAIN_MARGIN=.*from 0 to 1"):
        load_settings(environ={"SPAMGUARD_RETRAIN_MARGIN": margin})
    assert load_settings(environ={"SPAMGUARD_RETRAIN_MARGIN": "0.02"}).retrain_margin == 0.02


def test_the_documented_crontab_line_runs_and_logs(tmp_path) -> None:
    """The line from docs/retraining.md, with /srv/spamguard replaced by a scratch folder:
    it must reach spamguard (the log folder is made first) and leave retrain's summary line,
    then run the pruning whatever retrain's outcome (its error is the log's last line). The
    scratch instance has no database, which retrain refuses instead of starting a new one."""
    import subprocess

    docs = Path(__file__).resolve().parents[1] / "docs" / "retraining.md"
    (line,) = [x for x in docs.read_text().splitlines() if x.startswith("15 3 * * *")]
    env_file = tmp_path / "env"  # as docs/retraining.md describes /etc/spamguard/env
    env_file.write_text(f"SPAMGUARD_HOME='{tmp_path}/instance'\n"  # quoted, as documented
                        "SPAMGUARD_REPLY_TEXT='Thanks & bye, $USER'\n")
    read_back = subprocess.run(["sh", "-c", f'set -a && . {env_file} && set +a && '
                                'printf %s "$SPAMGUARD_REPLY_TEXT"'], capture_output=True,
                               text=True, check=True)
    assert read_back.stdout == "Thanks & bye, $USER"  # quoted values survive sh as written
    command = (line.split(None, 5)[5].replace("/etc/spamguard/env", str(env_file))
               .replace("/srv/spamguard", str(tmp_path)))
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the virtual environment running the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAMGUARD_")}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    log = (tmp_path / "instance" / "logs" / "retrain.log").read_text()
    assert log.startswith("retrain: started ") and " UTC (pid " in log
    # retrain's summary line, then the pruning's own error: both commands ran and logged
    *_, summary, prune = log.splitlines()
    assert summary.startswith(f"retrain: failed: no spamguard database at {tmp_path}/instance/")
    assert "set SPAMGUARD_DATABASE_URL if the service uses PostgreSQL" in summary
    assert prune.startswith(f"error: no spamguard database at {tmp_path}/instance/")
    assert not (tmp_path / "instance" / "spamguard.db").exists()  # nothing was created


def test_the_documented_crontab_line_exits_with_retrains_status(tmp_path) -> None:
    """The line runs the pruning whatever retrain's outcome, and exits with retrain's
    status, not the pruning's, so cron still sees a rejected or failed run (a lifecycle
    audit: it exited with prune's 0). spamguard is a stub here: retrain exits 3."""
    import subprocess

    docs = Path(__file__).resolve().parents[1] / "docs" / "retraining.md"
    (line,) = [x for x in docs.read_text().splitlines() if x.startswith("15 3 * * *")]
    (tmp_path / "env").write_text("")
    stub = tmp_path / ".venv" / "bin" / "spamguard"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\necho "ran $*"\n[ "$1" = retrain ] && exit 3\nexit 0\n')
    stub.chmod(0o755)
    command = (line.split(None, 5)[5].replace("/etc/spamguard/env", str(tmp_path / "env"))
               .replace("/srv/spamguard", str(tmp_path)))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    log = (tmp_path / "instance" / "logs" / "retrain.log").read_text().splitlines()
    assert log == ["ran retrain --trigger cron", "ran models prune --keep 10"]


def test_help_names_the_settings_behind_option_defaults() -> None:
    """--metric, like --margin and --min-new-reviews, defaults to its SPAMGUARD_ setting."""
    text = " ".join(CliRunner().invoke(build_cli(), ["retrain", "--help"]).output.split())
    for setting in ("SPAMGUARD_RETRAIN_MIN_NEW_REVIEWS", "SPAMGUARD_RETRAIN_MARGIN",
                    "SPAMGUARD_RETRAIN_METRIC"):
        assert f"[default: {setting} or" in text, setting


def test_a_rollback_holds_the_next_retrain_until_released(invoke, retrain_env,
                                                           db_session_factory) -> None:
    """The operator's rollback is not undone overnight: the next run trains and reports,
    exits 0 with a "held" summary line, and promotes nothing; after `promotion release`
    a run promotes again."""
    from spamguard.db import session_scope
    from spamguard.services import registry

    def command(*args: str):
        return CliRunner().invoke(build_cli(), list(args), env=retrain_env)

    def active() -> str:
        with session_scope(db_session_factory) as session:
            return registry.active_version(session).id

    first = invoke()
    assert first.exit_code == 0, first.output
    store_reviews(db_session_factory, [("see you at the station at six", "ham")] * 3)
    second = invoke("--force")
    assert second.exit_code == 0, second.output
    back = active()
    rolled = command("rollback")
    assert rolled.exit_code == 0, rolled.output
    assert "automatic promotion is now on hold since " in rolled.stdout
    rolled_to = active()
    assert rolled_to != back
    store_reviews(db_session_factory, [("the plumber comes on monday", "ham")] * 3)
    held = invoke("--trigger", "cron")
    assert held.exit_code == 0, held.output
    last = held.stdout.strip().splitlines()[-1]
    assert last.startswith("retrain: held: automatic promotion on hold since ")
    assert f"(rollback from {back} to {rolled_to}); the candidate would be promoted: " in last
    assert active() == rolled_to
    assert command("promotion", "release").exit_code == 0
    # Not --force, which promotes under a hold too: the held run left its reviews unused,
    # and the next scheduled run promotes on them.
    released = invoke("--trigger", "cron")
    assert released.exit_code == 0, released.output
    assert released.stdout.strip().splitlines()[-1].startswith("retrain: promoted ")
    assert active() != rolled_to
