"""What the admin UI shows is safe: escaping, CSP, CSRF, cookies."""

from __future__ import annotations

import re

import pytest

from tests.fixtures_admin import AdminClient

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


def pages_showing(add_messages, db_session_factory, body: str, sender: str) -> list[str]:
    """Store two messages of ``body`` from ``sender`` as one campaign; return the pages
    that show them (queue, list, the message, campaigns)."""
    from spamguard.services import campaigns

    (mid, _other) = add_messages((body, 0.5), (body + " again", 0.6), sender=sender)
    with db_session_factory() as session:
        campaigns.rebuild_campaigns(session=session, min_size=2,
                                    encoder=lambda texts: __import__("numpy").ones(
                                        (len(texts), 2), dtype="float32"))
        session.commit()
    return ["/admin/queue", "/admin/messages", f"/admin/messages/{mid}", "/admin/campaigns"]


@pytest.mark.parametrize("body", XSS)
def test_message_bodies_are_escaped_everywhere(moderator_client, add_messages,
                                               db_session_factory, body):
    for url in [*pages_showing(add_messages, db_session_factory, body, '<b onmouseover="x">'),
                f"/admin/messages?q={body}"]:
        html = moderator_client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert "onmouseover=\"x\"" not in html, url
        assert "&lt;" in html, url


def test_reordering_and_invisible_characters_are_shown_not_obeyed(
        moderator_client, add_messages, db_session_factory):
    """A right-to-left override makes "\u202eexe.txt" read "txt.exe", a zero-width space
    hides in "fr\u200bee": every page that shows an SMS or its sender marks them instead
    ([U+202E]), and escapes what is around them. Joiners, which emoji need, stay."""
    body = "Your code \u202eexe.txt\u202c is <b>1234</b> fr\u200bee 👩\u200d💻"
    # (the spot check shares the queue's card)
    for url in pages_showing(add_messages, db_session_factory, body, "+44\u2066700\u2069900"):
        html = moderator_client.get(url).get_data(as_text=True)
        for hidden in "\u202e\u202c\u200b\u2066\u2069":
            assert hidden not in html, (url, hex(ord(hidden)))
        assert ('<span class="ctl" dir="ltr" title="right-to-left override">[U+202E]</span>'
                'exe.txt') in html, url
        assert "&lt;b&gt;1234&lt;/b&gt;" in html and "<b>1234" not in html, url
        assert "fr<span" in html and "\u200d" in html, url
        if url != "/admin/campaigns":  # it shows no senders
            assert "+44<span class=\"ctl\"" in html and "[U+2066]" in html, url


def test_csp_forbids_inline_scripts(viewer_client, client):
    for response in (viewer_client.get("/admin/dashboard"), client.get("/admin/login")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        html = response.get_data(as_text=True)
        assert "<script>" not in html and " onclick=" not in html and " style=" not in html


def test_post_without_csrf_token_is_rejected(moderator_client, add_messages):
    (mid,) = add_messages(("x", 0.5))
    raw = moderator_client.client
    response = raw.post("/admin/queue/decide", data={"message_id": mid, "label": "spam"})
    assert response.status_code == 400 and "That was not recorded" in response.get_data(
        as_text=True)  # a review: its label was lost (other forms say "Nothing was changed")
    wrong = raw.post("/admin/queue/decide",
                     data={"message_id": mid, "label": "spam", "csrf_token": "forged"})
    assert wrong.status_code == 400
    for path, data, page in (  # a review's refusal offers its page again
            (f"/admin/messages/{mid}/review", {"label": "ham"}, f"/admin/messages/{mid}"),
            ("/admin/spot-check/decide", {"label": "ham", "verdict": "spam"},
             "/admin/spot-check?verdict=spam")):
        said = raw.post(path, data=data).get_data(as_text=True)
        assert "your ham label was not saved" in said, path
        assert f'<a href="{page}">Back to the page</a>' in said, path
    accepted = moderator_client.post("/admin/queue/decide", data={
        "message_id": mid, "label": "spam", "seen": "none"}, follow_redirects=True)
    assert accepted.status_code == 200 and "Not recorded" not in accepted.get_data(as_text=True)


def test_a_form_from_before_a_new_login_says_nothing_changed_and_links_back(
        moderator_client, add_messages):
    """Logging in again starts a new session, CSRF token included, so a form left open in
    another tab is refused: the page says nothing was changed and links back to the page
    the form was on (it said "not sent by this site" and linked to the dashboard only)."""
    from tests.fixtures_admin import csrf_token

    (mid,) = add_messages(("x", 0.5))
    old_token = csrf_token(moderator_client.client, "/admin/queue")
    moderator_client.post("/admin/logout")
    assert moderator_client.login().status_code == 302
    refused = moderator_client.client.post(  # (a review says more: see test_admin_auth)
        "/admin/queue/skip", headers={"Referer": "http://localhost/admin/queue?x=1"},
        data={"message_id": mid, "csrf_token": old_token})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "Nothing was changed: this form was loaded before your last login" in page
    assert '<a href="/admin/queue?x=1">Back to the page</a>' in page
    elsewhere = moderator_client.client.post(
        "/admin/queue/skip", headers={"Referer": "https://evil.example/admin/queue"},
        data={"message_id": mid, "csrf_token": old_token})
    assert "Back to the page" not in elsewhere.get_data(as_text=True)


def test_login_form_needs_csrf(app, make_user):
    make_user("mo")
    response = app.test_client().post("/admin/login",
                                      data={"username": "mo", "password": "whatever-pass"})
    assert response.status_code == 400


def test_session_cookie_flags(app, make_user):
    make_user("mo")
    client = AdminClient(app.test_client(), "mo")
    response = client.login()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert app.config["SESSION_COOKIE_SECURE"] is False  # TESTING; True in production


def test_production_cookies_are_secure(app_config):
    from spamguard.app import create_app

    production = create_app({**app_config, "TESTING": False, "env": "production"})
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["REMEMBER_COOKIE_SECURE"] is True


def test_development_mode_signs_with_a_random_kept_key(app_config):
    """Without SPAMGUARD_SECRET_KEY, development mode must not sign sessions with the public
    placeholder (anyone could forge an admin's cookie): a random key is made and kept."""
    from spamguard.app import DEV_SECRET_FILE, create_app
    from spamguard.config import PLACEHOLDER_SECRET

    config = {**app_config, "TESTING": False, "env": "development",
              "secret_key": PLACEHOLDER_SECRET}
    first = create_app(config)
    key = first.config["SECRET_KEY"]
    path = app_config["home"] / DEV_SECRET_FILE
    assert key != PLACEHOLDER_SECRET and len(key) >= 32
    assert path.read_text().strip() == key and path.stat().st_mode & 0o077 == 0
    second = create_app(config)
    assert second.config["SECRET_KEY"] == key  # logins survive a restart
    for app in (first, second):
        app.extensions["spamguard.db"].dispose()


def test_unreadable_development_key_is_one_clear_error(app_config):
    from spamguard.app import DEV_SECRET_FILE, create_app
    from spamguard.config import PLACEHOLDER_SECRET
    from spamguard.errors import SpamguardError

    (app_config["home"] / DEV_SECRET_FILE).write_bytes(b"\xff\xfe not a key")
    with pytest.raises(SpamguardError, match="cannot make or read the development key"):
        create_app({**app_config, "TESTING": False, "env": "development",
                    "secret_key": PLACEHOLDER_SECRET})


def test_api_and_webhook_are_not_csrf_checked(client):
    # Other blueprints authenticate by signature or key; CSRF must not get in their way.
    response = client.post("/webhook/twilio", data={"Body": "hi"})
    assert response.status_code != 400 or b"CSRF" not in response.data


@pytest.mark.parametrize("method, path", [
    ("GET", "/admin/messages/{n}"), ("POST", "/admin/messages/{n}/review"),
    ("POST", "/admin/users/{n}/active"), ("POST", "/admin/campaigns/{n}/label"),
    ("POST", "/admin/api-keys/{n}/revoke"),
])
@pytest.mark.parametrize("number", ["99999999999999999999999", "9223372036854775808", "0"])
def test_an_id_no_row_can_have_is_404_not_a_database_error(admin_client, method, path,
                                                            number):
    """Past the id columns' range (2**63 - 1, BIGINT's and SQLite's), or 0: no such row,
    not a 500."""
    send = admin_client.get if method == "GET" else admin_client.post
    response = send(path.format(n=number), data={"label": "spam"})
    assert response.status_code == 404


@pytest.mark.parametrize("method, path", [
    ("POST", "/admin/users/{n}/active"), ("POST", "/admin/campaigns/{n}/label"),
    ("POST", "/admin/api-keys/{n}/revoke"),
])
def test_an_id_past_integer_is_404_for_the_tables_with_integer_ids(admin_client, method,
                                                                   path):
    """Users, campaigns and API keys keep INTEGER ids on PostgreSQL (migration 0011 made
    only the message tables' BIGINT): 3000000000 cannot name one, and asking PostgreSQL
    would fail with "integer out of range"."""
    assert admin_client.post(path.format(n=3000000000), data={"label": "spam"}
                             ).status_code == 404


def test_a_message_id_past_integer_is_looked_for(admin_client):
    """Message ids are BIGINT (migration 0011): 3000000000 may name a message, and one no
    message has is looked for and not found, not a database error."""
    assert admin_client.get("/admin/messages/3000000000").status_code == 404
    review = admin_client.post("/admin/messages/3000000000/review", data={"label": "spam"},
                               follow_redirects=True)
    assert review.status_code == 404 or "Not recorded" in review.get_data(as_text=True)


def test_invisible_format_characters_in_a_body_are_marked_too(moderator_client, add_messages):
    """b306dd1 marks "invisible ones [that] hide inside words" (docs: a zero-width space in
    "fr\\u200bee"), but only U+200B, U+2060 and U+FEFF: a soft hyphen (U+00AD) or an
    invisible separator (U+2063) hides inside a word just the same ("fr\\u00adee" reads
    "free" in the browser, and slips past a moderator's eye and any keyword filter)."""
    body = "Claim your fr\u00adee prize: ca\u2063sh now"
    (mid,) = add_messages((body, 0.5))
    html = moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True)
    for hidden in "\u00ad\u2063":
        assert hidden not in html, hex(ord(hidden))
    assert "[U+00AD]" in html and "[U+2063]" in html


def test_an_unknown_admin_address_gets_the_admin_error_page(client, viewer_client):
    """/admin/nonexistent and /admin/messages/abc match no rule, so the blueprint's handler
    never saw them: werkzeug's bare "Not Found", no navigation, no Cache-Control. Now the
    admin page with the admin headers: navigation when logged in, none for a visitor. The
    JSON API's own 404s stay JSON."""
    for path in ("/admin/nonexistent", "/admin/messages/abc", "/admin/queue/x/y"):
        for who, logged_in in ((client, False), (viewer_client, True)):
            answer = who.get(path)
            page = answer.get_data(as_text=True)
            assert answer.status_code == 404 and answer.mimetype == "text/html", path
            assert "There is no page at this address." in page and "<h1>Error 404</h1>" in page
            assert ('<nav class="nav" aria-label="Main">' in page) == logged_in, (path, logged_in)
            assert answer.headers["Cache-Control"] == "no-store"
            assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
    wrong = viewer_client.get("/admin/queue/decide")  # a POST-only action
    assert wrong.status_code == 405 and "Error 405" in wrong.get_data(as_text=True)
    assert "POST" in wrong.headers["Allow"] and wrong.headers["Cache-Control"] == "no-store"
    api = client.get("/api/v1/nonexistent")
    assert api.status_code in (401, 404) and api.is_json
    assert client.get("/administrator").status_code == 404  # not under /admin: as before


def _contrast(one: str, two: str) -> float:
    """WCAG's contrast ratio of two #rrggbb colours."""
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
                   for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(one), luminance(two)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_focus_ring_has_3_to_1_contrast_where_it_shows():
    """WCAG 1.4.11: what shows focus needs 3:1 against what is next to it. #8fb4ff was 2.1:1
    on white; the last rule for the focused field wins, in the top bar its own."""
    from pathlib import Path

    css = (Path(__file__).parents[1] / "web" / "static" / "admin.css").read_text()
    assert round(_contrast("#8fb4ff", "#ffffff"), 1) == 2.1  # the audit's number
    ring = re.findall(r"input:focus, select:focus, button:focus-visible \{[^}]*"
                      r"outline(?:-color)?: (?:2px solid )?(#[0-9a-f]{6})", css)[-1]
    page = re.search(r"--bg: (#[0-9a-f]{6})", css).group(1)
    for background in ("#ffffff", page, "#fbfcfe"):  # cards, the page, a message's box
        assert _contrast(ring, background) >= 3, (ring, background)
    top = re.search(r"\.topbar \{[^}]*background: (#[0-9a-f]{6})", css).group(1)
    bar_ring = re.search(r"\.topbar button:focus-visible[^{]*\{[^}]*outline: 2px solid "
                         r"(#[0-9a-f]{6})", css).group(1)
    assert _contrast(bar_ring, top) >= 3


def test_an_error_is_announced_at_once_and_information_politely(admin_client):
    """role=alert for an error flash, role=status for the rest; admin.js writes either
    again after the load (data-announce), as screen readers announce only a change. An
    error takes the focus (tabindex), and leads the title."""
    error = admin_client.post("/admin/messages/bulk", data={"label": "x"},
                              follow_redirects=True).get_data(as_text=True)
    assert ('<p class="flash flash-error" role="alert" data-announce tabindex="-1" '
            'id="page-error">Choose spam or ham.</p>') in error
    assert "<title>Error: Messages · spamguard</title>" in error
    info = admin_client.post("/admin/logout", follow_redirects=True).get_data(as_text=True)
    assert '<p class="flash flash-info" role="status" data-announce>Logged out.</p>' in info
    assert "<title>Log in · spamguard</title>" in info


@pytest.mark.parametrize("text, marked", [
    ("BA\U0001d173NK", ["U+1D173"]),  # a musical format character
    ("ca\U0001bca0sh fr\U00013430ee", ["U+1BCA0", "U+13430"]),  # shorthand, Egyptian
    ("fr\U000e0001ee fr\U000e0041\U000e0042ee", ["U+E0001", "U+E0041", "U+E0042"]),  # tags
    ("fr\ufe0fee \ufe0f x\U000e0100", ["U+FE0F", "U+FE0F", "U+E0100"]),  # selectors hiding
    ("\u2764\ufe0f 1\ufe0f\u20e3 \u845b\U000e0100 \u1828\u180b", []),  # selectors varying
    ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", []),  # a flag
    ("\U0001f3f4\U000e0067\U000e0062 ok", ["U+E0067", "U+E0062"]),  # no cancel tag: no flag
    # A sentence spelt in tags behind a flag's start is no flag (a review of the change).
    ("\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "sendpin") + "\U000e007f",
     [f"U+{0xE0000 + ord(c):04X}" for c in "sendpin"] + ["U+E007F"]),
    # Selectors after a letter of any script hide in the word; after ℹ one makes an emoji.
    ("r\u00e9\ufe0fsum\u00e9 \u0421\u0431\u0435\u0440\ufe0f \u2139\ufe0f", ["U+FE0F", "U+FE0F"]),
    # Standardized variants of Myanmar and CJK letters use U+FE00-FE02; VS16 in a CJK word
    # only hides.
    ("\u1000\ufe00 \u845b\ufe00 \u514d\ufe0f\u8d39", ["U+FE0F"]),
])
def test_every_invisible_format_character_is_marked_and_emoji_sequences_are_not(text,
                                                                                marked):
    """A helper's browser check found "BA\\U0001d173NK" shown as "BANK" on every page,
    and tag characters and variation selectors hidden inside words: every format character
    is marked now, tags outside a flag and selectors that vary nothing too."""
    from spamguard.admin.base import controls_as_text, hidden_characters

    assert [f"U+{ord(m.group()):04X}" for m in hidden_characters(text)] == marked
    shown = controls_as_text(text)
    assert all(f"[{mark}]" in shown for mark in marked)
    if not marked:
        assert shown == text


def test_a_sender_shows_its_line_breaks_and_tabs_and_a_body_keeps_them(
        moderator_client, add_messages):
    (mid,) = add_messages(("two\nlines\tand a tab", 0.5), sender="BA\nNK\t1\u2028")
    html = moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True)
    assert "BA<span class=\"ctl\" dir=\"ltr\" title=\"control character\">[U+000A]</span>NK" \
        in html
    assert "[U+0009]</span>1" in html and "two\nlines\tand a tab" in html
    assert "[U+2028]" in html and "\u2028" not in html  # a line separator too


def test_filter_terms_notes_and_a_hold_reason_mark_a_bidi_override(
        moderator_client, admin_client, add_messages, db_session_factory):
    """Each of these showed text reversed by a U+202E typed or sent into it: the bulk
    relabel's filter terms (a sender, a search term), a review note, a sender rule's note,
    the promotion hold's reason (which reversed the banner's own words after it)."""
    from spamguard.db import session_scope
    from spamguard.services import promotion_hold, reviews, sender_rules

    (mid,) = add_messages(("re\u202eversed", 0.9), sender="\u202eMyBank")
    with session_scope(db_session_factory) as session:
        reviews.add_review(session=session, message_id=mid, label="spam", user_id=None,
                           note="\u202eeton desrever")
        sender_rules.set_rule(session, sender="SHOP", action="block", note="\u202eetoN",
                              by="admin")
        promotion_hold.hold(session, reason="\u202echecking by hand", by="admin")
    confirm = moderator_client.post("/admin/messages/bulk?scope=filter", data={
        "label": "spam", "sender": "\u202eMyBank", "q": "re\u202eversed"})
    pages = {"confirm": confirm.get_data(as_text=True),
             "message": moderator_client.get(f"/admin/messages/{mid}").get_data(as_text=True),
             "senders": admin_client.get("/admin/senders").get_data(as_text=True),
             "dashboard": moderator_client.get("/admin/dashboard").get_data(as_text=True)}
    terms = pages.pop("confirm").split('<ul class="filter-terms">')[1].split("</ul>")[0]
    assert "\u202e" not in terms  # (the form's hidden inputs keep the values as given)
    assert "[U+202E]</span>MyBank" in terms and "re<span class=\"ctl\"" in terms
    for name, page in pages.items():
        assert "\u202e" not in page, name
    assert "[U+202E]</span>eton desrever" in pages["message"]
    assert "[U+202E]</span>etoN" in pages["senders"]
    assert "[U+202E]</span>checking by hand</bdi>. Retraining makes" in pages["dashboard"]


@pytest.mark.parametrize("locale", [{"LC_ALL": "C.UTF-8"}, {"LC_ALL": "C"}, {}])
@pytest.mark.parametrize("sender", ["\u202eMyBank", "it's a \\ \u200bshop", "BA\nNK",
                                    "fr\U000e0041ee", "ACME Ltd", "\u0421\u0431\u0435\u0440\u200b"])
def test_the_erase_command_offered_for_a_sender_names_that_sender(sender, locale):
    """For more than 50,000 messages the erase page offers a command; with a marked
    character it said --sender '[U+202E]MyBank', which named another sender and erased
    nothing. The shell must hand spamguard the sender's very characters."""
    import subprocess

    from spamguard.admin.message_erase import command

    offered = command(sender)
    assert offered.startswith("spamguard messages erase --sender ")
    word = offered.removeprefix("spamguard messages erase --sender ")
    assert "\u202e" not in word and "\n" not in word and "\u200b" not in word
    # In any locale (cron's, a container's: "\\u202e" needed a UTF-8 one, a review found).
    echoed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True,
                            env={"PATH": "/usr/bin:/bin", **locale}, check=True).stdout
    assert echoed.decode("utf-8") == sender
