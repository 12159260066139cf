"""What an accessibility audit of the admin UI (axe-core, WCAG 2.1 AA, keyboard checks) found,
checked in the HTML the server sends: refused forms name and mark their field, flashes are
announced, buttons say what they act on, landmarks and table headers have names."""

from __future__ import annotations

import re

import pytest

from tests.fixtures_admin import flashes

ERROR = 'aria-invalid="true" aria-describedby="page-error'


def _input(page: str, name: str) -> str:
    """The whole tag of the form field named ``name`` (the first one)."""
    found = re.search(rf'<(?:input|select)[^>]* name="{name}"[^>]*>', page)
    assert found, name
    return found.group()


def test_a_refused_new_user_marks_and_focuses_the_field_at_fault(admin_client):
    """A short password: the title says Error, the Password field (not Username, below the
    table) is marked invalid, described by the error and then its rule, and focused."""
    short = admin_client.post("/admin/users", data={
        "username": "eve", "password": "short", "role": "viewer"})
    assert short.status_code == 400
    page = short.get_data(as_text=True)
    assert "<title>Error: Users · spamguard</title>" in page
    assert f'{ERROR} password-rule" autofocus' in _input(page, "password")
    assert "aria-invalid" not in _input(page, "username")
    assert "autofocus" not in _input(page, "username")
    assert 'id="page-error">User not created: password must have' in page
    taken = admin_client.post("/admin/users", data={
        "username": "admin", "password": "long-enough-secret", "role": "viewer"})
    page = taken.get_data(as_text=True)
    assert f'{ERROR} username-rule" autofocus' in _input(page, "username")
    assert "aria-invalid" not in _input(page, "password")


def test_a_refused_reset_marks_the_repeated_password(admin_client, make_user):
    make_user("mo", "moderator")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    mo = re.search(r'<option value="(\d+)"[^>]*>mo</option>', page).group(1)
    refused = admin_client.post("/admin/users/password", data={
        "user_id": mo, "new_password": "a-long-new-secret", "new_password_again": "another-one"})
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert "<title>Error: Users · spamguard</title>" in page
    assert f'{ERROR}" autofocus' in _input(page, "new_password_again")
    assert "aria-invalid" not in _input(page, "new_password")


def test_a_refused_password_change_marks_the_field_after_the_redirect(admin_client):
    """The two new passwords differ: New password again is marked and focused, not Current
    password (autofocus before). The mark is for that one page: a reload has none."""
    refused = admin_client.post("/admin/password", data={
        "current_password": "correct-horse-battery", "new_password": "a-long-new-secret",
        "new_password_again": "a-long-new-secreT"}, follow_redirects=True)
    page = refused.get_data(as_text=True)
    assert "<title>Error: Change password · spamguard</title>" in page
    assert f'{ERROR}" autofocus' in _input(page, "new_password_again")
    assert "autofocus" not in _input(page, "current_password")
    wrong = admin_client.post("/admin/password", data={
        "current_password": "not-it-at-all", "new_password": "a-long-new-secret",
        "new_password_again": "a-long-new-secret"}, follow_redirects=True)
    page = wrong.get_data(as_text=True)
    assert f'{ERROR}" autofocus' in _input(page, "current_password")
    again = admin_client.get("/admin/password").get_data(as_text=True)
    assert "aria-invalid" not in again and "<title>Change password · spamguard</title>" in again
    assert "autofocus" in _input(again, "current_password")


def test_a_refused_api_key_marks_its_name_or_its_scopes(admin_client):
    admin_client.post("/admin/api-keys", data={"name": "gateway", "scope": "submit"})
    taken = admin_client.post("/admin/api-keys", data={"name": "Gateway", "scope": "submit"})
    page = taken.get_data(as_text=True)
    assert taken.status_code == 400 and "<title>Error: API keys · spamguard</title>" in page
    assert f'{ERROR}" autofocus' in _input(page, "name")
    none = admin_client.post("/admin/api-keys", data={"name": "another"}).get_data(as_text=True)
    assert "aria-invalid" not in _input(none, "name")
    assert f'{ERROR}" autofocus' in _input(none, "scope")  # the first box of the fieldset


def test_a_refused_sender_rule_marks_the_sender(admin_client):
    refused = admin_client.post("/admin/senders", data={"sender": "  ", "action": "block"},
                                follow_redirects=True)
    assert ("error", "Rule not set: give the sender: a phone number, short code or sender "
                     "name.") in flashes(refused)
    page = refused.get_data(as_text=True)
    assert "<title>Error: Senders · spamguard</title>" in page
    assert f'{ERROR}" autofocus' in _input(page, "sender")
    assert "aria-invalid" not in _input(page, "note")


def test_a_refused_filter_names_the_field_by_its_label_and_marks_it(viewer_client):
    answer = viewer_client.get("/admin/messages?min_p=5")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "<title>Error: Messages · spamguard</title>" in page
    assert "“P(spam) from” must be a spam probability from 0 to 1, not 5" in page
    assert 'aria-invalid="true" aria-describedby="filter-error" autofocus' in _input(page,
                                                                                    "min_p")
    assert "aria-invalid" not in _input(page, "max_p")
    both = viewer_client.get("/admin/messages?min_p=0.8&max_p=0.2").get_data(as_text=True)
    assert "aria-invalid" in _input(both, "min_p") and "aria-invalid" in _input(both, "max_p")
    # The service keeps the arguments' names for other callers.
    from spamguard.services.message_queries import FilterError, MessageFilter

    with pytest.raises(FilterError, match="^max_p must be a spam probability") as refused:
        MessageFilter.from_args({"max_p": "5"})
    assert refused.value.fields == ("max_p",)


def test_the_review_card_has_a_heading_a_labelled_note_and_named_keys(moderator_client,
                                                                      add_messages):
    first, second = add_messages(("one", 0.5), ("two", 0.52))
    page = moderator_client.get("/admin/queue").get_data(as_text=True)
    card = re.search(r'<article class="card queue-item" id="current"[^>]*>', page).group()
    assert 'tabindex="-1" aria-labelledby="current-title"' in card
    assert "data-focus" not in card  # nothing done yet: the focus stays where it is
    assert re.search(r'<h2 class="card-title" id="current-title"><a href="/admin/messages/'
                     r'\d+">Message #\d+</a></h2>', page)
    assert '<label class="note">Note (optional) <input name="note" maxlength="2000">' in page
    assert 'placeholder="Note (optional)"' not in page
    for key in ("S", "H", "K", "U"):
        assert f'aria-keyshortcuts="{key}"' in page, key


def test_after_a_decision_skip_or_undo_the_status_line_says_it_and_the_card_takes_focus(
        moderator_client, add_messages):
    """Undo's outcome was a flash present at load, not announced; it is on the status line
    now, like a decision's, and the card is marked to take the focus (admin.js)."""
    first, second = add_messages(("one", 0.5), ("two", 0.52))
    decided = moderator_client.post("/admin/queue/decide", data={
        "message_id": first, "label": "spam", "seen": "none"}, follow_redirects=True)
    assert ' aria-labelledby="current-title" data-focus>' in decided.get_data(as_text=True)
    undone = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    page = undone.get_data(as_text=True)
    assert ('<p class="said" role="status" aria-live="polite" data-announce>Undid your '
            f"decision on message {first}.</p>") in page
    assert ' aria-labelledby="current-title" data-focus>' in page
    assert "flash-info" not in page


def test_a_relabel_on_a_message_page_puts_the_focus_back_on_its_note(moderator_client,
                                                                     add_messages):
    mid, other = add_messages(("one", 0.5), ("two", 0.52))
    page = moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True)
    assert "data-focus" not in page
    labelled = moderator_client.post(f"/admin/messages/{mid}/review", data={
        "label": "ham", "seen": "none"}, follow_redirects=True).get_data(as_text=True)
    assert '<input name="note" maxlength="2000" data-focus>' in labelled
    assert "data-focus" not in moderator_client.get(f"/admin/messages/{mid}").get_data(
        as_text=True)  # once
    # Only for the message labelled: another's page keeps the focus where it was.
    moderator_client.post(f"/admin/messages/{mid}/review", data={"label": "spam"})
    assert "data-focus" not in moderator_client.get(f"/admin/messages/{other}").get_data(
        as_text=True)


BUTTON = re.compile(r'<(?:button|a)\b([^>]*)\baria-label="([^"]*)"[^>]*>(.*?)</(?:button|a)>',
                    re.DOTALL)


def names_missing_their_text(page: str) -> list[tuple[str, str]]:
    """(accessible name, visible text) of each button or link whose aria-label does not
    hold its visible text (WCAG 2.5.3, label in name: speech users say what they see)."""
    from html import unescape

    found = []
    for _, name, inner in BUTTON.findall(page):
        text = " ".join(unescape(re.sub(r"<kbd>.*?</kbd>|<[^>]+>", " ", inner)).split())
        if text and text.lower().rstrip("…") not in unescape(name).lower():
            found.append((unescape(name), text))
    return found


def test_the_users_buttons_names_hold_their_visible_text(admin_client, make_user):
    make_user("mod", "moderator")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert 'aria-label="Change role of mod" data-confirm=' in page
    assert names_missing_their_text(page) == []


def test_every_nav_is_named_and_no_table_header_is_empty(admin_client, add_messages,
                                                         two_versions, db_session_factory):
    """Landmarks of one role told apart by name (the main menu, the spot check's and the
    dashboard's tabs, pagers); a column of buttons has a header ("Actions", read only by
    screen readers), a table's corner is a cell, not an empty header."""
    from spamguard.services import reviews

    active, candidate = two_versions
    mid, _ = add_messages(("Free prize", 0.9), ("lunch?", 0.1), model_version_id=active)
    with db_session_factory() as session:
        reviews.add_review(session=session, message_id=mid, label="spam", user_id=1)
        session.commit()
    admin_client.post("/admin/api-keys", data={"name": "gateway", "scope": "submit"})
    admin_client.post("/admin/senders", data={"sender": "+15550001234", "action": "block"})
    for url in ("/admin/", "/admin/spot-check", "/admin/campaigns", "/admin/messages",
                f"/admin/messages/{mid}", "/admin/users", "/admin/api-keys", "/admin/senders",
                "/admin/models", f"/admin/models/{active}",
                f"/admin/models/compare?a={active}&b={candidate}"):
        answer = admin_client.get(url, follow_redirects=True)
        assert answer.status_code == 200, url
        page = answer.get_data(as_text=True)
        navs = re.findall(r"<nav\b[^>]*>", page)
        assert navs and all('aria-label="' in nav for nav in navs), (url, navs)
        assert not re.search(r"<th\b[^>]*>\s*</th>", page), url
        if url.startswith("/admin/models/") and "compare" not in url:  # its report's matrix
            assert "<tr><td></td><th>predicted ham</th>" in page
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert '<th><span class="visually-hidden">Actions</span></th>' in page
    assert '<nav class="nav" aria-label="Main">' in page


def test_bulk_buttons_say_what_they_label_above_and_below_the_list(moderator_client,
                                                                   add_messages):
    """They were heard as "Spam", "Ham", "Spam…", "Ham…", their scope in a span apart, and
    only above a table of up to 50 rows: after ticking rows, up to 150 stops back up."""
    add_messages(*[(f"message {i}", 0.5) for i in range(3)])
    page = moderator_client.get("/admin/messages").get_data(as_text=True)
    bars = re.findall(r'<div class="bulkbar">.*?</div>\s*</div>', page, re.DOTALL)
    assert len(bars) == 2 and page.index("</table>") < page.rindex('<div class="bulkbar">')
    for where, bar in zip(("top", "bottom"), bars, strict=True):
        assert f'role="group" aria-labelledby="bulk-selected-{where}"' in bar
        assert f'<span id="bulk-all-{where}">All 3 matching:</span>' in bar
        assert 'aria-label="Label the selected messages spam">Spam</button>' in bar
        assert 'aria-label="Label all 3 matching messages ham (asks first)">Ham…</button>' in bar
    assert page.index('<form method="post" action="/admin/messages/bulk" id="bulk">') \
        < page.rindex('<div class="bulkbar">') < page.index("</form>", page.index('id="bulk"'))
    assert names_missing_their_text(page) == []


def test_each_campaigns_buttons_name_their_campaign(moderator_client, add_messages,
                                                     db_session_factory):
    import numpy as np

    from spamguard.services import campaigns

    add_messages(*[(f"FREE entry {i}", 0.9) for i in range(3)],
                 *[(f"Your parcel {i}", 0.8) for i in range(3)])
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, min_size=3, encoder=lambda texts: np.asarray(
            [[1.0, 0, 0] if "FREE" in t else [0, 1.0, 0] for t in texts], dtype=np.float32))
        session.commit()
    page = moderator_client.get("/admin/campaigns").get_data(as_text=True)
    ids = re.findall(r'data-campaign-id="(\d+)"', page)
    assert len(ids) == 2
    for cid in ids:
        for label in ("spam", "ham"):
            assert (f'>All 3 {label}<span class="visually-hidden"> of campaign #{cid}</span>'
                    "</button>") in page
        assert f'See messages<span class="visually-hidden"> of campaign #{cid}</span></a>' in page


def test_report_figures_say_what_they_show_with_their_numbers(viewer_client, two_versions,
                                                              tiny_model_dir, add_messages):
    """alt="pr curve", "confusion matrix", or the file name on the comparison: now what
    each figure shows, with its numbers from report.json; the comparison has headings."""
    import json
    from html import unescape

    from spamguard.admin.models import report_columns

    active, candidate = two_versions
    page = viewer_client.get(f"/admin/models/{active}").get_data(as_text=True)
    alts = [unescape(a) for a in re.findall(r'<img src="[^"]*" alt="([^"]*)"', page)]
    assert len(alts) == 2, alts
    pr, matrix = alts
    report = json.loads((tiny_model_dir / "report.json").read_text())
    model = report["model"]
    name = report_columns(report)[0][0]
    assert pr.startswith("Precision-recall curves of spam (precision against recall). ")
    assert (f"{name}: average precision {model['average_precision']:.4f}; at threshold "
            f"{model['threshold']:g} spam precision {model['spam_precision']:.3f}") in pr
    (tn, fp), (fn, tp) = model["confusion_matrix"]["matrix"]
    assert matrix.startswith("Confusion matrices. ")
    assert (f"{name} at threshold {model['threshold']:g}: of true ham, {tn} predicted ham and "
            f"{fp} spam; of true spam, {fn} predicted ham and {tp} spam") in matrix
    compare = viewer_client.get(f"/admin/models/compare?a={active}&b={candidate}").get_data(
        as_text=True)
    assert "<h2>Precision-recall curves</h2>" in compare
    assert "<h2>Confusion matrices</h2>" in compare
    alts = [unescape(a) for a in re.findall(r'<img src="[^"]*" alt="([^"]*)"', compare)]
    assert len(alts) == 4 and not any(".png" in alt for alt in alts)
    assert all(alt.startswith(("Precision-recall curves", "Confusion matrices")) for alt in alts)
    add_messages(("Free prize", 0.9), ("lunch?", 0.1), "pending")
    dashboard = viewer_client.get("/admin/dashboard").get_data(as_text=True)
    for label in ("spam", "ham", "pending"):
        assert f'aria-label="{label}: 1 of 3 verdicts"></meter>' in dashboard


def test_a_disagreement_is_said_in_words_and_each_spot_check_tab_has_its_title(
        moderator_client, add_messages):
    """The yellow row alone marked a moderator disagreeing with the model; the spot check's
    tabs were all titled "Spot check"."""
    mid, other = add_messages(("Free prize", 0.9), ("lunch?", 0.1))
    moderator_client.post(f"/admin/messages/{mid}/review", data={"label": "ham"})
    moderator_client.post(f"/admin/messages/{other}/review", data={"label": "ham"})
    page = moderator_client.get("/admin/messages").get_data(as_text=True)
    assert page.count('<small class="muted disagrees">disagrees with the model</small>') == 1
    row = re.search(r'<tr class="disagree">.*?</tr>', page, re.DOTALL).group()
    assert f'href="/admin/messages/{mid}"' in row and "disagrees with the model" in row
    for verdict, title in (("any", "blind"), ("spam", "spam verdicts"), ("ham", "ham verdicts")):
        tab = moderator_client.get(f"/admin/spot-check?verdict={verdict}").get_data(as_text=True)
        assert f"<title>Spot check: {title} · spamguard</title>" in tab
