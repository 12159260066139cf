"""End-to-end: a moderator logs in, reviews with the keyboard, labels a campaign; an admin
promotes a model. Screenshots of each main page go to ``$SPAMGUARD_ARTIFACTS``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.browser.conftest import SIZES, artifacts_dir, settled_text, shoot
from tests.fixtures_admin import PASSWORD

pytestmark = pytest.mark.browser

BODIES = [("WINNER! Claim your £1000 prize, call 09061701461 now", 0.97),
          ("Are we still on for lunch tomorrow?", 0.03),
          ("Your parcel is waiting, pay the fee at http://bit.ly/x", 0.58),
          ("Can you call me when you get this", 0.44),
          ("<script>alert(1)</script> free ringtone txt TONE", 0.51)]
WAVE = [f"FREE entry to win a phone! Text WIN to 8712{i}" for i in range(4)]


def login(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def current_id(page) -> int:
    return int(page.get_attribute("#current", "data-message-id"))


@pytest.fixture
def seeded(make_user, add_messages, db_session_factory, two_versions):
    from spamguard.services import campaigns

    make_user("mo", "moderator")
    make_user("root", "admin")
    ids = add_messages(*BODIES)
    add_messages(*[(body, 0.9) for body in WAVE])
    with db_session_factory() as session:
        # One vector for the wave, distinct ones for the rest: one campaign of four.
        def encoder(texts):
            return np.asarray([[1.0, 0, 0] if "FREE entry" in t else
                               [0, np.cos(i), np.sin(i)] for i, t in enumerate(texts)],
                              dtype=np.float32)

        campaigns.rebuild_campaigns(session=session, encoder=encoder, min_size=3)
        session.commit()
    return ids, two_versions


def test_review_queue_with_the_keyboard(page, live_server, seeded, db_session_factory):
    from spamguard.models import Message

    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    shoot(page, "queue")
    page.keyboard.press("Tab")  # the first Tab shows the skip link, Enter jumps to <main>
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.locator(".skip-link").bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.mouse.click(1, 1)
    page.set_viewport_size(SIZES["phone"])  # who is logged in shows on a phone too
    assert page.is_visible(".whoami span") and "mo" in page.inner_text(".whoami span")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    page.set_viewport_size(SIZES["laptop"])
    decided = []
    for key in ("s", "h"):
        decided.append(current_id(page))
        with page.expect_navigation():
            page.keyboard.press(key)
    skipped = current_id(page)
    with page.expect_navigation():
        page.keyboard.press("k")
    assert current_id(page) not in (*decided, skipped)
    with page.expect_navigation():
        page.keyboard.press("u")
    assert current_id(page) == decided[1]  # the undone decision comes back first
    assert "Undid your decision" in settled_text(page)
    page.fill("input[name=note]", "typing s here must not decide")
    assert current_id(page) == decided[1]
    # Enter in the note submits nothing (it pressed Spam, the form's first button, before).
    page.press("input[name=note]", "Enter")
    page.wait_for_timeout(500)
    assert current_id(page) == decided[1]
    with db_session_factory() as session:
        labels = [session.get(Message, i).review_label for i in decided]
    assert labels == ["spam", None]
    # A held key labels one message, not one per repeat.
    page.mouse.click(1, 1)
    with page.expect_navigation():
        page.keyboard.down("h")
    held = current_id(page)
    page.keyboard.down("h")  # the key is still down: a repeat
    page.wait_for_timeout(500)
    page.keyboard.up("h")
    assert current_id(page) == held
    with db_session_factory() as session:
        assert session.get(Message, decided[1]).review_label == "ham"
        assert session.get(Message, held).review_label is None
    # The script-like body is shown as text, not run.
    page.goto(f"{live_server}/admin/messages?q=ringtone")
    assert "<script>alert(1)</script>" in page.inner_text("table.messages")
    shoot(page, "messages")
    page.click("table.messages a.snippet")
    shoot(page, "message")


def test_label_a_campaign(page, live_server, seeded, db_session_factory):
    from sqlalchemy import select

    from spamguard.models import Message

    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/campaigns")
    shoot(page, "campaigns")
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))  # "Cancel": nothing is labelled, the page stays
    page.click("article.campaign button[value=spam]")
    page.wait_for_timeout(300)
    campaign = page.get_attribute("article.campaign", "data-campaign-id")
    assert asked == [f"Label all 4 messages of campaign #{campaign} spam?"]
    with db_session_factory() as session:
        assert not session.scalars(select(Message.review_label).where(
            Message.review_label.is_not(None))).all()
    page.once("dialog", answer(True))
    with page.expect_navigation():
        page.click("article.campaign button[value=spam]")
    assert "4 messages labelled spam" in settled_text(page)
    with db_session_factory() as session:
        labels = session.scalars(select(Message.review_label).where(
            Message.body.like("FREE entry%"))).all()
    assert labels == ["spam"] * 4


def test_admin_promotes_a_model(page, live_server, seeded, db_session_factory):
    from spamguard.models import ModelVersion

    _, (first, second) = seeded
    login(page, live_server, "root")
    shoot(page, "dashboard")
    page.goto(f"{live_server}/admin/models")
    shoot(page, "models")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_navigation():
        page.click(f"button[data-promote='{second}']")
    assert asked == [f"Make {second} the active model? Every worker switches to it within "
                     "seconds."]
    assert f"Version {second} is now active" in settled_text(page)
    with db_session_factory() as session:
        assert session.get(ModelVersion, second).status == "active"
    page.goto(f"{live_server}/admin/models/{first}")
    page.wait_for_load_state("networkidle")
    shoot(page, "model-report")  # ends at the laptop size
    # sklearn's report is a 53-column table: at 1280 px all three fit, unwrapped, unscrolled
    reports = page.locator("pre.report-text")
    assert reports.count() == 3
    for k in range(3):
        box = reports.nth(k)
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth"), k
        assert "support" in box.inner_text().splitlines()[0]
    # the three confusion matrices get the page's width, not half of it (labels readable)
    assert page.locator("img[alt^='Confusion matrices']").evaluate("e => e.clientWidth") > 900
    # ... and each image links to itself at full size
    link = page.locator("a.image-link:has(img[alt^='Confusion matrices'])")
    assert link.get_attribute("href") == page.get_attribute("img[alt^='Confusion matrices']", "src")
    page.goto(f"{live_server}/admin/models/compare?a={first}&b={second}")
    shoot(page, "compare")
    page.goto(f"{live_server}/admin/users")
    shoot(page, "users")


def test_admin_rolls_back_and_releases_the_hold(page, live_server, seeded, db_session_factory):
    """Roll back asks first and puts automatic promotion on hold: the banner says so (on a
    phone too, without sideways scrolling), and Release asks before it lets retraining
    promote again."""
    from spamguard.services import promotion_hold, registry

    _, (first, second) = seeded
    with db_session_factory() as session:
        registry.promote(session=session, version_id=second)
        session.commit()
    login(page, live_server, "root")
    page.goto(f"{live_server}/admin/models")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_navigation():
        page.click("form[action$='/models/rollback'] button")
    assert asked[-1].startswith("Roll back to the version that was active before this one?")
    banner = page.locator(".hold-banner")
    assert "Automatic promotion is on hold" in banner.inner_text()
    assert f"rollback from {second} to {first}" in banner.inner_text()
    page.set_viewport_size(SIZES["phone"])
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    shoot(page, "models-held")
    page.set_viewport_size(SIZES["laptop"])
    with page.expect_navigation():
        banner.locator("button").click()
    assert asked[-1].startswith("Release the hold?")
    assert "Released the hold on automatic promotion" in settled_text(page)
    assert page.locator(".hold-banner").count() == 0
    with db_session_factory() as session:
        assert promotion_hold.current(session) is None


def test_admin_deletes_a_model_version_without_javascript(chromium, live_server, seeded,
                                                          db_session_factory):
    """Delete asks on a page of its own (no dialog: it works with JavaScript off), and the
    models page then says what was freed."""
    from spamguard.models import ModelVersion

    _, (first, second) = seeded
    context = chromium.new_context(viewport=SIZES["laptop"], java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, live_server, "root")
        page.goto(f"{live_server}/admin/models")
        with page.expect_navigation():
            page.click(f"a[aria-label='Delete version {second}']")
        assert page.inner_text("h1") == f"Delete model version {second}?"
        shoot(page, "model-delete")
        with page.expect_navigation():
            page.click("button.danger")
        assert f"Deleted version {second}: removed its folder" in page.inner_text("main")
        shoot(page, "models-after-delete")
        page.set_viewport_size(SIZES["phone"])  # the long folder path breaks, on a phone too
        assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    finally:
        context.close()
    with db_session_factory() as session:
        assert session.get(ModelVersion, second).status == "deleted"
        assert session.get(ModelVersion, first).status == "active"


def test_keyboard_shortcuts_can_be_switched_off(page, live_server, seeded,
                                               db_session_factory):
    """WCAG 2.1.4: single-key shortcuts can be turned off, and stay off in this browser
    (a browser audit: a stray key, or speech input, labelled a message)."""
    from spamguard.models import Review

    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    switch = page.locator("input[data-shortcuts-switch]")
    assert switch.is_visible() and switch.is_checked()
    switch.uncheck()
    page.mouse.click(1, 1)
    shown = current_id(page)
    page.keyboard.press("s")
    page.wait_for_timeout(500)
    assert current_id(page) == shown
    with db_session_factory() as session:
        assert session.query(Review).count() == 0
    page.reload()
    assert not page.locator("input[data-shortcuts-switch]").is_checked()
    page.locator("input[data-shortcuts-switch]").check()
    page.mouse.click(1, 1)
    with page.expect_navigation():
        page.keyboard.press("s")
    with db_session_factory() as session:
        assert session.query(Review).count() == 1


def test_phone_tables_show_their_buttons_without_sideways_scrolling(page, live_server, seeded,
                                                                   db_session_factory):
    """At 390 px the models table's Promote and Delete, the users table's Disable and the API keys
    table's Revoke are on screen: the less needed columns step aside instead of pushing them
    out of the table's box. (The API key is made through the page's form first.)"""
    from spamguard.models import TrainingRun

    with db_session_factory() as session:  # a rejected run: its status, candidate and reason
        candidate = seeded[1][1]
        session.add(TrainingRun(status="rejected", trigger="cron",
                                candidate_version_id=candidate,
                                summary=f"retrain: rejected {candidate}: evaluation set mcc "
                                        "0.9416 vs active 0.9638 (margin 0), ham FPR 0.17% vs "
                                        "0.17% - mcc is worse; 12 flips (3 fixed, 9 broken)"))
        session.commit()
    login(page, live_server, "root")
    page.goto(f"{live_server}/admin/api-keys")  # an admin makes a key for a gateway
    page.fill("input[name=name]", "gateway")
    for scope in ("classify", "read"):
        page.uncheck(f"input[name=scope][value={scope}]")
    with page.expect_navigation():
        page.click("form.card button[type=submit]")
    assert page.input_value("#new-key").startswith("sg_")
    assert "It may: submit." in settled_text(page)
    shoot(page, "api-keys")
    for path, button in (("/admin/models", "button[data-promote]"),
                         ("/admin/models", "a[aria-label^='Delete version']"),
                         ("/admin/users", "form[action*='/active'] button"),
                         ("/admin/api-keys", "button[aria-label^='Revoke']")):
        page.set_viewport_size(SIZES["phone"])
        page.goto(f"{live_server}{path}")
        wrap = page.locator(".table-wrap").first
        assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), path
        box = page.locator(button).first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= SIZES["phone"]["width"], path
    page.goto(f"{live_server}/admin/models")  # the training runs table fits too
    runs = page.locator(".table-wrap").nth(1)
    assert "mcc is worse" in runs.inner_text()
    assert runs.evaluate("e => e.scrollWidth <= e.clientWidth")
    shoot(page, "models-runs")
    page.set_viewport_size(SIZES["laptop"])  # at laptop size every column is there
    page.goto(f"{live_server}/admin/models")
    assert page.locator("button[data-promote]").first.is_visible()
    assert page.locator("th", has_text="Backbone").is_visible()


def test_the_icon_loads_under_the_csp(page, live_server):
    """No 404 in the console for the icon, and the CSP lets the page show it."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server}/admin/login")
    href = page.get_attribute("link[rel=icon]", "href")
    width = page.evaluate("async (src) => { const img = new Image(); img.src = src; "
                          "await img.decode(); return img.naturalWidth; }", href)
    assert width > 0
    assert page.goto(f"{live_server}/favicon.ico").ok
    assert not errors, errors


def test_spot_check_with_the_keyboard_on_a_phone(page, live_server, seeded, add_messages,
                                                 db_session_factory):
    """A moderator spot-checks the active model's spam verdicts at 390 px: the page fits,
    "h" records the drawn message as a wrong spam verdict, and the estimate says so."""
    from spamguard.models import Review, SpotCheckDraw

    _, (active, _) = seeded
    drawable = add_messages(("Hi mum, this is my new number, can you text me back", 0.91),
                            ("Barclays: a payment of £12.00 to TFL was made today", 0.95),
                            model_version_id=active)
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/spot-check?verdict=spam")
    shoot(page, "spot-check")  # leaves the laptop size
    page.set_viewport_size(SIZES["phone"])
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"]
    drawn = current_id(page)
    assert drawn in drawable
    page.reload()
    assert current_id(page) == drawn  # the draw is kept
    with page.expect_navigation():
        page.keyboard.press("h")
    assert f"Message {drawn}: ham; the model had said spam (0." in settled_text(page)
    assert current_id(page) in set(drawable) - {drawn}
    page.goto(f"{live_server}/admin/spot-check")  # blind: the verdict is not shown
    shoot(page, "spot-check-blind")
    assert "verdict hidden until you decide" in page.inner_text("#current")
    row = page.locator("table tr", has_text="spam").last.inner_text()
    assert row.split("\t")[:4] == ["spam", "1", "1", "100.0%"], row
    page.set_viewport_size(SIZES["phone"])  # the estimates fit, "Skipped" and all
    estimates = page.locator("section.card .table-wrap")
    assert estimates.evaluate("e => e.scrollWidth <= e.clientWidth")
    estimates.screenshot(path=str(artifacts_dir() / "spot-check-estimates-phone.png"))
    page.set_viewport_size(SIZES["laptop"])
    with db_session_factory() as session:
        assert session.query(Review).filter_by(message_id=drawn).one().label == "ham"
        row = session.query(SpotCheckDraw).filter_by(message_id=drawn).one()
        assert (row.verdict, row.outcome) == ("spam", "labelled")


def test_a_cross_site_form_does_not_log_a_moderator_out(page, live_server, make_user):
    """Another site auto-submits a form to any admin action. SameSite=Lax keeps the session
    cookie off that POST, so it arrives "logged out"; _protect now flashes "That was not
    recorded" into a new session and answers with its Set-Cookie, which replaces the
    moderator's login cookie: any site can log a moderator out. (Before 977280a the CSRF
    check came first: a 400 that set no cookie.)"""
    make_user("mo", "moderator")
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/queue")
    assert "/admin/login" not in page.url
    evil = (f"<form method=post action='{live_server}/admin/queue/skip'>"
            "<input name=message_id value=1></form>"
            "<script>document.forms[0].submit()</script>")
    page.route("http://attacker.example/", lambda route: route.fulfill(
        status=200, content_type="text/html", body=evil))
    with page.expect_navigation(url="**/admin/**"):
        page.goto("http://attacker.example/")
    page.goto(f"{live_server}/admin/queue")
    assert "/admin/login" not in page.url, "the cross-site POST logged the moderator out"


def test_a_long_sender_stays_in_its_column(page, live_server, make_user, add_messages):
    """A 250-character sender (the API takes one) made the message list 3070 px wide in its
    1162 px box, pushing Message, Model, P(spam) and Review off screen: it is now cut with
    an ellipsis, whole on hover; the queue's card and a message's similar ones fit too."""
    make_user("mo", "moderator")
    sender = "+44" + "7" * 247
    add_messages(("Your parcel is waiting", 0.5), ("Your parcel is waiting", 0.6),
                 sender=sender)
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/messages")
    wrap = page.locator(".table-wrap")
    assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth")
    review = page.locator("table.messages th", has_text="Review").bounding_box()
    assert review["x"] + review["width"] <= SIZES["laptop"]["width"]
    assert page.get_attribute("table.messages .party", "title") == sender
    for path in ("/admin/queue", page.get_attribute("table.messages a.snippet", "href")):
        page.goto(path if path.startswith("http") else f"{live_server}{path}")
        for size in ("laptop", "phone"):
            page.set_viewport_size(SIZES[size])
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= SIZES[size]["width"], (path, size)
        page.set_viewport_size(SIZES["laptop"])


def test_a_message_block_takes_its_texts_direction(page, live_server, make_user,
                                                    add_messages):
    """A Hebrew message's block is right to left and its text starts at the right (it
    resolved to left to right: dir="auto" skipped the text inside its <bdi>), even when
    it starts with a control shown as a red [U+202E]; an English one stays left."""
    make_user("mo", "moderator")
    hebrew, english = add_messages(("\u202eשלום, זכית בפרס! התקשר עכשיו", 0.6),
                                   ("Hello, you won a prize", 0.6))
    login(page, live_server, "mo")
    for mid, direction in ((hebrew, "rtl"), (english, "ltr")):
        page.goto(f"{live_server}/admin/messages/{mid}")
        body = page.locator("pre.body")
        assert body.evaluate("e => getComputedStyle(e).direction") == direction
        # where the text's line sits in the block: flush right or flush left
        gap = body.evaluate("""e => { const r = document.createRange(); r.selectNodeContents(e);
            const text = r.getBoundingClientRect(), box = e.getBoundingClientRect();
            const pad = parseFloat(getComputedStyle(e).paddingLeft);
            return [text.left - box.left - pad, box.right - pad - text.right]; }""")
        near, far = (gap[1], gap[0]) if direction == "rtl" else gap
        assert near < 2 and far > 100, (direction, gap)
    page.goto(f"{live_server}/admin/messages/{hebrew}")
    mark = page.locator("pre.body .ctl")
    assert mark.inner_text() == "[U+202E]"
    assert mark.evaluate("e => getComputedStyle(e).color") == "rgb(166, 27, 27)"


def test_long_words_in_notes_key_names_and_the_erase_page_wrap(page, live_server, make_user,
                                                                add_messages,
                                                                db_session_factory):
    """A helper's browser check: a 2,000-character note without spaces made a message's
    Reviews table 20,922 px wide, a 100-character API key name pushed Revoke off screen,
    and a 250-character sender made the sender erase page 2,647 px wide. They wrap now."""
    from spamguard.db import session_scope
    from spamguard.services import apikeys, reviews

    make_user("ad", "admin")
    (mid,) = add_messages(("Your parcel is waiting", 0.5), sender="B" * 250)
    with session_scope(db_session_factory) as session:
        reviews.add_review(session=session, message_id=mid, label="ham", user_id=None,
                           note="n" * 2000)
        apikeys.create_api_key(session=session, name="k" * 100)
    login(page, live_server, "ad")
    for path in (f"/admin/messages/{mid}", "/admin/api-keys",
                 f"/admin/messages/{mid}/erase?scope=sender"):
        page.goto(f"{live_server}{path}")
        for size in ("laptop", "phone"):
            page.set_viewport_size(SIZES[size])
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= SIZES[size]["width"], (path, size, width)
        page.set_viewport_size(SIZES["laptop"])
        for wrap in page.locator(".table-wrap").all():  # (on a phone some tables scroll)
            assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), path


def test_the_dashboard_chart_keeps_its_colours_under_its_policy(page, live_server, seeded):
    """The chart is served with a policy of its own (no script; matplotlib's inline styles
    allowed): opened by its address, its bars are still drawn in their colours."""
    login(page, live_server, "mo")
    page.goto(f"{live_server}/admin/dashboard/volume.svg?bucket=day")
    fills = page.evaluate("""[...document.querySelectorAll('path')]
        .map(p => getComputedStyle(p).fill)""")
    assert "rgb(192, 57, 43)" in fills  # the spam bars' #c0392b
