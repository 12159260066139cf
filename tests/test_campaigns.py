"""Campaigns: grouping by embedding similarity, rebuild, labelling a whole campaign, page."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import event, select

from spamguard.models import Campaign, Message
from spamguard.services import campaigns, reviews
from spamguard.sqltypes import utcnow

# Two near-identical spam texts, one other spam, and ham: a fake encoder puts the first
# two close together (similarity ~0.995) and the rest far apart.
VECTORS = {"prize a": [1.0, 0.0, 0.0], "prize b": [0.99, 0.1, 0.0],
           "loan offer": [0.0, 1.0, 0.0], "lunch?": [0.0, 0.0, 1.0]}


def fake_encoder(texts):
    return np.asarray([VECTORS[t.split(" #")[0]] for t in texts], dtype=np.float32)


def test_group_vectors_links_close_rows():
    vectors = np.asarray([[1, 0], [0.99, 0.05], [0, 1], [-1, 0], [0.02, 1]], dtype=np.float32)
    groups = campaigns.group_vectors(vectors, similarity=0.95)
    assert groups[0] == groups[1] and groups[2] == groups[4]
    assert len({groups[0], groups[2], groups[3]}) == 3
    assert campaigns.group_vectors(np.zeros((0, 2))).size == 0


def test_group_vectors_crosses_blocks(monkeypatch):
    monkeypatch.setattr(campaigns, "BLOCK", 2)
    vectors = np.asarray([[1, 0], [0, 1], [0, 1], [1, 0.01], [0, 1]], dtype=np.float32)
    groups = campaigns.group_vectors(vectors, similarity=0.99)
    assert groups[0] == groups[3] and groups[1] == groups[2] == groups[4]


@pytest.fixture
def spam_wave(add_messages):
    return add_messages("prize a #1", "prize a #2", "prize b #3", "loan offer #4",
                        "loan offer #5", "lunch? #6")


def test_rebuild_groups_and_labels_whole_campaign(db_session, spam_wave, make_user,
                                                  add_messages):
    result = campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder,
                                         similarity=0.92, min_size=2)
    db_session.commit()
    assert (result.messages, result.campaigns, result.grouped_messages) == (6, 2, 5)
    biggest = campaigns.list_campaigns(db_session, order="size")[0]
    assert biggest.size == 3 and biggest.representative_message_id == spam_wave[0]
    members = db_session.scalars(select(Message.id).where(Message.campaign_id == biggest.id))
    assert sorted(members) == spam_wave[:3]
    count = campaigns.label_campaign(session=db_session, campaign_id=biggest.id, label="spam",
                                     user_id=make_user("mo"))
    db_session.commit()
    assert count == 3
    assert [db_session.get(Message, i).review_label for i in spam_wave] == \
        ["spam", "spam", "spam", None, None, None]
    # A rebuild keeps the moderators' decision on the campaign...
    campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder, min_size=2)
    db_session.commit()
    assert campaigns.list_campaigns(db_session)[0].label == "spam"
    assert campaigns.count_campaigns(db_session) == 2
    # ...until an unreviewed member joins: then the campaign asks for a decision again.
    add_messages("prize a #7")
    campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder, min_size=2)
    db_session.commit()
    grown = campaigns.list_campaigns(db_session)[0]
    assert (grown.size, grown.label) == (4, None)


def test_messages_without_words_join_no_campaign(db_session, add_messages, tiny_classifier):
    # Emoji all read as one unknown token and punctuation normalises away: without the
    # exclusion these five unrelated replies would be one campaign.
    add_messages("😂", "❤️", "😂😂", "??", "...", "WIN a FREE phone now call 0800",
                 "win a free phone NOW call 0899", "win a free phone now, call 0811")
    result = campaigns.rebuild_campaigns(session=db_session,
                                         encoder=lambda t: tiny_classifier.encoder(t),
                                         days=None)
    assert (result.campaigns, result.grouped_messages) == (1, 3)
    grouped = db_session.scalars(select(Message.body).where(Message.campaign_id.is_not(None)))
    assert all("phone" in body for body in grouped)


def test_rebuild_respects_min_size_and_window(db_session, spam_wave):
    result = campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder, min_size=3)
    assert result.campaigns == 1
    later = utcnow() + timedelta(days=60)  # every message is now older than the window
    result = campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder, now=later)
    assert result.messages == 0
    assert db_session.scalars(select(Campaign)).first() is None


def test_rebuild_with_the_real_encoder_path(db_session, add_messages, tiny_classifier):
    add_messages("WIN a FREE phone now call 0800", "win a free phone NOW call 0899",
                 "win a free phone now, call 0811")
    result = campaigns.rebuild_campaigns(session=db_session,
                                         encoder=lambda t: tiny_classifier.encoder(t), days=None)
    assert result.distinct_texts == 1 and result.campaigns == 1


def test_campaign_page_and_label_button(moderator_client, viewer_client, db_session_factory,
                                        spam_wave):
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=2)
        session.commit()
        top = campaigns.list_campaigns(session)[0].id
    page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
    assert "prize a #1" in page and "All 3 spam" in page
    # From a live audit: a page beyond the last said "No campaigns yet".
    beyond = moderator_client.get("/admin/campaigns?page=99999&order=recent")
    assert beyond.status_code == 302
    assert beyond.headers["Location"].endswith("/admin/campaigns?order=recent&page=1")
    total = len(campaigns.list_campaigns(db_session_factory()))
    assert f"{total} group{'' if total == 1 else 's'} of near-identical messages" in page
    assert "All 3 spam" not in viewer_client.get("/admin/campaigns").get_data(as_text=True)
    assert viewer_client.post(f"/admin/campaigns/{top}/label",
                              data={"label": "spam"}).status_code == 403
    assert f'name="representative" value="{spam_wave[0]}"' in page
    assert moderator_client.post(f"/admin/campaigns/{top}/label",
                                 data={"label": "ham"}).status_code == 400  # no fingerprint
    other_digits = {"label": "ham", "size": "\u0663", "representative": str(spam_wave[0]),
                    "reviewed": "none"}  # int() read "٣" as 3 (a live audit)
    assert moderator_client.post(f"/admin/campaigns/{top}/label",
                                 data=other_digits).status_code == 400
    response = moderator_client.post(
        f"/admin/campaigns/{top}/label",
        data={"label": "ham", "size": "3", "representative": str(spam_wave[0]),
              "reviewed": "none"}, follow_redirects=True)
    assert "3 messages labelled ham" in response.get_data(as_text=True)
    assert moderator_client.get("/admin/campaigns?order=recent").status_code == 200
    assert moderator_client.get("/admin/campaigns?order=weird").status_code == 400


def test_each_campaign_says_how_its_messages_stand(moderator_client, db_session_factory,
                                                   spam_wave, make_user):
    """A campaign card counts its messages by model verdict and by moderator label, so a
    group already handled one by one, or one the model calls ham, shows as such (a browser
    audit: a fully reviewed campaign showed only "–")."""
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=2)
        session.commit()
        top = campaigns.list_campaigns(session)[0].id
        first, second, third = (session.get(Message, i) for i in spam_wave[:3])
        first.model_label = second.model_label = "spam"
        third.model_label = "ham"
        first.review_label = "spam"
        session.commit()
        counts = campaigns.label_counts(session, [top])[top]
    assert (counts.model, counts.reviewed, counts.unreviewed) == (
        {"spam": 2, "ham": 1}, {"spam": 1}, 2)
    page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
    card = page[page.index(f'data-campaign-id="{top}"'):]
    card = " ".join(card[:card.index("</article>")].split())
    assert "Model: 2 spam · 1 ham. Reviewed: 1 spam; 2 not yet." in card
    others = [c.id for c in campaigns.list_campaigns(db_session_factory()) if c.id != top]
    other = page[page.index(f'data-campaign-id="{others[0]}"'):]
    assert "Model: 2 pending. Reviewed: none yet." in " ".join(other.split())
    assert campaigns.label_counts(db_session_factory(), []) == {}


def test_a_page_from_before_a_rebuild_labels_nothing(moderator_client, db_session_factory,
                                                      add_messages):
    """A rebuild replaces the campaigns and may reuse ids: the old page's button is refused."""
    ham = add_messages("lunch? #1", "lunch? #2")
    spam = add_messages("loan offer #3", "loan offer #4", "loan offer #5")
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=3)
        session.commit()
        (shown,) = campaigns.list_campaigns(session)
        seen = (str(shown.size), str(shown.representative_message_id))
    ham += add_messages("lunch? #6")
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=3)
        session.commit()
        now = {c.id: c.representative_message_id for c in campaigns.list_campaigns(session)}
    response = moderator_client.post(
        f"/admin/campaigns/{shown.id}/label",
        data={"label": "spam", "size": seen[0], "representative": seen[1],
              "reviewed": "none"}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "nothing was labelled" in text or f"no campaign {shown.id}" in text, now
    with db_session_factory() as session:
        assert all(session.get(Message, i).review_label is None for i in ham + spam)


def test_a_page_from_before_someone_labelled_the_campaign_labels_nothing(
        moderator_client, db_session_factory, spam_wave, make_user):
    """Two pages of the campaigns list: "All 3 spam" from one, then "All 3 ham" from the
    older one is refused (it silently relabelled all 3 before), as is a label from a page
    loaded before one of its messages was labelled in the queue; a fresh page labels."""
    from tests.fixtures_admin import TOKEN

    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=2)
        session.commit()
        top = campaigns.list_campaigns(session)[0].id
        members = list(session.scalars(select(Message.id).where(Message.campaign_id == top)))

    def form() -> dict:
        page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
        start = page.index(f'action="/admin/campaigns/{top}/label"')
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page[start:start + 900]))
        assert TOKEN.search(page)
        return {k: v for k, v in fields.items() if k in ("size", "representative", "reviewed")}

    stale = form()
    assert stale["reviewed"] == "none"
    moderator_client.post(f"/admin/campaigns/{top}/label", data={"label": "spam", **form()})
    refused = moderator_client.post(f"/admin/campaigns/{top}/label", follow_redirects=True,
                                    data={"label": "ham", **stale}).get_data(as_text=True)
    assert f"messages of campaign {top} were labelled since the page was loaded" in refused
    with db_session_factory() as session:
        assert {session.get(Message, i).review_label for i in members} == {"spam"}
        before = form()
        reviews.add_review(session=session, message_id=members[1], label="ham",
                           user_id=make_user("queue-moderator"))
        session.commit()
    refused = moderator_client.post(f"/admin/campaigns/{top}/label", follow_redirects=True,
                                    data={"label": "spam", **before}).get_data(as_text=True)
    assert "nothing was labelled" in refused
    done = moderator_client.post(f"/admin/campaigns/{top}/label", follow_redirects=True,
                                 data={"label": "spam", **form()}).get_data(as_text=True)
    assert "3 messages labelled spam" in done


def test_group_vectors_matches_all_pairs_linking(monkeypatch):
    """Blockwise grouping by component gives the partition of linking every similar pair."""
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(3)
    for block in (1, 7, 64):
        monkeypatch.setattr(campaigns, "BLOCK", block)
        centers = rng.normal(size=(5, 4))
        vectors = centers[rng.integers(0, 5, 150)] + rng.normal(scale=0.3, size=(150, 4))
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        expected = connected_components(unit @ unit.T >= 0.9, directed=False)[1]
        got = campaigns.group_vectors(vectors, similarity=0.9)
        assert len(set(zip(got, expected, strict=True))) == len(set(expected)) == len(set(got))
        assert sorted(set(got)) == list(range(len(set(got))))


def test_concurrent_rebuilds_do_not_duplicate_campaigns(db_session_factory, add_messages,
                                                       db_backend):
    import threading

    add_messages("loan offer #1", "loan offer #2", "loan offer #3", "prize a #4",
                 "prize b #5", "prize a #6")
    first_encoding, release = threading.Event(), threading.Event()
    second_encoded, errors = [], []

    def first_encoder(texts):
        first_encoding.set()
        release.wait(timeout=30)
        return fake_encoder(texts)

    def second_encoder(texts):
        second_encoded.append(release.is_set())
        return fake_encoder(texts)

    def rebuild(encoder):
        try:
            with db_session_factory() as session:
                campaigns.rebuild_campaigns(session=session, encoder=encoder, min_size=3)
                session.commit()
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(repr(exc))

    first = threading.Thread(target=rebuild, args=(first_encoder,))
    first.start()
    assert first_encoding.wait(timeout=30)
    second = threading.Thread(target=rebuild, args=(second_encoder,))
    second.start()
    second.join(timeout=1.0)  # PostgreSQL: waits for the first rebuild's lock
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not errors
    if db_backend == "postgresql":
        assert second_encoded == [True]  # it read only after the first had committed
    with db_session_factory() as session:
        found = [(c.size, session.query(Message).filter(Message.campaign_id == c.id).count())
                 for c in session.scalars(select(Campaign))]
    assert sorted(found) == [(3, 3), (3, 3)]


def test_rebuild_button_starts_background_job(moderator_client, monkeypatch):
    from spamguard.services import retrain_jobs

    started = []
    monkeypatch.setattr(retrain_jobs, "launch",
                        lambda args, **kw: started.append(args) or 4242)
    response = moderator_client.post("/admin/campaigns/rebuild", follow_redirects=True)
    assert started == [retrain_jobs.CAMPAIGN_ARGS] and "4242" in response.get_data(as_text=True)


def test_cli_campaigns_rebuild(monkeypatch, tmp_path, migrated_db_url, install_model,
                               tiny_model_dir, add_messages):
    from click.testing import CliRunner

    from spamguard.cli import build_cli

    install_model(tiny_model_dir)
    add_messages("Free entry!! text WIN to 80086", "free entry text win to 80099",
                 "FREE ENTRY, text WIN to 80012", "see you at 6")
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    result = CliRunner().invoke(build_cli(), ["campaigns", "rebuild", "--days", "0"])
    assert result.exit_code == 0, result.output
    assert "1 campaign holding 3 of 4 messages (2 distinct texts)" in result.output
    assert CliRunner().invoke(build_cli(), ["campaigns", "rebuild"]).exit_code == 0  # released
    # A date before year 1 was a traceback (a helper's fuzzing): a usage error now.
    huge = CliRunner().invoke(build_cli(), ["campaigns", "rebuild", "--days", "1000000"])
    assert huge.exit_code == 2 and "0<=x<=36500" in huge.output and "Traceback" not in huge.output


def test_one_campaign_rebuild_at_a_time(monkeypatch, tmp_path, migrated_db_url,
                                        db_session_factory, moderator_client, install_model,
                                        tiny_model_dir):
    """Each rebuild embeds and compares every recent message: a second one at once (the
    button pressed again, cron meanwhile) is refused instead of doubling the work."""
    from click.testing import CliRunner

    from spamguard.cli import build_cli
    from spamguard.services import locks, retrain_jobs

    install_model(tiny_model_dir)
    started = []
    monkeypatch.setattr(retrain_jobs, "launch", lambda args, **kw: started.append(args) or 1)
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    with locks.acquire(session_factory=db_session_factory, name=retrain_jobs.CAMPAIGN_LOCK,
                       ttl=600):
        page = moderator_client.post("/admin/campaigns/rebuild", follow_redirects=True)
        cli = CliRunner().invoke(build_cli(), ["campaigns", "rebuild"])
    assert started == []
    assert "Not started: a campaign rebuild is already running (lock &#39;campaigns&#39; is " \
           "held by pid" in page.get_data(as_text=True)
    assert cli.exit_code == 4
    assert "a campaign rebuild is already running: lock 'campaigns' is held by" in cli.output
    moderator_client.post("/admin/campaigns/rebuild")
    assert started == [retrain_jobs.CAMPAIGN_ARGS]


def test_campaigns_compare_the_last_layer_whatever_the_head_reads(db_session, install_model,
                                                                   tiny_model_dir,
                                                                   tiny_backbone, tmp_path):
    """The default head reads three layers (mean-last3); earlier layers' means are alike
    for any two texts, so campaigns take the last layer's part (what 0.92 was chosen on)."""
    import json

    from spamguard.config import load_settings
    from spamguard.ml.embeddings import encode
    from spamguard.services.campaigns import active_encoder

    assert json.loads((tiny_model_dir / "model.json").read_text())["pooling"] == "mean-last3"
    install_model(tiny_model_dir)
    encoder = active_encoder(session=db_session,
                             settings=load_settings({"home": tmp_path / "home"}))
    texts = ["Free entry!! text WIN to 80086", "see you at 6"]
    np.testing.assert_allclose(encoder(texts), encode(tiny_backbone, texts, pooling="mean"),
                               atol=1e-5)


@pytest.mark.parametrize(("pooling", "part"), [("mean-last3", slice(64, 96)),
                                               ("mean-cls", slice(0, 32)),
                                               ("mean", slice(0, 32))])
def test_last_layer_mean_finds_its_part(tiny_backbone, pooling, part):
    from spamguard.ml.embeddings import encode, last_layer_mean

    texts = ["short", "a much longer message with many more words"]
    pooled = encode(tiny_backbone, texts, pooling=pooling)
    np.testing.assert_array_equal(last_layer_mean(pooled, pooling, 32), pooled[:, part])
    np.testing.assert_allclose(pooled[:, part], encode(tiny_backbone, texts, pooling="mean"),
                               atol=1e-5)


def test_a_queue_decision_during_a_campaign_label_is_refused_not_overwritten(
        db_backend, db_engine, db_session_factory, spam_wave, make_user):
    """A queue decision on one of a campaign's messages, made while "All 3 spam" (from a
    page showing no review) runs: one of the two must be refused. label_campaign reads the
    latest review before any message row is locked (SQLite: reads take no lock and FOR
    UPDATE is ignored), so on SQLite the queue decision commits in between and is silently
    replaced by the campaign label; on PostgreSQL the two deadlock (the queue decision's
    foreign-key check waits for the campaign row label_campaign holds FOR UPDATE, and
    bulk_relabel then waits for the message row): a 500 for one moderator."""
    import threading

    mo, queue_mo = make_user("mo"), make_user("queue-mo")
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, encoder=fake_encoder, min_size=2)
        session.commit()
        top = campaigns.list_campaigns(session)[0]
        seen = (top.size, top.representative_message_id, None)  # nobody reviewed any yet
        members = sorted(session.scalars(select(Message.id)
                                         .where(Message.campaign_id == top.id)))
    outcome: dict[str, str] = {}

    def queue_decision():  # another moderator, in the queue
        try:
            with db_session_factory() as other:
                reviews.add_review(session=other, message_id=members[1], label="ham",
                                   user_id=queue_mo, seen=reviews.Seen(None))
                other.commit()
            outcome["queue"] = "saved"
        except reviews.ReviewConflict:
            outcome["queue"] = "refused"
        except Exception as exc:  # noqa: BLE001
            outcome["queue"] = f"error: {type(exc).__name__}: {str(exc)[:100]}"

    worker = threading.Thread(target=queue_decision)
    fired = []

    def after(conn, cursor, statement, params, context, many):
        # Right after label_campaign's "latest review" check has run.
        if not fired and "max(reviews.id)" in statement and "GROUP BY" in statement:
            fired.append(statement)
            worker.start()
            worker.join(1.5)  # done, or waiting for a lock of ours

    with db_session_factory() as session:
        event.listen(session.connection(), "after_cursor_execute", after)
        try:
            campaigns.label_campaign(session=session, campaign_id=top.id, label="spam",
                                     user_id=mo, seen=seen)
            session.commit()
            outcome["campaign"] = "labelled"
        except campaigns.SpamguardError:
            session.rollback()
            outcome["campaign"] = "refused"
        except Exception as exc:  # noqa: BLE001
            session.rollback()
            outcome["campaign"] = f"error: {type(exc).__name__}: {str(exc)[:100]}"
    worker.join(60)
    assert fired
    assert not any(v.startswith("error") for v in outcome.values()), outcome
    assert outcome != {"queue": "saved", "campaign": "labelled"}, (
        "the queue decision was saved, then silently replaced by the campaign label")


def test_the_page_says_when_the_last_rebuild_finished_or_why_it_failed(
        monkeypatch, tmp_path, migrated_db_url, install_model, tiny_model_dir, add_messages,
        moderator_client, db_session_factory):
    """Each rebuild (the button's job, or cron) records how it went; the campaigns page
    shows the latest once none is running, and says when one running has finished."""
    from click.testing import CliRunner

    from spamguard.admin.base import format_when
    from spamguard.cli import build_cli
    from spamguard.errors import ModelError
    from spamguard.models import CampaignRebuild
    from spamguard.services import locks, retrain_jobs

    install_model(tiny_model_dir)
    add_messages("Free entry!! text WIN to 80086", "free entry text win to 80099",
                 "FREE ENTRY, text WIN to 80012", "see you at 6")
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)

    def latest():
        with db_session_factory() as session:
            return session.query(CampaignRebuild).order_by(CampaignRebuild.id.desc()).first()

    def said():
        page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
        found = re.findall(r'<p class="rebuilt[^"]*" role="status">(.*?)</p>', page)
        return found, page

    assert said()[0] == []  # no rebuild yet
    assert CliRunner().invoke(build_cli(), ["campaigns", "rebuild", "--days", "0"]
                              ).exit_code == 0
    row = latest()
    assert (row.status, row.campaigns, row.grouped_messages, row.messages) == (
        "finished", 1, 3, 4)
    assert said()[0] == [f"Rebuild finished at {format_when(row.finished_at)}: 1 campaign "
                         f"holding 3 of 4 messages."]

    def broken(**_kwargs):
        raise ModelError("no active model version")

    monkeypatch.setattr(campaigns, "active_encoder", broken)
    assert CliRunner().invoke(build_cli(), ["campaigns", "rebuild"]).exit_code == 2
    row = latest()
    assert (row.status, row.error) == ("failed", "no active model version")
    assert said()[0] == [f"Rebuild failed at {format_when(row.finished_at)}: no active model "
                         f"version."]
    with db_session_factory() as session:  # the failed one changed nothing
        assert session.scalars(select(Campaign.size)).all() == [3]
    # While one runs: no outcome yet, and the page says it will say when there is one
    # (admin.js asks; the page never reloads itself, WCAG 2.2.1).
    with locks.acquire(session_factory=db_session_factory, name=retrain_jobs.CAMPAIGN_LOCK,
                       ttl=600):
        found, page = said()
        assert found == [] and 'http-equiv="refresh"' not in page
        assert ('<span class="running" role="status" data-poll="5">A rebuild is running; '
                'this page says when it has finished. <a href="/admin/campaigns?order=size&amp;'
                'page=1">Check again</a></span>') in page
    # One whose process died without recording its end (kill -9): said so, once its lock
    # is gone.
    with db_session_factory() as session:
        session.add(CampaignRebuild(status="running"))
        session.commit()
    found, page = said()
    assert len(found) == 1 and "did not finish: its process stopped" in found[0]
    assert 'http-equiv="refresh"' not in page


def test_a_rebuild_the_database_failed_records_the_drivers_first_line_only(
        monkeypatch, tmp_path, migrated_db_url, install_model, tiny_model_dir, add_messages,
        moderator_client, db_session_factory):
    """From a review: the page showed SQLAlchemy's whole text (the SQL, a link, and on
    PostgreSQL the DETAIL line, which quotes the failing row: an SMS body and numbers). It
    says the driver's error and its first line, as the service's log does."""
    from click.testing import CliRunner
    from sqlalchemy import text

    from spamguard.cli import build_cli
    from spamguard.models import CampaignRebuild

    install_model(tiny_model_dir)
    (message_id,) = add_messages("call +447700900123 to claim your secret prize")
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)

    def refused(*, session, **_kwargs):
        session.execute(text("UPDATE messages SET verdict_status = 'bogus' WHERE id = :i"),
                        {"i": message_id})

    monkeypatch.setattr(campaigns, "rebuild_campaigns", refused)
    assert CliRunner().invoke(build_cli(), ["campaigns", "rebuild"]).exit_code == 1
    with db_session_factory() as session:
        error = session.scalars(select(CampaignRebuild.error)).one()
    assert "\n" not in error and "[SQL" not in error and "sqlalche.me" not in error, error
    assert "secret prize" not in error and "447700900123" not in error, error
    assert "check" in error.lower() or "constraint" in error.lower(), error
    page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
    assert "secret prize" not in page.split("<table")[0]
