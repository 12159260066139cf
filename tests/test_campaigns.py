"""Campaigns: grouping by embedding similarity, rebuild, labelling a whole campaign, page."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from spamguard.models import Campaign, Message
from spamguard.services import campaigns
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


def test_rebuild_groups_and_labels_whole_campaign(db_session, spam_wave, make_user):
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
    # A rebuild keeps the moderators' decision on the campaign.
    campaigns.rebuild_campaigns(session=db_session, encoder=fake_encoder, min_size=2)
    db_session.commit()
    assert campaigns.list_campaigns(db_session)[0].label == "spam"
    assert campaigns.count_campaigns(db_session) == 2


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
    assert "All 3 spam" not in viewer_client.get("/admin/campaigns").get_data(as_text=True)
    assert viewer_client.post(f"/admin/campaigns/{top}/label",
                              data={"label": "spam"}).status_code == 403
    response = moderator_client.post(f"/admin/campaigns/{top}/label", data={"label": "ham"},
                                     follow_redirects=True)
    assert "3 messages labelled ham" in response.get_data(as_text=True)
    assert moderator_client.get("/admin/campaigns?order=recent").status_code == 200
    assert moderator_client.get("/admin/campaigns?order=weird").status_code == 400


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
    assert "1 campaigns holding 3 of 4 messages" in result.output
