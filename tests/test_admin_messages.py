"""Message list, filters, bulk relabel with confirmation, detail page."""

from __future__ import annotations

import re

import pytest

from spamguard.models import Message
from spamguard.services import reviews


def test_list_and_filters(viewer_client, add_messages):
    add_messages(("Free prize call now", 0.97), ("lunch at noon?", 0.02))
    page = viewer_client.get("/admin/messages").get_data(as_text=True)
    assert "Free prize call now" in page and "lunch at noon?" in page
    spam = viewer_client.get("/admin/messages?model_label=spam").get_data(as_text=True)
    assert "Free prize" in spam and "lunch" not in spam
    found = viewer_client.get("/admin/messages?q=noon").get_data(as_text=True)
    assert "lunch" in found and "Free prize" not in found
    bad = viewer_client.get("/admin/messages?min_p=lots")
    assert bad.status_code == 400
    assert "“P(spam) from” must be a number" in bad.get_data(as_text=True)
    assert viewer_client.get("/admin/messages?page=0x").status_code == 400
    # From a live audit: int() and float() also read other scripts' digits and "1_0".
    for query in ("page=%D9%A3", "page=1_0", "min_p=%D9%A0.%D9%A9", "max_p=0_5"):
        assert viewer_client.get(f"/admin/messages?{query}").status_code == 400, query
    assert viewer_client.get("/admin/messages?page=-1").status_code == 200  # clamped
    # int() refuses more than 4,300 digits: a 500 (a helper's fuzzing). Clamped too.
    for path in ("/admin/messages", "/admin/campaigns"):
        for digits in ("9" * 5000, "-" + "9" * 5000, "0" * 5000 + "2"):
            answer = viewer_client.get(f"{path}?page={digits}")  # past the end: the last
            assert answer.status_code in (200, 302), path
    for query in ("min_p=nan", "max_p=inf", "campaign_id=1e30", "campaign_id=-3",
                  "until=9999-12-31"):
        assert viewer_client.get(f"/admin/messages?{query}").status_code == 400, query
    campaign = viewer_client.get("/admin/messages?campaign=abc")
    assert campaign.status_code == 400
    assert "campaign must be a positive whole number, not &#39;abc&#39;" in campaign.get_data(
        as_text=True)
    assert viewer_client.get("/admin/messages?campaign=2&campaign_id=3").status_code == 400
    huge = viewer_client.get("/admin/messages?page=99999999999999999999&q=noon")
    assert huge.status_code == 302  # past the end: to the last page, filters kept
    assert huge.headers["Location"].endswith("/admin/messages?page=1&q=noon")
    past = viewer_client.get("/admin/messages?page=99", follow_redirects=True)
    assert past.status_code == 200 and "page 1 of 1 · 2 messages" in past.get_data(as_text=True)
    # Named by the form's labels, not the query's names (an audit: "min_p" is not what the
    # field says).
    for query, says in [("min_p=2", "“P(spam) from” must be a spam probability from 0 "
                                    "to 1, not 2"),
                        ("max_p=-0.1", "“P(spam) to” must be a spam probability from 0 to "
                                       "1, not -0.1"),
                        ("min_p=0.9&max_p=0.1", "“P(spam) from” 0.9 is above “P(spam) to” 0.1"),
                        ("since=2026-11-30&until=2026-11-01",
                         "“Since” 2026-11-30 is after “Until” 2026-11-01"),
                        # a 500 before (FTS5 read "pri" and an open quote; PostgreSQL text
                        # cannot hold a NUL)
                        ("q=pri%00ze", "“Text” contains a NUL character"),
                        ("sender=%2B1555%00", "“Sender” contains a NUL character"),
                        # cut to 200 before, it matched texts without the rest of the term
                        ("q=" + "a" * 201, "“Text” is limited to 200 characters, not 201"),
                        ("sender=" + "1" * 256, "“Sender” is limited to 255 characters")]:
        answer = viewer_client.get(f"/admin/messages?{query}")
        assert answer.status_code == 400 and says in answer.get_data(as_text=True), query
    assert viewer_client.get("/admin/messages?min_p=0.4&max_p=0.4").status_code == 200


def test_search_ignores_case_beyond_ascii(viewer_client, add_messages):
    """SQLite folds ASCII letters only; PostgreSQL's ILIKE folds all of them."""
    add_messages(("ВЫ ВЫИГРАЛИ ПРИЗ, позвоните", 0.97), ("Café ÉMILE à midi", 0.02),
                 ("lunch at noon?", 0.02))
    for query, expected in (("приз", "ПРИЗ"), ("émile", "ÉMILE"), ("CAFÉ", "Café")):
        page = viewer_client.get(f"/admin/messages?q={query}").get_data(as_text=True)
        assert expected in page and "lunch" not in page, query


def test_bulk_selected_needs_confirmation(moderator_client, add_messages, db_session_factory):
    a, b, c = add_messages(("one", 0.9), ("two", 0.8), ("three", 0.1))
    confirm = moderator_client.post("/admin/messages/bulk",
                                    data={"label": "ham", "ids": [str(a), str(b)]})
    text = confirm.get_data(as_text=True)
    assert "Label 2 messages as ham?" in text
    with db_session_factory() as session:
        assert session.get(Message, a).review_label is None  # nothing changed yet
    done = moderator_client.post("/admin/messages/bulk", data={
        "label": "ham", "ids": [str(a), str(b)], "confirmed": "1", "expected": "2"},
        follow_redirects=True)
    assert "Labelled 2 messages as ham" in done.get_data(as_text=True)
    with db_session_factory() as session:
        assert [session.get(Message, i).review_label for i in (a, b, c)] == ["ham", "ham", None]


def test_bulk_by_filter_rechecks_count(moderator_client, add_messages, db_session_factory):
    add_messages(("spam 1", 0.9), ("spam 2", 0.95), ("ham", 0.05))
    confirm = moderator_client.post("/admin/messages/bulk?scope=filter",
                                    data={"label": "spam", "model_label": "spam"})
    assert "Label 2 messages as spam?" in confirm.get_data(as_text=True)
    assert "Nothing was labelled" not in confirm.get_data(as_text=True)
    add_messages(("spam 3", 0.99))  # arrives between confirmation and click
    stale = moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "scope": "filter", "model_label": "spam", "confirmed": "1",
        "expected": "2", "note": "prize <wave>"})
    page = stale.get_data(as_text=True)
    assert "Label 3 messages as spam?" in page
    # It says why it asks again, and keeps the note (escaped).
    assert "Nothing was labelled: you confirmed 2 messages, and 3 match now" in page
    assert 'value="prize &lt;wave&gt;"' in page
    moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "scope": "filter", "model_label": "spam", "confirmed": "1",
        "expected": "3"})
    reviewed = moderator_client.get("/admin/messages?review=spam").get_data(as_text=True)
    assert "3 messages" in reviewed


def test_bulk_by_filter_labels_nothing_if_a_message_arrives_after_the_count(
        moderator_client, add_messages, db_session_factory, monkeypatch):
    """From a live audit: the count was checked, then the relabel read the filter again and
    labelled a message that arrived in between (37 of 357 tries). The ids are now read once
    and compared with the count confirmed."""
    from spamguard.models import Review
    from spamguard.services import message_queries

    add_messages(("racetok 1", 0.9), ("racetok 2", 0.95))
    original = message_queries.count_messages

    def count_then_one_arrives(*args, **kwargs):
        counted = original(*args, **kwargs)
        add_messages(("racetok 3", 0.99))  # committed by another connection
        monkeypatch.setattr(message_queries, "count_messages", original)
        return counted

    monkeypatch.setattr(message_queries, "count_messages", count_then_one_arrives)
    page = moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "scope": "filter", "q": "racetok", "confirmed": "1",
        "expected": "2", "note": "kept"}).get_data(as_text=True)
    assert "Nothing was labelled: you confirmed 2 messages, and 3 match now" in page
    assert "Label 3 messages as spam?" in page and 'value="kept"' in page
    with db_session_factory() as session:
        assert session.query(Review).count() == 0


def test_bulk_with_nothing_left_to_label_offers_no_button(moderator_client, add_messages):
    """From a live audit: "Label 0 messages as spam?" with a button that labelled 0."""
    add_messages(("spam 1", 0.9))
    for data in ({"scope": "filter", "q": "nowhere"},
                 {"scope": "filter", "q": "nowhere", "confirmed": "1", "expected": "0"},
                 {"scope": "filter", "q": "nowhere", "confirmed": "1", "expected": "1"},
                 {"ids": ["999999"]}):
        page = moderator_client.post("/admin/messages/bulk", data={"label": "spam", **data})
        text = page.get_data(as_text=True)
        assert page.status_code == 200 and "No message to label" in text, data
        assert "Label 0" not in text and 'type="submit"' not in text.split("</header>")[-1]
    assert "None of the selected messages exists" in text
    many = moderator_client.post("/admin/messages/bulk",
                                 data={"label": "spam", "ids": [str(i) for i in range(1, 5002)]})
    assert many.status_code == 400 and "select at most 5000" in many.get_data(as_text=True)


def test_bulk_confirmation_sentences_end_cleanly(moderator_client, add_messages):
    """No tag between the last word and the full stop: text read element by element (a
    screen reader, a copy, a text dump) would show "every message ."."""
    add_messages(("spam 1", 0.9))
    for data in ({"label": "spam"}, {"label": "spam", "model_label": "spam"}):
        page = moderator_client.post("/admin/messages/bulk?scope=filter", data=data)
        sentence = re.search(r"<p>Every message.*?</p>", page.get_data(as_text=True), re.S)
        text = " ".join(re.sub(r"<[^>]+>", " ", sentence.group(0)).split())
        assert " ." not in text and text.startswith("Every message that matches"), text
    empty = moderator_client.post("/admin/messages/bulk?scope=filter", data={"label": "spam"})
    assert "that is, every message." in " ".join(
        re.sub(r"<[^>]+>", " ", empty.get_data(as_text=True)).split())


def test_bulk_confirmation_says_which_filter_it_applies(moderator_client, add_messages):
    """From a live audit: the page said "every message that matches the current filter"
    without saying what the filter was, so a moderator confirmed blind."""
    add_messages(("win <b>cash</b> now", 0.9))
    page = moderator_client.post("/admin/messages/bulk?scope=filter", data={
        "label": "spam", "model_label": "spam", "review": "unreviewed", "min_p": "0.5",
        "since": "2026-01-01", "q": "<b>cash"}).get_data(as_text=True)
    terms = re.findall(r"<li>(.*?)</li>", page.split('class="filter-terms"')[1].split("</ul>")[0])
    assert terms == ["the model said spam", "unreviewed", "spam probability at least 0.5",
                     "received on or after 2026-01-01 (UTC)",
                     "text contains \u201c&lt;b&gt;cash\u201d"]
    assert "Label 1 message as spam?" in page


def test_filters_describe_every_field():
    from datetime import date

    from spamguard.services.message_queries import MessageFilter

    every = MessageFilter(model_label="pending", review="ham", disagreement=True, min_p=0.1,
                          max_p=0.9, since=date(2026, 1, 1), until=date(2026, 1, 2),
                          sender="+15550001111", q="prize", campaign_id=7)
    assert every.describe() == [
        "waiting for a verdict", "a moderator said ham",
        "the moderator's label differs from the model's", "spam probability at least 0.1",
        "spam probability at most 0.9", "received on or after 2026-01-01 (UTC)",
        "received on or before 2026-01-02 (UTC)", "from +15550001111 (the number written any way)",
        "text contains \u201cprize\u201d", "in campaign 7"]
    assert MessageFilter().describe() == []


def test_bulk_refuses_bad_input(moderator_client, viewer_client):
    nothing = moderator_client.post("/admin/messages/bulk", data={"label": "spam"},
                                    follow_redirects=True)
    assert "Select at least one message" in nothing.get_data(as_text=True)
    for bad in ("x", "99999999999999999999999", "-1"):
        assert moderator_client.post("/admin/messages/bulk", data={
            "label": "spam", "ids": bad}).status_code == 400
    assert viewer_client.post("/admin/messages/bulk",
                              data={"label": "spam", "ids": "1"}).status_code == 403


def test_detail_shows_verdicts_reviews_and_similar(moderator_client, add_messages,
                                                   db_session_factory, app):
    from spamguard.models import ModelVersion, Verdict

    first, twin = add_messages(("Call 0800 111 now", 0.9), ("call 0800 222 NOW", 0.9))
    with db_session_factory() as session:
        version = session.query(ModelVersion).one()
        session.add(Verdict(message_id=first, model_version_id=version.id,
                            spam_probability=0.9, label="spam", threshold=0.5, latency_ms=12.5))
        session.commit()
        version_id = version.id
    moderator_client.post(f"/admin/messages/{first}/review",
                          data={"label": "ham", "note": "known sender"})
    moderator_client.post(f"/admin/messages/{first}/review", data={"label": "spam"})
    page = moderator_client.get(f"/admin/messages/{first}").get_data(as_text=True)
    assert version_id in page and "12.5 ms" in page
    assert "known sender" in page and "superseded" in page
    assert re.search(rf'href="/admin/messages/{twin}"', page)
    assert moderator_client.get("/admin/messages/424242").status_code == 404


def test_a_stale_message_page_does_not_replace_another_moderators_label(
        app, moderator_client, add_messages, make_user, db_session_factory):
    """Both moderators open message 1's page (no label yet); the first labels it spam, then
    the second, from the page still showing "Label", ham: refused, saying who labelled it,
    instead of silently superseding their label. From a fresh page, relabelling works."""
    from spamguard.models import Message
    from tests.fixtures_admin import SEEN, AdminClient

    (mid,) = add_messages(("Are we still on for lunch?", 0.6))
    make_user("alice", "moderator")
    alice = AdminClient(app.test_client(), "alice")
    alice.login()
    stale = moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True)
    assert 'name="seen" value="none"' in stale
    alice.post(f"/admin/messages/{mid}/review", data={"label": "spam", "seen": "none"})
    refused = moderator_client.post(f"/admin/messages/{mid}/review", follow_redirects=True,
                                    data={"label": "ham", "seen": "none"})
    said = refused.get_data(as_text=True)
    assert "alice labelled message" in said and "your ham label was not saved" in said
    with db_session_factory() as session:
        assert session.get(Message, mid).review_label == "spam"
    seen = SEEN.search(said).group(1)  # the page now shows alice's review
    moderator_client.post(f"/admin/messages/{mid}/review", data={"label": "ham", "seen": seen})
    with db_session_factory() as session:
        assert session.get(Message, mid).review_label == "ham"
    odd = moderator_client.post(f"/admin/messages/{mid}/review", follow_redirects=True,
                                data={"label": "spam", "seen": "yesterday"})
    assert "Not recorded: the page was out of date" in odd.get_data(as_text=True)


def test_a_picture_message_shows_its_attachments_and_links_only_https(
        moderator_client, add_messages):
    raw = {"NumMedia": "3 ", "MediaContentType0": "image/png",  # as stored before Dec 2026
           "MediaUrl0": "https://api.twilio.com/ME1?x=1&y=2",
           "MediaContentType1": "<b>image/gif</b>", "MediaUrl1": "javascript:alert(1)",
           "MediaContentType2": "\u202eexe.txt"}  # the type reversed the line after it
    (message,) = add_messages(("", 0.1), raw=raw)
    for path in (f"/admin/messages/{message}", "/admin/queue"):
        page = moderator_client.get(path).get_data(as_text=True)
        assert "3 attachments:" in page, path
        assert ('<a href="https://api.twilio.com/ME1?x=1&amp;y=2" target="_blank" '
                'rel="noopener noreferrer nofollow"><bdi>image/png</bdi></a>') in page
        assert "<bdi>&lt;b&gt;image/gif&lt;/b&gt;</bdi>" in page and "javascript:" not in page
        assert "[U+202E]</span>exe.txt</bdi>" in page and "\u202e" not in page
    (huge,) = add_messages(("hi", 0.1), raw={"NumMedia": "999999999"})
    page = moderator_client.get(f"/admin/messages/{huge}").get_data(as_text=True)
    assert "999999999 attachments:" in page and page.count("unknown type") == 10


def test_campaign_filter_also_answers_to_campaign(viewer_client, add_messages,
                                                  db_session_factory):
    from spamguard.db import session_scope
    from spamguard.models import Campaign
    from spamguard.sqltypes import utcnow

    inside, outside = add_messages(("Free prize call now", 0.97), ("lunch at noon?", 0.02))
    with session_scope(db_session_factory) as session:
        campaign = Campaign(first_seen=utcnow(), last_seen=utcnow(), size=1)
        session.add(campaign)
        session.flush()
        session.get(Message, inside).campaign_id = campaign_id = campaign.id
    for key in ("campaign", "campaign_id"):
        page = viewer_client.get(f"/admin/messages?{key}={campaign_id}").get_data(as_text=True)
        assert "Free prize" in page and "lunch" not in page, key


def test_list_counts_and_probability_inputs(viewer_client, add_messages):
    """'1 message' in the pager; a probability such as the threshold 0.393 can be typed."""
    add_messages(("Free prize call now", 0.97), ("lunch at noon?", 0.02))
    one = viewer_client.get("/admin/messages?q=noon").get_data(as_text=True)
    assert "· 1 message</span>" in one and "1 messages" not in one
    two = viewer_client.get("/admin/messages").get_data(as_text=True)
    assert "· 2 messages</span>" in two
    # step="0.01" made the browser refuse 0.393 ("nearest valid values are 0.39 and 0.4")
    for name in ("min_p", "max_p"):
        field = re.search(rf'<input name="{name}"[^>]*>', two).group(0)
        assert 'step="any"' in field, field
    assert viewer_client.get("/admin/messages?min_p=0.393").status_code == 200


def test_sms_text_keeps_its_direction_and_a_blank_message_is_marked(moderator_client,
                                                                      add_messages):
    hebrew = "שלום, זכית בפרס! התקשר עכשיו"
    blank, rtl = add_messages(("   ", 0.5), (hebrew, 0.6))
    listing = moderator_client.get("/admin/messages").get_data(as_text=True)
    assert f"<bdi>{hebrew}</bdi>" in listing  # isolated: the row's layout stays put
    assert listing.count('<span class="muted blank">(blank message)</span>') == 1
    page = moderator_client.get(f"/admin/messages/{rtl}").get_data(as_text=True)
    # Not in a <bdi>, which dir="auto" skips: the block takes the text's direction.
    assert f'<pre class="body" dir="auto">{hebrew}</pre>' in page
    page = moderator_client.get(f"/admin/messages/{blank}").get_data(as_text=True)
    assert ('<pre class="body" dir="auto"><span class="muted blank">(blank message)</span>'
            "</pre>") in page
    queue = moderator_client.get("/admin/queue").get_data(as_text=True)
    assert '<pre class="body" dir="auto">' in queue


def _meters(page: str) -> list[dict[str, float | str]]:
    """Each <meter>'s low, high and value (floats) and title."""
    return [{"low": float(low), "high": float(high), "value": float(value), "title": title}
            for low, high, value, title in re.findall(
                r'<meter min="0" max="1" low="([^"]+)" high="([^"]+)" optimum="0" '
                r'value="([^"]+)" title="([^"]*)">', page)]


@pytest.mark.parametrize("p", [0.25, 0.2, 0.20003])
def test_probability_bars_follow_the_deciding_models_threshold(moderator_client, add_messages,
                                                                db_session_factory, p):
    """A message called spam at or just above a low threshold (0.2) shows an amber bar, not
    a green one: a browser paints a meter green when value <= low."""
    from spamguard.models import ModelVersion, Verdict

    (low,) = add_messages(("Claim your voucher", p), threshold=0.2)
    (plain,) = add_messages(("see you at 6", 0.1))
    with db_session_factory() as session:
        version = session.query(ModelVersion).one()
        session.add(Verdict(message_id=low, model_version_id=version.id,
                            spam_probability=p, label="spam", threshold=0.2))
        session.commit()
    (bar,) = _meters(moderator_client.get(f"/admin/messages/{low}").get_data(as_text=True))
    assert bar["low"] < 0.2 <= bar["value"] == p and bar["high"] == 0.7
    assert bar["title"] == f"{p:.3f} (threshold 0.200)"
    queue = _meters(moderator_client.get("/admin/queue").get_data(as_text=True))
    assert queue[0]["value"] == p and queue[0]["low"] < 0.2  # the message at hand
    # no verdict on record: the fixed bands
    (bar,) = _meters(moderator_client.get(f"/admin/messages/{plain}").get_data(as_text=True))
    assert (bar["low"], bar["high"], bar["value"], bar["title"]) == (0.3, 0.7, 0.1, "0.100")


@pytest.mark.parametrize("url, linked", [
    ("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", True),
    ("https://s3-external-1.twiliocdn.com/x", True),
    ("https://media.example/ME1", False),  # any other host: shown, not linked
    ("https://api.twilio.com.evil.example/x", False),
    ("https://user@api.twilio.com/x", False),
    ("https://api.twilio.com:8443/x", False),
    ("http://api.twilio.com/x", False),
    ("https://[broken/x", False),
    ("https://evil.example\\.twilio.com/login", False),  # a browser reads \ as /
    ("https://evil.example\t.twilio.com/x", False),
    ("https://api.twilio.com/x y", False),
    ("https://API.Twilio.com/x", True),
])
def test_only_the_gateways_own_media_addresses_are_links(url, linked):
    from spamguard.admin.base import is_gateway_media

    assert is_gateway_media(url) is linked


def test_a_stale_message_page_after_an_undo_does_not_blame_an_earlier_reviewer(
        app, moderator_client, add_messages, make_user, db_session_factory):
    """The message page shows bob's spam review (seen = its id); bob undoes it in the queue,
    which makes alice's older ham review current again. The page's label is refused (right)
    saying "alice labelled message N ham while you were looking" (wrong: alice labelled it
    before the page was loaded; what happened is that bob's decision was undone).
    conflict_message assumes a conflicting review is newer than the one seen, which held in
    the queue (seen is always "none" there) but not on the message page."""
    from tests.fixtures_admin import SEEN

    (mid,) = add_messages(("Are we still on for lunch?", 0.6))
    alice, bob = make_user("alice"), make_user("bob")
    with db_session_factory() as session:
        reviews.add_review(session=session, message_id=mid, label="ham", user_id=alice)
        bobs = reviews.add_review(session=session, message_id=mid, label="spam", user_id=bob)
        session.commit()
        bobs_id = bobs.id
    page = moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True)
    assert SEEN.search(page).group(1) == str(bobs_id)
    with db_session_factory() as session:
        reviews.undo_review(session=session, review_id=bobs_id)
        session.commit()
    said = moderator_client.post(f"/admin/messages/{mid}/review", follow_redirects=True,
                                 data={"label": "spam", "seen": str(bobs_id)}
                                 ).get_data(as_text=True)
    assert "not saved" in said
    assert "alice labelled message" not in said, "blames alice for a review older than the page"
    # The same label as alice's, current again: nothing to do, and said as information.
    agreed = moderator_client.post(f"/admin/messages/{mid}/review", follow_redirects=True,
                                   data={"label": "ham", "seen": str(bobs_id)}
                                   ).get_data(as_text=True)
    assert (f'<p class="flash flash-info" role="status" data-announce>Message {mid} is already '
            "labelled ham by alice — nothing to do.</p>") in agreed
    assert "flash-error" not in agreed


def test_a_message_page_in_other_digits_is_not_found(moderator_client, add_messages):
    """werkzeug's \\d+ takes any script's digits: /admin/messages/\\u0661 showed message 1."""
    from urllib.parse import quote

    (first,) = add_messages(("hello", 0.1))
    arabic = quote("".join(chr(0x660 + int(d)) for d in str(first)))
    assert moderator_client.get(f"/admin/messages/{first}").status_code == 200
    assert moderator_client.get(f"/admin/messages/{arabic}").status_code == 404


def test_a_zero_probability_bound_stays_in_links_and_forms(moderator_client, add_messages):
    """From a live audit: max_p=0 was dropped from every link and form (0.0 == False), so a
    stale page number landed on the unfiltered list, and "All N matching" would have
    relabelled every message."""
    from spamguard.services.message_queries import MessageFilter

    assert MessageFilter.from_args({"max_p": "0", "min_p": "0"}).as_args() == {
        "min_p": "0.0", "max_p": "0.0"}
    add_messages(("certain ham", 0.0), ("spam", 0.9))
    stale = moderator_client.get("/admin/messages?max_p=0&page=2")
    assert stale.status_code == 302 and "max_p=0" in stale.headers["Location"]
    page = moderator_client.get("/admin/messages?max_p=0").get_data(as_text=True)
    assert 'name="max_p" value="0.0"' in page  # the bulk form keeps the bound
    confirm = moderator_client.post("/admin/messages/bulk?scope=filter",
                                    data={"label": "ham", "max_p": "0"})
    assert "Label 1 message as ham?" in confirm.get_data(as_text=True)


def test_a_selection_relabel_says_what_it_replaces_and_asks_again_if_someone_labelled(
        moderator_client, add_messages, db_session_factory, make_user):
    """From a live audit: mod1 ticked a message, mod2 labelled it ham, and mod1's bulk
    "spam" silently replaced mod2's label. The confirmation now says how many of the
    messages carry a label; a label given after it was shown makes it ask again."""
    from spamguard.models import Review

    a, b = add_messages(("lunch at 1?", 0.2), ("lunch maybe", 0.3))
    other = make_user("mod2", "moderator")
    with db_session_factory() as session:
        reviews.add_review(session=session, message_id=a, label="ham", user_id=other)
        session.commit()
    page = moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "ids": [str(a), str(b)]}).get_data(as_text=True)
    assert "1 of them already carries a moderator's label" in page
    newest = re.search(r'name="newest_review" value="(\d+)"', page).group(1)
    with db_session_factory() as session:  # mod2 labels b after the confirmation was shown
        reviews.add_review(session=session, message_id=b, label="ham", user_id=other)
        session.commit()
    again = moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "ids": [str(a), str(b)], "confirmed": "1", "expected": "2",
        "newest_review": newest, "note": "kept"}).get_data(as_text=True)
    assert "Nothing was labelled: a moderator labelled some of these messages" in again
    assert "2 of them already carry a moderator's label" in again and 'value="kept"' in again
    with db_session_factory() as session:
        assert {r.label for r in session.query(Review).filter_by(is_current=True)} == {"ham"}
    newest = re.search(r'name="newest_review" value="(\d+)"', again).group(1)
    done = moderator_client.post("/admin/messages/bulk", data={
        "label": "spam", "ids": [str(a), str(b)], "confirmed": "1", "expected": "2",
        "newest_review": newest}, follow_redirects=True)
    assert "Labelled 2 messages as spam" in done.get_data(as_text=True)


def test_a_sender_is_cut_to_one_line_with_the_whole_value_on_hover(viewer_client,
                                                                   add_messages):
    """The list, the queue's card and a message's similar ones show a sender through the
    party macro: its title holds the whole value, a hidden character named, not obeyed."""
    sender = "+44\u202e" + "7" * 246
    first, _ = add_messages(("same words", 0.5), ("same words", 0.6), sender=sender)
    title = f'title="+44[U+202E]{"7" * 246}"'
    for url in ("/admin/messages", "/admin/queue", f"/admin/messages/{first}"):
        page = viewer_client.get(url).get_data(as_text=True)
        assert f'<bdi class="party" {title}>' in page, url
        assert "\u202e" not in page, url


def test_a_refused_filter_comes_back_on_the_list_page_filled_in(viewer_client, add_messages):
    """Since after until, or P(spam) from 0.6 to 0.4, led to an 'Error 400' page with only a
    link to the dashboard and the values lost: the list page now says why beside its form,
    which keeps what was typed (400 still)."""
    add_messages(("Free prize call now", 0.97))
    for query, said, kept in (
            ("since=2026-12-02&until=2026-12-01&sender=%2B4479&q=prize",
             "“Since” 2026-12-02 is after “Until” 2026-12-01",
             ['name="since" type="date" value="2026-12-02"',
              'name="until" type="date" value="2026-12-01"', 'value="+4479"',
              'value="prize"']),
            ("min_p=0.6&max_p=0.4&model_label=spam&disagreement=1",
             "“P(spam) from” 0.6 is above “P(spam) to” 0.4",
             ['value="0.6"', 'value="0.4"', "<option selected>spam</option>",
              'name="disagreement" value="1" checked']),
            ("min_p=lots", "“P(spam) from” must be a number", ['value="lots"'])):
        answer = viewer_client.get(f"/admin/messages?{query}")
        page = answer.get_data(as_text=True)
        assert answer.status_code == 400 and answer.headers["Cache-Control"] == "no-store"
        assert ('<p class="flash flash-error filter-error" role="alert" id="filter-error" '
                f'tabindex="-1" data-announce>Nothing listed: {said}'
                in page.replace("&#39;", "'")), query
        assert '<form class="filters card"' in page and "Back to the dashboard" not in page
        for field in kept:
            assert field in page, (query, field)
        assert "Free prize" not in page  # nothing listed


def test_the_sender_filter_finds_a_phone_number_however_it_was_written(
        viewer_client, add_messages, db_session_factory):
    """"447911123456" found none of the messages from "+447911123456" (exact match), and
    then none stored as "+44 7911 123456". A number typed with or without "+", spaces,
    dashes, dots or parentheses now finds it stored in any of those forms; a name and a
    short code stay exact. The lookup is one index (ix_messages_sender_digits) on both
    databases."""
    from spamguard.db import session_scope
    from spamguard.services import message_queries
    from spamguard.services.message_queries import MessageFilter
    from tests.fixtures_db import captured_statements, query_plan

    number = ["+447911123456", "447911123456", "+44 7911 123456", "+44 (7911) 123-456"]
    senders = [*number, "+15550001111", "BARCLAYS", "1555"]
    for sender in senders:
        add_messages((f"from {sender}", 0.5), sender=sender)
    for typed, found in (("447911123456", number), ("+44 (7911) 123-456", number),
                         ("+44.7911.123456", number), ("+44 7911 123456", number),
                         ("BARCLAYS", ["BARCLAYS"]), ("barclays", []), ("4479", []),
                         # a short code is another sender than a number typed with "+"
                         ("+1555", []), ("1555", ["1555"])):
        page = viewer_client.get("/admin/messages", query_string={"sender": typed})
        text = page.get_data(as_text=True)
        shown = sorted(s for s in senders if f"from {s}</bdi>" in text)
        assert page.status_code == 200 and shown == sorted(found), typed
    assert MessageFilter(sender="447911123456").describe() == [
        "from 447911123456 (the number written any way)"]
    assert MessageFilter(sender="BARCLAYS").describe() == ["from BARCLAYS"]
    with session_scope(db_session_factory) as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        with captured_statements(connection) as statements:
            message_queries.list_messages(session, MessageFilter(sender="447911123456"),
                                          page=1, per_page=50)
        sql, params = next(s for s in statements if "ORDER BY" in s[0])
        plan = query_plan(connection, sql, params)
    assert "ix_messages_sender_digits" in plan, plan
