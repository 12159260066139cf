"""POST /webhook/twilio: signatures, storage, retries, bad input, TwiML answers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spamguard.models import Message, Verdict
from tests.fixtures_service import (
    count_rows,
    database_dies_once_a_message_is_stored,
    post_signed,
    sign,
    twilio_params,
)

pytestmark = pytest.mark.usefixtures("reuse_backbones")


def stored(app) -> list[Message]:
    from sqlalchemy import select

    from spamguard.extensions import get_db

    with app.app_context(), get_db().session_factory() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def test_signed_request_is_stored_classified_and_answered(app, post_twilio):
    params = twilio_params("WINNER!! Claim your £1000 prize, call 09061701461")
    response = post_twilio(params)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.data.decode().endswith("<Response />")
    [message] = stored(app)
    assert (message.gateway, message.external_id) == ("twilio", params["MessageSid"])
    assert (message.sender, message.recipient, message.body) == (
        params["From"], params["To"], params["Body"])
    assert message.verdict_status == "classified"
    assert message.model_label in {"spam", "ham"}
    assert message.raw["AccountSid"] == params["AccountSid"]
    assert count_rows(app, Verdict) == 1


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl"])
def test_missing_or_wrong_signature_is_403_and_stores_nothing(app, client, signature):
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = client.post("/webhook/twilio", data=twilio_params(), headers=headers)
    assert response.status_code == 403
    assert "Signature" in response.get_json()["error"]
    assert count_rows(app, Message) == 0


def test_signature_for_other_params_is_rejected(app, post_twilio):
    params = twilio_params()
    forged = sign({**params, "Body": "something else"})
    assert post_twilio(params, signature=forged).status_code == 403


def test_signature_with_wrong_token_is_rejected(app, post_twilio):
    params = twilio_params()
    assert post_twilio(params, signature=sign(params, token="other")).status_code == 403


def test_a_signature_for_another_url_logs_the_url_it_was_checked_against(make_app, caplog):
    """A wrong public base URL made every webhook a 403 with nothing in the log."""
    app = make_app(public_base_url="https://sms.example.com")
    params = twilio_params("hello")
    with caplog.at_level("WARNING"):
        response = post_signed(app.test_client(), params,
                               url="https://other.example.org/webhook/twilio")
    assert response.status_code == 403
    assert "does not match https://sms.example.com/webhook/twilio" in caplog.text
    assert "hello" not in caplog.text  # never the message


def test_retry_with_same_message_sid_stores_one_row_and_same_answer(app, post_twilio):
    params = twilio_params()
    first, second = post_twilio(params), post_twilio(params)
    assert first.status_code == second.status_code == 200
    assert first.data == second.data
    assert count_rows(app, Message) == 1
    assert count_rows(app, Verdict) == 1


def test_public_base_url_is_the_signed_url(make_app):
    client = make_app(public_base_url="https://sms.example.com/").test_client()
    params = twilio_params()
    assert post_signed(client, params).status_code == 403
    public = post_signed(client, params, url="https://sms.example.com/webhook/twilio")
    assert public.status_code == 200


@pytest.mark.parametrize("query", ["cb=https%3A%2F%2Fx.example%2Fy%3Fa%3D1", "name=Jos%C3%A9",
                                   "a=%7Eb&c=d+e"])
@pytest.mark.parametrize("public_base_url", ["", "https://sms.example.com"])
def test_signature_covers_the_query_string_as_sent(make_app, query, public_base_url):
    """Twilio signs the configured URL verbatim: percent-escapes in it must not be decoded."""
    client = make_app(public_base_url=public_base_url).test_client()
    params = twilio_params()
    root = public_base_url or "http://localhost"
    response = client.post(f"/webhook/twilio?{query}", data=params, headers={
        "X-Twilio-Signature": sign(params, url=f"{root}/webhook/twilio?{query}")})
    assert response.status_code == 200


@pytest.mark.parametrize("trust_proxy, expected", [(True, 200), (False, 403)])
def test_proxy_headers_honoured_only_when_trusted(make_app, trust_proxy, expected):
    client = make_app(trust_proxy=trust_proxy).test_client()
    params = twilio_params()
    signature = sign(params, url="https://sms.example.com/webhook/twilio")
    response = client.post("/webhook/twilio", data=params, headers={
        "X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "sms.example.com"})
    assert response.status_code == expected


@pytest.mark.parametrize("extra, signed_url, expected", [
    ({"X-Forwarded-Port": "8443"}, "https://sms.example.com:8443/webhook/twilio", 200),
    ({"X-Forwarded-Prefix": "/sms"}, "https://sms.example.com/sms/webhook/twilio", 403),
    ({"X-Forwarded-Prefix": "/sms"}, "https://sms.example.com/webhook/twilio", 200),
])
def test_trusted_proxy_headers_are_proto_host_and_port_not_prefix(make_app, extra, signed_url,
                                                                  expected):
    """As docs/service.md lists them (ProxyFix x_for, x_proto, x_host, x_port)."""
    client = make_app(trust_proxy=True).test_client()
    params = twilio_params()
    response = client.post("/webhook/twilio", data=params, headers={
        "X-Twilio-Signature": sign(params, url=signed_url), "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "sms.example.com", **extra})
    assert response.status_code == expected


def test_sharedkey_signing_is_not_supported(app, post_twilio):
    """Documented: only auth token signatures are checked; SharedKey ones get 403."""
    from twilio.request_validator import RequestValidator

    params = twilio_params()
    signature = RequestValidator("shared-key-secret").compute_signature(
        "http://localhost/webhook/twilio", params, algorithm="HMAC_SHA256")
    response = post_twilio(params, signature=signature, headers={
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"})
    assert response.status_code == 403
    assert count_rows(app, Message) == 0


def test_a_missing_auth_token_is_logged_at_each_refused_delivery(make_app, caplog):
    """The 403 says only that the signature is missing or invalid; the log must say the
    service has no token to check it with (the start-up warning scrolls away)."""
    app = make_app(twilio_auth_token="")
    with caplog.at_level("WARNING", logger="spamguard.webhook"):
        response = post_signed(app.test_client(), twilio_params("hello"))
    assert response.status_code == 403
    assert "X-Twilio-Signature cannot be checked: SPAMGUARD_TWILIO_AUTH_TOKEN is not set" in (
        caplog.text)
    assert count_rows(app, Message) == 0


def test_validation_off_accepts_unsigned(make_app):
    client = make_app(twilio_validate=False).test_client()
    assert client.post("/webhook/twilio", data=twilio_params()).status_code == 200


def test_validation_off_ignores_a_placeholder_signature_header(make_app):
    """Unchecked, the header is no signature: a harness sending the same placeholder with
    every message got 403 ("already delivered another message") from the second on."""
    app = make_app(twilio_validate=False)
    client = app.test_client()
    for params in (twilio_params("one"), twilio_params("two")):
        response = client.post("/webhook/twilio", data=params,
                               headers={"X-Twilio-Signature": "placeholder"})
        assert response.status_code == 200, response.data
    assert [m.signature_hash for m in stored(app)] == [None, None]


@pytest.mark.parametrize("raw", ["", " ", "1", "on", "TRUE"])
def test_empty_or_true_validate_variable_keeps_checks_on(make_app, monkeypatch, raw):
    monkeypatch.setenv("SPAMGUARD_TWILIO_VALIDATE", raw)
    app = make_app()
    assert app.config["SPAMGUARD"].twilio_validate is True
    assert app.test_client().post("/webhook/twilio", data=twilio_params()).status_code == 403
    assert count_rows(app, Message) == 0


@pytest.mark.parametrize("raw", ["enabled", "2", "y"])
def test_unknown_validate_value_refuses_to_build_the_app(make_app, monkeypatch, raw):
    """An unrecognised value used to mean "off": anyone could post forged messages."""
    monkeypatch.setenv("SPAMGUARD_TWILIO_VALIDATE", raw)
    with pytest.raises(ValueError, match=f"SPAMGUARD_TWILIO_VALIDATE={raw!r} is not valid"):
        make_app()


def test_reply_text_is_escaped_twiml(make_app):
    client = make_app(reply_text="Thanks <b>& bye").test_client()
    response = post_signed(client, twilio_params())
    assert "<Message>Thanks &lt;b&gt;&amp; bye</Message>" in response.data.decode()


@pytest.mark.parametrize("change, fragment", [
    ({"MessageSid": None}, "MessageSid"),
    ({"From": None}, "From"),
    ({"Body": None}, "Body"),
    ({"From": "  "}, "From must not be empty"),
    ({"Body": ""}, "Body must not be empty"),
    ({"Body": "x" * 1601}, "limit is 1600"),
    ({"Body": "nul\x00byte"}, "NUL"),
    ({"Body": "", "NumMedia": "abc"}, "NumMedia must be a whole number"),
    ({"Body": "", "NumMedia": "00"}, "Body must not be empty"),
    ({"Body": "", "NumMedia": "9" * 5000}, "NumMedia must be a whole number"),
    ({"MessageSid": "SM123"}, "MessageSid must be SM or MM and 32 hex digits"),
    ({"MessageSid": "SM" + "0" * 32 + "NumMedia0"}, "MessageSid must be SM or MM"),
    ({"MessageSid": "XX" + "0" * 32}, "MessageSid must be SM or MM"),
])
def test_bad_fields_are_400_and_store_nothing(app, post_twilio, change, fragment):
    params = {k: v for k, v in {**twilio_params(), **change}.items() if v is not None}
    response = post_twilio(params)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]
    assert count_rows(app, Message) == 0


@pytest.mark.parametrize("body", [" ", "\n", " \r\n\t "])
def test_body_of_spaces_only_is_stored_classified_and_answered(app, post_twilio, body):
    """A 400 would lose it: Twilio does not retry a 4xx answer."""
    response = post_twilio(twilio_params(body))
    assert response.status_code == 200
    assert response.data.decode().endswith("<Response />")
    [message] = stored(app)
    assert message.body == body
    assert message.verdict_status == "classified" and message.model_label in {"spam", "ham"}
    assert 0.0 <= message.spam_probability <= 1.0


def test_picture_message_without_text_is_kept(app, post_twilio):
    params = twilio_params("", NumMedia="1")
    assert post_twilio(params).status_code == 200
    assert count_rows(app, Message) == 1


def test_picture_message_keeps_its_attachments_types_and_links(app, post_twilio):
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    params = twilio_params("look at this", NumMedia=" 2", MediaContentType0="image/jpeg",
                           MediaUrl0=url, MediaContentType1="video/mp4",
                           MediaUrl1="https://media.example/" + "a" * 600,  # too long to keep
                           MediaContentType5="image/png", MediaUrl5="https://not-counted")
    assert post_twilio(params).status_code == 200
    [message] = stored(app)
    media = {k: v for k, v in message.raw.items() if k.startswith("Media")}
    assert media == {"MediaContentType0": "image/jpeg", "MediaUrl0": url,
                     "MediaContentType1": "video/mp4"}
    assert message.raw["NumMedia"] == "2"  # stored as checked, so the admin UI reads it


def test_a_captured_request_cannot_be_stored_again_by_moving_a_field_boundary(
        app, client):
    """Twilio signs the fields' names and values run together, so 'MessageSid=SM..1f' +
    'NumMedia=0' signs like 'MessageSid=SM..1fNumMedia0': a new id for the same request."""
    params = twilio_params("captured once")
    signature = sign(params)
    moved = {k: v for k, v in params.items() if k != "NumMedia"}
    moved["MessageSid"] = params["MessageSid"] + "NumMedia" + params["NumMedia"]
    assert sign(moved) == signature  # the same signature really does cover both
    headers = {"X-Twilio-Signature": signature}
    assert client.post("/webhook/twilio", data=params, headers=headers).status_code == 200
    replay = client.post("/webhook/twilio", data=moved, headers=headers)
    assert replay.status_code == 400
    assert count_rows(app, Message) == 1


def _capture_and_recut() -> tuple[dict, dict, dict]:
    """A delivery whose body (written by the sender) spells out further fields, its
    signature, and the same characters cut into a new message: new id, sender, recipient."""
    new_sid = "SM" + "f" * 32
    params = twilio_params(f"xFrom+19998887777MessageSid{new_sid}To+19990000000Zzz")
    tail = "".join(f"{k}{params[k]}" for k in sorted(params) if k > "Body")
    forged = {"AccountSid": params["AccountSid"], "Body": "x", "From": "+19998887777",
              "MessageSid": new_sid, "To": "+19990000000", "ZzzFrom": tail[len("From"):]}
    assert sign(forged) == sign(params)  # the same signature really covers the forgery
    return params, forged, {"X-Twilio-Signature": sign(params)}


def test_a_body_that_spells_out_fields_cannot_turn_a_capture_into_new_messages(app, client):
    """The signature runs names and values together and the body sorts before From,
    MessageSid and To: one signature stores one message."""
    params, forged, headers = _capture_and_recut()
    assert client.post("/webhook/twilio", data=params, headers=headers).status_code == 200
    replay = client.post("/webhook/twilio", data=forged, headers=headers)
    assert replay.status_code == 403
    assert "already delivered another message" in replay.get_json()["error"]
    again = client.post("/webhook/twilio", data=params, headers=headers)  # Twilio's retry
    assert again.status_code == 200
    [message] = stored(app)
    assert (message.external_id, message.body) == (params["MessageSid"], params["Body"])
    assert message.signature_hash is not None


def test_a_signature_taken_by_another_worker_meanwhile_is_still_one_message(
        app, client, monkeypatch):
    """Two workers can both find a signature unused before either stores it: the unique
    index decides, a retry of the same message finds its row, a re-cut one is refused."""
    from spamguard import webhook

    params, forged, headers = _capture_and_recut()
    assert client.post("/webhook/twilio", data=params, headers=headers).status_code == 200
    real, calls = webhook.signature_owner, []

    def not_yet(signature):  # as seen by a worker that looked before the other committed
        calls.append(signature)
        return None if len(calls) <= 1 else real(signature)

    monkeypatch.setattr(webhook, "signature_owner", not_yet)
    retry = client.post("/webhook/twilio", data=params, headers=headers)
    assert retry.status_code == 200
    calls.clear()
    response = client.post("/webhook/twilio", data=forged, headers=headers)
    assert response.status_code == 403, response.data
    assert "already delivered another message" in response.get_json()["error"]
    assert [m.external_id for m in stored(app)] == [params["MessageSid"]]


def test_wrong_content_type_is_415(app, client):
    params = twilio_params()
    response = client.post("/webhook/twilio", json=params,
                           headers={"X-Twilio-Signature": sign(params)})
    assert response.status_code == 415
    assert "Content-Type" in response.get_json()["error"]


def test_invalid_utf8_is_400(app, client):
    body = b"MessageSid=SM1&From=%2B1&To=%2B2&Body=caf%E9"
    response = client.post("/webhook/twilio", data=body,
                           content_type="application/x-www-form-urlencoded",
                           headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["error"]
    assert count_rows(app, Message) == 0


def test_raw_bytes_in_a_form_body_say_what_is_wrong(app, client):
    body = "MessageSid=SM1&From=%2B1&To=%2B2&Body=café".encode()  # not percent-encoded
    response = client.post("/webhook/twilio", data=body,
                           content_type="application/x-www-form-urlencoded",
                           headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 400
    assert response.get_json()["error"] == ("request body is not URL-encoded form data: "
                                            "byte 41 (0xc3) must be percent-encoded")


def test_oversized_request_is_413_json(app, client):
    response = client.post("/webhook/twilio", data={"Body": "x" * 70_000},
                           headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 413
    assert "too large" in response.get_json()["error"]


def test_oversized_chunked_request_is_413_json(app, client):
    """A chunked body over the limit was cut at 64 KiB and read as a shorter form."""
    import io
    from urllib.parse import urlencode

    params = twilio_params()
    small = urlencode(params).encode()
    for body, status in ((small + b"&Pad=" + b"x" * 70_000, 413), (small, 200)):
        response = client.post(
            "/webhook/twilio", input_stream=io.BytesIO(body),
            content_type="application/x-www-form-urlencoded",
            headers={"X-Twilio-Signature": sign(params), "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
        assert response.status_code == status, response.data
        if status == 413:
            assert "too large" in response.get_json()["error"]
    assert count_rows(app, Message) == 1


def test_get_is_405_json(client):
    response = client.get("/webhook/twilio")
    assert response.status_code == 405
    assert response.get_json()["error"]
    assert "POST" in response.headers["Allow"]


def test_without_model_message_is_kept_pending(app_without_model):
    response = post_signed(app_without_model.test_client(), twilio_params())
    assert response.status_code == 200  # Twilio needs no verdict; the message is safe
    [message] = stored(app_without_model)
    assert message.verdict_status == "pending"


@pytest.fixture
def failing_message_insert():
    """Make the database refuse every INSERT into messages of ``app`` (as a lock timeout
    would), with the driver's own error class, so SQLAlchemy wraps it as usual."""
    from sqlalchemy import event

    from spamguard.extensions import get_db

    def install(app, text: str = "database is locked", kind: str = "OperationalError") -> None:
        with app.app_context():
            engine = get_db().engine
        error = getattr(engine.dialect.loaded_dbapi, kind)

        @event.listens_for(engine, "before_cursor_execute")
        def refuse(_conn, _cursor, statement, _parameters, _context, _many):
            if statement.lstrip().upper().startswith("INSERT INTO MESSAGES"):
                raise error(text)

    return install


SECRET_BODY = "my bank PIN is 4921"
SENDER = "+15559876543"


def test_database_error_does_not_log_the_body(make_app, failing_message_insert, caplog):
    app = make_app()
    failing_message_insert(app, "CHECK constraint failed: x", kind="IntegrityError")
    with caplog.at_level("DEBUG"):
        response = post_signed(app.test_client(), twilio_params(SECRET_BODY, From=SENDER))
    assert response.status_code == 500
    assert SECRET_BODY not in caplog.text and SENDER not in caplog.text
    assert "CHECK constraint failed" in caplog.text  # the error itself is still logged
    assert "details hidden" in caplog.text
    assert SECRET_BODY not in response.get_data(as_text=True)


def test_a_locked_database_answers_503_with_retry_after(make_app, failing_message_insert,
                                                        caplog):
    """Busy, not broken: the caller should send the message again (same id: stored once)."""
    app = make_app()
    failing_message_insert(app)  # "database is locked", as SQLite says after its busy timeout
    with caplog.at_level("DEBUG"):
        response = post_signed(app.test_client(), twilio_params(SECRET_BODY, From=SENDER))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "try again" in response.get_json()["error"]
    assert "database is locked" in caplog.text and "answered 503" in caplog.text
    assert SECRET_BODY not in caplog.text and SENDER not in caplog.text


@pytest.mark.parametrize(("error", "pg_error"), [
    ("database or disk is full", "DiskFull"),
    ("attempt to write a readonly database", "ReadOnlySqlTransaction")])
def test_a_database_that_cannot_write_answers_503_and_healthz_says_so(make_app,
                                                                     failing_message_insert,
                                                                     monkeypatch, error,
                                                                     pg_error):
    """A fault audit: a full disk (or a read-only standby) answered 500 to every message,
    each with a traceback, while /healthz said ok (its SELECT 1 still passes)."""
    import time

    import psycopg.errors

    from spamguard import ops

    app = make_app()
    if app.config["SPAMGUARD"].resolved_database_url.startswith("sqlite"):
        failing_message_insert(app, error)
    else:  # PostgreSQL says it by SQLSTATE (53100, 25006), which psycopg's classes carry
        monkeypatch.setattr(psycopg, pg_error, getattr(psycopg.errors, pg_error),
                            raising=False)
        failing_message_insert(app, error, kind=pg_error)
    client = app.test_client()
    response = post_signed(client, twilio_params(SECRET_BODY))
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert "cannot store anything now" in response.get_json()["error"]
    health = client.get("/healthz")
    assert health.status_code == 503 and error in health.get_json()["database"]
    later = time.monotonic() + ops.WRITE_FAILURE_SHOWN_SECONDS
    monkeypatch.setattr(ops.time, "monotonic", lambda: later)
    assert client.get("/healthz").status_code == 200  # the disk has room again: ok again


def test_a_really_locked_sqlite_database_answers_503_and_the_retry_is_stored_once(
        make_app, monkeypatch):
    import sqlite3

    from spamguard import db as db_module
    from spamguard.extensions import get_db

    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)  # instead of 5 s
    app = make_app()
    with app.app_context():
        url = get_db().engine.url
    if url.get_backend_name() != "sqlite":
        pytest.skip("SQLite's file lock")
    params = twilio_params("a message sent while the database was busy")
    holder = sqlite3.connect(url.database)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        busy = post_signed(app.test_client(), params)
    finally:
        holder.rollback()
        holder.close()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
    assert post_signed(app.test_client(), params).status_code == 200  # the gateway's retry
    assert post_signed(app.test_client(), params).status_code == 200  # and a second one
    assert count_rows(app, Message) == 1


def test_a_broken_statement_is_a_500_not_a_retry(make_app, failing_message_insert):
    """SQLite raises OperationalError for a missing table too: retrying would not help."""
    app = make_app()
    failing_message_insert(app, "no such table: messages")
    response = post_signed(app.test_client(), twilio_params("hi"))
    if app.config["SPAMGUARD"].database_url.startswith("postgresql"):
        assert response.status_code == 503  # psycopg's OperationalError: connection trouble
    else:
        assert response.status_code == 500


def test_driver_detail_quoting_the_row_is_not_logged(make_app, failing_message_insert, caplog):
    """PostgreSQL's constraint errors quote the failing row (body and numbers included)."""
    app = make_app()
    failing_message_insert(app, 'null value in column "x" violates not-null constraint\n'
                                f"DETAIL:  Failing row contains (1, {SENDER}, {SECRET_BODY}).",
                           kind="IntegrityError")
    with caplog.at_level("DEBUG"):
        response = post_signed(app.test_client(), twilio_params(SECRET_BODY, From=SENDER))
    assert response.status_code == 500
    assert SECRET_BODY not in caplog.text and SENDER not in caplog.text
    assert "violates not-null constraint" in caplog.text and "details hidden" in caplog.text
    assert "webhook" in caplog.text  # the stack is still there to debug with


def test_database_error_logs_the_body_when_bodies_are_logged(make_app, failing_message_insert,
                                                             caplog):
    app = make_app(log_bodies=True)
    failing_message_insert(app, "CHECK constraint failed: x", kind="IntegrityError")
    with caplog.at_level("DEBUG"):
        assert post_signed(app.test_client(), twilio_params(SECRET_BODY)).status_code == 500
    assert SECRET_BODY in caplog.text


def test_a_locked_messages_table_is_a_prompt_503_on_postgresql(app, post_twilio, db_backend):
    """A migration or a long transaction holding the table: the request gives up after the
    lock timeout with a 503 the gateway retries, instead of hanging until gunicorn kills
    the worker (and the message is lost)."""
    if db_backend != "postgresql":
        pytest.skip("SQLite's own busy timeout is tested with the database tests")
    import threading

    from sqlalchemy import text

    from spamguard.db import make_engine

    locked, release = threading.Event(), threading.Event()

    def hold_the_table() -> None:
        engine = make_engine(app.config["SPAMGUARD"].resolved_database_url)
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(timeout=30)  # without a lock timeout the request waits this long
            connection.rollback()
        engine.dispose()

    holder = threading.Thread(target=hold_the_table)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        response = post_twilio(twilio_params("held up by a lock"))
    finally:
        release.set()
        holder.join()
    assert response.status_code == 503, response.data
    assert response.headers["Retry-After"] == "5"
    assert post_twilio(twilio_params("after the lock")).status_code == 200


@pytest.mark.parametrize("overrides, warns", [
    ({}, True),
    ({"public_base_url": "https://sms.example.com"}, False),
    ({"env": "development"}, False),
])
def test_startup_warns_when_signed_urls_follow_the_host_header(make_app, caplog, overrides,
                                                               warns):
    import logging

    with caplog.at_level(logging.WARNING, logger="spamguard.webhook"):
        make_app(**overrides)
    said = [r.getMessage() for r in caplog.records if "PUBLIC_BASE_URL is not set" in
            r.getMessage()]
    assert bool(said) is warns


def _rule(app, sender: str, action: str) -> None:
    from spamguard.extensions import get_db
    from spamguard.services import sender_rules

    with app.app_context(), get_db().session_factory() as session:
        sender_rules.set_rule(session, sender=sender, action=action, note=None, by="test")
        session.commit()


FORWARD = '<Message to="+15550009999">'


def test_messages_not_judged_spam_are_forwarded_when_configured(make_app):
    """Issue 3: the answer may carry "a reply/forward configured by the operator"."""
    app = make_app(forward_to="+15550009999", reply_text="Thanks")
    _rule(app, "+15550001111", "allow")
    _rule(app, "+15550003333", "block")
    client = app.test_client()
    kept = post_signed(client, twilio_params("Lunch at <12> & then?"))
    answer = kept.data.decode()
    assert kept.status_code == 200 and "<Message>Thanks</Message>" in answer
    assert f"{FORWARD}From +15550001111: Lunch at &lt;12&gt; &amp; then?</Message>" in answer
    blocked = post_signed(client, twilio_params("WIN", From="+15550003333"))
    assert blocked.status_code == 200 and FORWARD not in blocked.data.decode()
    assert "<Message>Thanks</Message>" in blocked.data.decode()
    assert [m.model_label for m in stored(app)] == ["ham", "spam"]


def test_a_retried_delivery_forwards_the_same_copy(make_app):
    app = make_app(forward_to="+15550009999")
    params = twilio_params("see you at 6")
    client = app.test_client()
    first, second = post_signed(client, params), post_signed(client, params)
    assert first.data == second.data
    assert (FORWARD in first.data.decode()) == (stored(app)[0].model_label == "ham")


def test_a_pending_message_is_forwarded_unless_its_sender_is_blocked(app_without_model):
    """No model (an outage) must not hold back legitimate SMS; a blocked sender stays
    blocked."""
    app_without_model.config["SPAMGUARD"] = replace(app_without_model.config["SPAMGUARD"],
                                                    forward_to="+15550009999")
    _rule(app_without_model, "+15550003333", "block")
    client = app_without_model.test_client()
    pending = post_signed(client, twilio_params("running late"))
    assert FORWARD in pending.data.decode()
    blocked = post_signed(client, twilio_params("WIN", From="+15550003333"))
    assert FORWARD not in blocked.data.decode()
    assert [m.verdict_status for m in stored(app_without_model)] == ["pending", "pending"]


def test_forwarding_to_the_number_written_to_would_loop_and_is_skipped(make_app, caplog):
    app = make_app(forward_to="+15550002222")  # twilio_params' To
    _rule(app, "+15550001111", "allow")
    with caplog.at_level("WARNING"):
        answer = post_signed(app.test_client(), twilio_params("hello")).data.decode()
    assert answer.endswith("<Response />")
    assert "is the number this message was sent to" in caplog.text


def test_a_forwarded_copy_fits_one_twilio_message(make_app):
    from spamguard.webhook import TWILIO_MAX_CHARS, forwarded_text

    app = make_app(forward_to="+15550009999")
    _rule(app, "+15550001111", "allow")
    client = app.test_client()
    post_signed(client, twilio_params("x" * 1600))
    post_signed(client, twilio_params("", NumMedia="2", MediaUrl0="https://api.twilio.com/m/0",
                                      MediaContentType0="image/jpeg",
                                      MediaUrl1="https://api.twilio.com/m/1",
                                      MediaContentType1="image/png"))
    long, picture = stored(app)
    assert len(forwarded_text(long)) == TWILIO_MAX_CHARS
    assert forwarded_text(long).startswith("From +15550001111: xxx")
    assert forwarded_text(long).endswith("x\u2026")
    assert forwarded_text(picture) == "From +15550001111:  [2 attachments not forwarded]"
    from types import SimpleNamespace

    emoji = SimpleNamespace(sender=long.sender, body="\U0001F600" * 1600, raw=None)  # two
    # UTF-16 units each, as Twilio counts them
    cut = forwarded_text(emoji)
    assert len(cut.encode("utf-16-le")) // 2 in (TWILIO_MAX_CHARS - 1, TWILIO_MAX_CHARS)
    assert cut.endswith("\U0001F600\u2026")


@pytest.mark.parametrize("raw", ["5550009999", "+1 555 000 9999", "+0155500099", "+1555",
                                 "tel:+15550009999", "+15550009999\n"])
def test_a_forwarding_number_twilio_cannot_send_to_is_refused(raw):
    from spamguard.config import load_settings

    with pytest.raises(ValueError, match=r"^SPAMGUARD_FORWARD_TO=.* is not valid: write the "
                                         r"number in E\.164 form"):
        load_settings(environ={"SPAMGUARD_FORWARD_TO": raw})
    assert load_settings(environ={"SPAMGUARD_FORWARD_TO": "+447700900123"}).forward_to


@pytest.mark.parametrize("forward_to", ["", "+15550009999"])
def test_a_database_that_dies_once_the_message_is_stored_still_gets_an_answer(make_app,
                                                                            forward_to):
    """Twilio would deliver a stored message again after a 5xx; forwarding, which looks
    up the sender's rule for a message left pending, forwards it when it cannot."""
    app = make_app(forward_to=forward_to)
    with database_dies_once_a_message_is_stored(app):
        response = post_signed(app.test_client(), twilio_params("see you at 6"))
    assert response.status_code == 200
    assert (FORWARD in response.data.decode()) is bool(forward_to)
    [message] = stored(app)
    assert message.verdict_status == "pending"
