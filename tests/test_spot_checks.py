"""Spot checks: a uniform random draw of the active model's unreviewed verdicts, recorded
with the verdict it checked, and the wrong share with its interval."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from spamguard.db import session_scope
from spamguard.models import Message, Review
from spamguard.services import registry, reviews, spot_checks

CURRENT = re.compile(r'id="current" data-message-id="(\d+)"')


@pytest.fixture
def active_id(app, db_session_factory) -> str:
    with session_scope(db_session_factory) as session:
        return registry.active_version(session).id


@pytest.fixture
def verdicts(add_messages, active_id):
    """Four spam and three ham verdicts of the active model, one spam verdict of no model
    (an older one's), one reviewed spam verdict and one pending message."""

    def add():
        spam = add_messages(*[(f"win {i}", 0.9) for i in range(4)], model_version_id=active_id)
        ham = add_messages(*[(f"hi {i}", 0.1) for i in range(3)], model_version_id=active_id)
        other = add_messages(("old verdict", 0.95))
        reviewed = add_messages(("seen", 0.97), model_version_id=active_id,
                                review_label="spam")
        pending = add_messages("not yet")
        return spam, ham, other + reviewed + pending

    return add


def shown_id(client, verdict: str = "spam") -> int | None:
    page = client.get(f"/admin/spot-check?verdict={verdict}").get_data(as_text=True)
    match = CURRENT.search(page)
    return int(match.group(1)) if match else None


def test_draw_is_uniform_over_the_active_models_unreviewed_verdicts_of_a_label(
        verdicts, db_session_factory):
    spam, ham, never = verdicts()
    rng = random.Random(3)
    with session_scope(db_session_factory) as session:
        drawn = Counter(spot_checks.draw(session, "spam", rng=rng).id for _ in range(800))
        assert set(drawn) == set(spam)  # never a ham, reviewed, pending or other model's one
        assert min(drawn.values()) > 150  # 200 expected each
        assert {spot_checks.draw(session, "ham", rng=rng).id for _ in range(100)} == set(ham)
        with pytest.raises(ValueError, match="verdict must be one of"):
            spot_checks.draw(session, "maybe")


def test_nothing_to_draw_without_an_active_model(app_without_model, db_session_factory):
    with session_scope(db_session_factory) as session:
        assert spot_checks.draw(session, "spam") is None


def test_estimates_count_current_labels_and_give_a_wilson_interval(
        verdicts, db_session_factory, active_id, make_user):
    spam, ham, _ = verdicts()
    moderator = make_user("sam")
    with session_scope(db_session_factory) as session:
        for mid, label in zip(spam[:3], ["spam", "ham", "spam"], strict=True):
            reviews.add_review(session=session, message_id=mid, label=label, user_id=moderator,
                               spot_check_of="spam")
        reviews.add_review(session=session, message_id=ham[0], label="ham",
                           user_id=moderator, spot_check_of="ham")
        # A queue review is not a spot check, and does not count.
        reviews.add_review(session=session, message_id=ham[1], label="spam", user_id=moderator)
    with session_scope(db_session_factory) as session:
        spam_est, ham_est = spot_checks.estimates(session, active_id)
    assert (spam_est.verdict, spam_est.checked, spam_est.wrong) == ("spam", 3, 1)
    assert spam_est.low == pytest.approx(0.0615, abs=1e-3)  # Wilson 95% for 1 of 3
    assert spam_est.high == pytest.approx(0.7923, abs=1e-3)
    assert (ham_est.checked, ham_est.wrong, ham_est.wrong_share) == (1, 0, 0.0)
    # A later correction of a spot-checked message counts: its current label is the truth.
    with session_scope(db_session_factory) as session:
        reviews.add_review(session=session, message_id=spam[0], label="ham", user_id=moderator)
    with session_scope(db_session_factory) as session:
        spam_est, _ = spot_checks.estimates(session, active_id)
        assert (spam_est.checked, spam_est.wrong) == (3, 2)
        assert spot_checks.estimates(session, "no-such-version")[0].low is None


def test_spot_check_page_keeps_its_draw_and_records_the_verdict_checked(
        moderator_client, verdicts, db_session_factory):
    spam, _, _ = verdicts()
    first = shown_id(moderator_client)
    assert first in spam
    assert shown_id(moderator_client) == first  # a reload does not draw again
    page = moderator_client.post("/admin/spot-check/decide", follow_redirects=True, data={
        "message_id": first, "label": "ham", "verdict": "spam", "seen": "none"})
    text = page.get_data(as_text=True)
    assert f"Message {first}: ham (spot check of a spam verdict)" in text
    second = CURRENT.search(text).group(1)
    assert int(second) in set(spam) - {first}
    with session_scope(db_session_factory) as session:
        review = session.query(Review).filter_by(message_id=first).one()
        assert (review.label, review.spot_check_of) == ("ham", "spam")
        assert session.get(Message, first).review_label == "ham"
    assert re.search(r"<td>spam</td><td class=\"num\">1</td><td class=\"num\">1</td>", text)


def test_only_the_drawn_message_is_recorded_as_a_spot_check(
        moderator_client, verdicts, db_session_factory):
    spam, ham, _ = verdicts()
    drawn = shown_id(moderator_client)
    other = next(m for m in spam if m != drawn)
    for data in ({"message_id": other, "verdict": "spam"},  # not the one drawn
                 {"message_id": drawn, "verdict": "ham"},  # drawn for the other tab
                 {"message_id": "x", "verdict": "spam"}):
        page = moderator_client.post("/admin/spot-check/decide", follow_redirects=True,
                                     data={**data, "label": "spam", "seen": "none"})
        assert "Not recorded" in page.get_data(as_text=True)
    assert shown_id(moderator_client) == drawn  # looking at the ham tab did not redraw
    bad = moderator_client.post("/admin/spot-check/decide", follow_redirects=True, data={
        "message_id": drawn, "verdict": "spam", "label": "maybe", "seen": "none"})
    assert "Not recorded: label must be one of" in bad.get_data(as_text=True)
    assert moderator_client.get("/admin/spot-check?verdict=maybe").status_code == 400
    with session_scope(db_session_factory) as session:
        assert session.query(Review).count() == 0


def test_skip_draws_again_and_is_counted(moderator_client, verdicts):
    verdicts()
    shown_id(moderator_client)
    page = moderator_client.post("/admin/spot-check/skip", data={"verdict": "spam"},
                                 follow_redirects=True).get_data(as_text=True)
    assert "You skipped 1" in page


def test_someone_else_labelling_the_draw_first_is_a_conflict(
        app, moderator_client, verdicts, db_session_factory, make_user):
    verdicts()
    drawn = shown_id(moderator_client)
    with session_scope(db_session_factory) as session:
        reviews.add_review(session=session, message_id=drawn, label="spam",
                           user_id=make_user("ann"))
    page = moderator_client.post("/admin/spot-check/decide", follow_redirects=True, data={
        "message_id": drawn, "label": "ham", "verdict": "spam", "seen": "none"})
    text = page.get_data(as_text=True)
    assert "ann labelled message" in text and "your ham label was not saved" in text
    assert int(CURRENT.search(text).group(1)) != drawn
    with session_scope(db_session_factory) as session:
        assert session.query(Review).filter(Review.spot_check_of.is_not(None)).count() == 0


def test_viewer_sees_estimates_but_draws_nothing(viewer_client, verdicts):
    spam, _, _ = verdicts()
    page = viewer_client.get("/admin/spot-check").get_data(as_text=True)
    assert "How often the active model" in page
    assert CURRENT.search(page) is None
    assert viewer_client.post("/admin/spot-check/decide", data={
        "message_id": spam[0], "label": "spam", "verdict": "spam"}).status_code == 403


def test_sms_text_is_escaped(moderator_client, add_messages, active_id):
    add_messages(("<script>alert(1)</script>", 0.9), model_version_id=active_id)
    page = moderator_client.get("/admin/spot-check").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_reviews_refuse_an_unknown_spot_check_label(verdicts, db_session_factory):
    spam, _, _ = verdicts()
    with session_scope(db_session_factory) as session, \
            pytest.raises(reviews.ReviewError, match="spot_check_of must be one of"):
        reviews.add_review(session=session, message_id=spam[0], label="spam", user_id=None,
                           spot_check_of="maybe")


def test_dashboard_shows_the_active_models_spot_check_estimates(
        viewer_client, verdicts, db_session_factory, make_user):
    spam, _, _ = verdicts()
    page = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    assert page.count("not spot-checked yet") == 2
    moderator = make_user("sam")
    with session_scope(db_session_factory) as session:
        for mid, label in zip(spam, ["spam", "ham", "spam", "spam"], strict=True):
            reviews.add_review(session=session, message_id=mid, label=label, user_id=moderator,
                               spot_check_of="spam")
    page = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    assert "25.0% of 4 spot-checked (4.6% – 69.9%)" in page  # Wilson 95% for 1 of 4
    assert page.count("not spot-checked yet") == 1
