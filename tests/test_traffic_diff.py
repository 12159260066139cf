"""What a version would change on recent traffic: retraining's changes.md / changes.json
section and ``spamguard models compare`` (SQLite and PostgreSQL, tiny backbone)."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from spamguard.cli import build_cli
from spamguard.db import session_scope
from spamguard.ml.classifier import SpamClassifier
from spamguard.models import Message
from spamguard.services import registry, traffic_diff
from spamguard.sqltypes import utcnow
from tests.fixtures_admin import new_message
from tests.fixtures_retrain import copy_version, store_reviews

NEW_HAM = ["the meeting moved to thursday afternoon", "bring the blue folder tomorrow",
           "mum says dinner is at seven", "can you feed the cat tonight"]
TRAFFIC = ["WIN a free prize now, call 09061701461", "see you at the station at six",
           "URGENT your account is locked, reply with your PIN", "thanks for lunch today",
           "Claim your £500 reward at once", "are we still on for football"]


def _install(settings, factory, source) -> str:
    directory = copy_version(source, settings.models_dir)
    with session_scope(factory) as session:
        version = registry.register_version(session=session, version_dir=directory)
        registry.promote(session=session, version_id=version.id)
        return version.id


@pytest.fixture
def traffic(db_session_factory) -> list[int]:
    """Six recent unreviewed messages, one older than a week, one a sender rule labelled."""
    with session_scope(db_session_factory) as session:
        rows = [new_message(text, p=0.5, received_at=utcnow() - timedelta(hours=i))
                for i, text in enumerate(TRAFFIC)]
        rows.append(new_message("old news", p=0.5, received_at=utcnow() - timedelta(days=9)))
        rows.append(new_message("from the bank", p=0.5, sender="MyBank", sender_rule="allow"))
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def test_recent_traffic_is_the_newest_messages_of_the_period_without_rule_verdicts(
        db_session, traffic):
    recent = traffic_diff.recent_traffic(db_session, days=7, limit=100)
    assert sorted(recent.ids) == sorted(traffic[:6])  # not the old one, not the rule's
    assert recent.left_out_by_rule == 1
    assert recent.ids == sorted(recent.ids, reverse=True)  # oldest received first
    newest = traffic_diff.recent_traffic(db_session, days=7, limit=2)
    assert set(newest.ids) == set(traffic[:2])  # received 0 and 1 hours ago


class _Fixed:
    """A stand-in classifier with given probabilities (no backbone)."""

    def __init__(self, version, probabilities, threshold=0.5):
        self.version, self.threshold = version, threshold
        self.probabilities = dict(probabilities)

    def label_for(self, p):
        return "spam" if p >= self.threshold else "ham"


def test_compare_counts_each_way_and_ranks_by_how_far_scores_moved(monkeypatch):
    recent = traffic_diff.Traffic(since=utcnow(), days=7, limit=10, ids=[1, 2, 3, 4, 5],
                                  texts=list("abcde"),
                                  reviewed=[None, "spam", "ham", None, "ham"],
                                  left_out_by_rule=2)
    old = _Fixed("old", {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.45, "e": 0.2})
    new = _Fixed("new", {"a": 0.9, "b": 0.7, "c": 0.1, "d": 0.55, "e": 0.3})
    monkeypatch.setattr(traffic_diff, "scores", lambda models, texts: [
        np.array([m.probabilities[t] for t in texts]) for m in models])
    diff = traffic_diff.compare(recent, old, new)
    assert diff["changed"] == 4 and diff["messages"] == 5
    assert diff["ham_to_spam"] == {"count": 3, "texts": 3, "reviewed_as_after": 1,
                                   "reviewed_as_before": 0,
                                   "message_ids": [1, 2, 4]}  # moved 0.8, 0.5, 0.1
    assert diff["spam_to_ham"] == {"count": 1, "texts": 1, "reviewed_as_after": 1,
                                   "reviewed_as_before": 0, "message_ids": [3]}
    assert diff["reviewed"] == {"messages": 3, "active_agrees": 1, "other_agrees": 3}
    assert diff["spam"] == {"active": 1, "other": 3}
    assert diff["left_out_by_sender_rule"] == 2
    assert traffic_diff.summary(diff) == ("on 5 recent messages (since "
                                          f"{recent.since:%Y-%m-%d}) 4 verdicts would change: "
                                          "3 ham to spam, 1 spam to ham")
    json.dumps(diff)  # JSON-ready


def test_scores_embed_once_per_encoder_and_write_no_cache(tiny_model_dir, tmp_path,
                                                           monkeypatch):
    from spamguard.ml.embeddings import CachedEncoder

    cache = tmp_path / "cache"
    one = SpamClassifier.load(tiny_model_dir, cache_root=cache)
    two = SpamClassifier.load(tiny_model_dir, cache_root=cache, backbone=one.backbone)
    texts = ["hello there", "WIN cash now"]
    passes = []
    encode = CachedEncoder.__call__
    monkeypatch.setattr(CachedEncoder, "__call__", lambda self, t, progress=None: (
        passes.append(len(t)), encode(self, t, progress))[1])
    first, second = traffic_diff.scores([one, two], texts)
    assert passes == [2]  # one embedding pass for two versions on one encoder
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # traffic is not cached
    np.testing.assert_allclose(first, one.predict_proba(texts), rtol=1e-5)  # cached now
    np.testing.assert_allclose(second, first)
    from spamguard.ml import embeddings

    through_backbone = []
    real_encode = embeddings.encode
    monkeypatch.setattr(embeddings, "encode", lambda backbone, t, **kw: (
        through_backbone.append(len(t)), real_encode(backbone, t, **kw))[1])
    traffic_diff.scores([one], [*texts, "a text never seen"])  # the two from the cache
    assert through_backbone == [1]


def test_retrain_reports_what_the_candidate_changes_on_recent_traffic(
        retrain, retrain_settings, db_session_factory, bad_model_dir, traffic):
    bad = _install(retrain_settings, db_session_factory, bad_model_dir)
    reviewed = store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    outcome = retrain()
    changes = json.loads((outcome.report_path.parent / "changes.json").read_text())
    diff = changes["traffic"]
    assert diff["versions"] == {"active": bad, "other": outcome.candidate_version}
    assert diff["messages"] == 10 and diff["left_out_by_sender_rule"] == 1  # 6 + 4 reviewed
    assert diff["reviewed"]["messages"] == 4
    assert diff["changed"] == diff["ham_to_spam"]["count"] + diff["spam_to_ham"]["count"] > 0
    flipped = diff["ham_to_spam"]["message_ids"] + diff["spam_to_ham"]["message_ids"]
    assert flipped and set(flipped) <= set(traffic[:6]) | set(reviewed)
    report = outcome.report_path.read_text()
    assert "## Recent traffic: on 10 recent messages" in report
    run_counts = _last_run_counts(db_session_factory)
    assert run_counts["traffic"]["messages"] == 10


def _last_run_counts(factory) -> dict:
    from sqlalchemy import select

    from spamguard.models import TrainingRun

    with session_scope(factory) as session:
        return session.scalars(select(TrainingRun.counts).order_by(TrainingRun.id.desc())
                               ).first()


def test_retrain_can_leave_traffic_out(retrain, retrain_settings, db_session_factory,
                                       bad_model_dir, traffic, monkeypatch):
    _install(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    off = dataclasses.replace(retrain_settings, retrain_traffic_limit=0)
    from spamguard.services.retrain import run_retrain

    outcome = run_retrain(session_factory=db_session_factory, settings=off, progress=False)
    changes = json.loads((outcome.report_path.parent / "changes.json").read_text())
    assert "traffic" not in changes
    assert "Recent traffic" not in outcome.report_path.read_text()


def test_models_compare_on_the_command_line(retrain_settings, db_session_factory,
                                            bad_model_dir, tiny_model_dir, traffic):
    bad = _install(retrain_settings, db_session_factory, bad_model_dir)
    good = copy_version(tiny_model_dir, retrain_settings.models_dir)
    env = {"SPAMGUARD_HOME": str(retrain_settings.home),
           "SPAMGUARD_DATABASE_URL": retrain_settings.database_url}
    runner = CliRunner()
    shown = runner.invoke(build_cli(), ["models", "compare", str(good)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("Recent traffic: on 6 recent messages")
    assert f"| | {bad} (active) |" in shown.stdout
    assert "1 labelled by a sender rule left out" in shown.stdout
    as_json = runner.invoke(build_cli(), ["models", "compare", str(good), "--json",
                                          "--days", "30", "--limit", "3"], env=env)
    diff = json.loads(as_json.stdout)
    assert diff["messages"] == 3 and diff["versions"]["active"] == bad
    assert diff["limit"] == 3 and diff["days"] == 30
    against = runner.invoke(build_cli(), ["models", "compare", str(good), "--against",
                                          str(good), "--json"], env=env)
    assert json.loads(against.stdout)["changed"] == 0  # a version against itself
    with session_scope(db_session_factory) as session:
        registry.get_version(session, bad).status = "retired"  # none active now
    none = runner.invoke(build_cli(), ["models", "compare", str(good)], env=env)
    assert none.exit_code == 2
    assert none.stderr == "error: no active model to compare with: give --against VERSION\n"
    missing = runner.invoke(build_cli(), ["models", "compare", "nope", "--against",
                                          str(good)], env=env)
    assert missing.exit_code == 2 and "nope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("stage", ["reading", "scoring"])
def test_a_failing_traffic_comparison_never_fails_the_retrain(
        retrain, retrain_settings, db_session_factory, bad_model_dir, traffic, monkeypatch,
        stage):
    """Recent traffic only informs: a message no model can take (the service leaves such a
    message pending) or a database error reading them is said, and the gate still decides."""
    from sqlalchemy.exc import OperationalError

    _install(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])

    def scoring_fails(models, texts):
        raise ValueError("cannot tokenize 'a private SMS text'")

    def reading_fails(session, **kwargs):
        raise OperationalError("SELECT messages.body ...", {}, Exception("canceling statement"))

    if stage == "scoring":
        monkeypatch.setattr(traffic_diff, "scores", scoring_fails)
    else:
        monkeypatch.setattr(traffic_diff, "recent_traffic", reading_fails)
    lines = []
    outcome = retrain(log=lines.append)
    assert outcome.status == "promoted", outcome.summary  # a better candidate than the bad one
    error = "ValueError" if stage == "scoring" else "OperationalError"
    changes_json = (outcome.report_path.parent / "changes.json").read_text()
    assert json.loads(changes_json)["traffic"] == {"error": error, "stage": stage}
    report = outcome.report_path.read_text()
    assert f"## Recent traffic: not compared: {stage} the messages failed ({error})" in report
    assert "private SMS" not in changes_json + report
    assert _last_run_counts(db_session_factory)["traffic"] == {"error": error, "stage": stage}
    assert any(line.startswith(f"retrain: {stage} recent traffic failed ({error}")
               for line in lines), lines


@pytest.mark.parametrize("days", ["nan", "NaN", "-nan"])
def test_models_compare_refuses_days_that_are_not_a_number(tmp_path, days):
    """click's FloatRange lets NaN through; timedelta(days=nan) was a traceback."""
    result = CliRunner().invoke(build_cli(), ["models", "compare", "v1", "--days", days],
                                env={"SPAMGUARD_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert f"'--days': {days!r} is not a number" in result.stderr


def test_models_compare_against_another_version_does_not_call_it_active(
        retrain_settings, db_session_factory, bad_model_dir, tiny_model_dir, traffic):
    bad = _install(retrain_settings, db_session_factory, bad_model_dir)
    good = copy_version(tiny_model_dir, retrain_settings.models_dir)
    env = {"SPAMGUARD_HOME": str(retrain_settings.home),
           "SPAMGUARD_DATABASE_URL": retrain_settings.database_url}
    runner = CliRunner()
    shown = runner.invoke(build_cli(), ["models", "compare", bad, "--against", str(good)],
                          env=env)
    assert shown.exit_code == 0, shown.output
    good_id = json.loads((good / "model.json").read_text())["version"]
    assert f"| | {good_id} | {bad} |" in shown.stdout  # the active one is the other side
    assert "(active)" not in shown.stdout and "the active model" not in shown.stdout
    assert f"as {good_id} said" in shown.stdout
    assert json.loads(runner.invoke(build_cli(), [
        "models", "compare", bad, "--against", str(good), "--json"], env=env).stdout
    )["active_served"] is False
    named = runner.invoke(build_cli(), ["models", "compare", str(good), "--against", bad],
                          env=env)  # the active version, named: still the active one
    assert f"| | {bad} (active) |" in named.stdout


def test_a_limit_that_cuts_the_period_short_is_said(db_session, traffic, monkeypatch):
    """With more messages than the limit, those compared span less than the days asked:
    the summary must not say "since <a week ago>" of what is the last hour or so."""
    monkeypatch.setattr(traffic_diff, "scores", lambda models, texts: [
        np.full(len(texts), 0.2) for _ in models])
    model = _Fixed("v", {})
    whole = traffic_diff.compare(traffic_diff.recent_traffic(db_session, days=7, limit=100),
                                 model, model)
    assert whole["in_period"] == 6
    assert traffic_diff.summary(whole).startswith("on 6 recent messages (since ")
    recent = traffic_diff.recent_traffic(db_session, days=7, limit=2)
    assert recent.in_period == 6  # six of the week that no rule labelled
    hour_ago = utcnow() - timedelta(hours=1)
    assert abs((recent.oldest - hour_ago).total_seconds()) < 60
    cut = traffic_diff.compare(recent, model, model)
    assert cut["in_period"] == 6 and cut["messages"] == 2
    assert traffic_diff.summary(cut).startswith(
        f"on the newest 2 of 6 messages since {recent.since:%Y-%m-%d} (received from "
        f"{recent.oldest:%Y-%m-%d %H:%M} UTC) 0 verdicts would change")
    assert f"of 6 in the period, so only those received from {cut['oldest']}" in "\n".join(
        traffic_diff.render_markdown(cut))


def test_copies_of_one_text_are_named_once(monkeypatch):
    """A campaign's copies (or media-only MMS, all with an empty text) score alike: named
    once each, they leave room for the other changes."""
    texts = ["WIN NOW"] * 30 + ["", "", "call me"]
    recent = traffic_diff.Traffic(since=utcnow(), days=7, limit=100,
                                  ids=list(range(1, 34)), texts=texts,
                                  reviewed=[None] * 33, left_out_by_rule=0)
    old = _Fixed("old", {"WIN NOW": 0.1, "": 0.2, "call me": 0.45})
    new = _Fixed("new", {"WIN NOW": 0.9, "": 0.6, "call me": 0.55})
    monkeypatch.setattr(traffic_diff, "scores", lambda models, texts: [
        np.array([m.probabilities[t] for t in texts]) for m in models])
    diff = traffic_diff.compare(recent, old, new)
    assert diff["ham_to_spam"]["count"] == 33 and diff["ham_to_spam"]["texts"] == 3
    assert diff["ham_to_spam"]["message_ids"] == [1, 31, 33]  # most moved first, once each
    assert ("- ham to spam: 33, 3 distinct texts (reviewed as spam: 0; as the active model "
            "said: 0); message ids, most changed first, one per text: 1, 31, 33"
            ) in traffic_diff.render_markdown(diff)


def test_retrain_says_when_there_was_no_recent_traffic(
        retrain, retrain_settings, db_session_factory, bad_model_dir):
    _install(retrain_settings, db_session_factory, bad_model_dir)
    store_reviews(db_session_factory, [(text, "ham") for text in NEW_HAM])
    lines = []
    with session_scope(db_session_factory) as session:  # the reviewed ones are old news
        for message in session.scalars(select(Message)):
            message.received_at = utcnow() - timedelta(days=30)
    outcome = retrain(log=lines.append)
    diff = json.loads((outcome.report_path.parent / "changes.json").read_text())["traffic"]
    assert diff["messages"] == 0 and diff["changed"] == 0
    assert "## Recent traffic: no recent messages since " in outcome.report_path.read_text()
    assert any(line.startswith("retrain: no recent messages since ") for line in lines)
