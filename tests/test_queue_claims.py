"""Soft claims on the review queue (services.queue_claims), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from spamguard.models import QueueClaim
from spamguard.services import message_queries, queue_claims, reviews
from spamguard.sqltypes import utcnow
from tests.fixtures_db import captured_statements, query_plan

SECONDS = 300


@pytest.fixture
def ids(add_messages):
    """Four unreviewed messages, in queue order (closest to the threshold 0.5 first)."""
    return add_messages(("first", 0.51), ("second", 0.45), ("third", 0.7), ("fourth", 0.05))


def shown(session_factory, user_id, now=None, **kwargs):
    """The message the queue shows ``user_id`` now (claiming it), and the next ones."""
    with session_factory() as session:
        result = queue_claims.next_for(session, user_id=user_id, now=now or utcnow(),
                                       seconds=SECONDS, limit=11, **kwargs)
        session.commit()
        return (result.current.id if result.current else None,
                [m.id for m in result.upcoming])


def test_a_claimed_message_is_passed_over_by_others_and_kept_by_its_moderator(
        db_session_factory, ids, make_user, add_messages):
    alice, bob = make_user("alice"), make_user("bob")
    assert shown(db_session_factory, alice) == (ids[0], ids[1:])
    assert shown(db_session_factory, bob) == (ids[1], ids[2:])  # alice's is left out
    closer = add_messages(("closer still", 0.5))[0]  # now the queue's first
    assert shown(db_session_factory, alice)[0] == ids[0]  # a reload shows her the same
    assert shown(db_session_factory, bob)[0] == ids[1]
    carol = make_user("carol")
    assert shown(db_session_factory, carol)[0] == closer
    with db_session_factory() as session:
        claims = dict(session.execute(select(QueueClaim.user_id, QueueClaim.message_id)).all())
        assert claims == {alice: ids[0], bob: ids[1], carol: closer}
        assert queue_claims.held_by_others(session, user_id=alice, now=utcnow()) == 2


def test_an_expired_claim_is_ignored_and_a_reload_renews_one(db_session_factory, ids,
                                                             make_user):
    alice, bob = make_user("alice"), make_user("bob")
    start = utcnow()
    assert shown(db_session_factory, alice, now=start)[0] == ids[0]
    later = start + timedelta(seconds=SECONDS - 1)
    assert shown(db_session_factory, alice, now=later)[0] == ids[0]  # renewed from then
    assert shown(db_session_factory, bob, now=start + timedelta(seconds=SECONDS + 1))[0] \
        == ids[1]
    lapsed = start + timedelta(seconds=2 * SECONDS + 2)  # both claims have run out
    assert shown(db_session_factory, bob, now=lapsed)[0] == ids[0]
    assert shown(db_session_factory, alice, now=lapsed)[0] == ids[1]


def test_reviewing_skipping_or_moving_on_ends_the_claim(db_session_factory, ids, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    assert shown(db_session_factory, alice)[0] == ids[0]
    with db_session_factory() as session:  # alice labels it: her queue moves on
        reviews.add_review(session=session, message_id=ids[0], label="spam", user_id=alice)
        session.commit()
        assert queue_claims.holder(session, ids[0], utcnow()) is None
    assert shown(db_session_factory, alice)[0] == ids[1]
    with db_session_factory() as session:  # being shown another ended the reviewed one's
        assert session.scalars(select(QueueClaim.message_id)).all() == [ids[1]]
        queue_claims.release(session, user_id=alice, message_id=ids[1])  # she skips it
        session.commit()
    assert shown(db_session_factory, bob)[0] == ids[1]
    assert shown(db_session_factory, alice, exclude_ids=[ids[1]])[0] == ids[2]
    with db_session_factory() as session:
        queue_claims.release(session, user_id=bob)  # e.g. nothing left for him
        session.commit()
        assert session.scalars(select(QueueClaim.user_id)).all() == [alice]


def test_an_undone_message_comes_back_first_unless_someone_else_has_it(
        db_session_factory, ids, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    assert shown(db_session_factory, alice, first=[ids[3]])[0] == ids[3]
    assert shown(db_session_factory, bob, first=[ids[3]])[0] == ids[0]


def test_a_viewer_reads_the_queue_without_claiming(db_session_factory, ids, make_user):
    alice = make_user("alice")
    assert shown(db_session_factory, alice)[0] == ids[0]
    assert shown(db_session_factory, None) == (ids[0], ids[1:])  # who has it: see holder
    with db_session_factory() as session:
        assert session.scalar(select(func.count()).select_from(QueueClaim)) == 1
        assert queue_claims.holder(session, ids[0], utcnow()).user.username == "alice"


def test_a_stale_queue_read_cannot_take_a_fresh_claim(db_session_factory, ids, make_user):
    """Two moderators read the queue at the same instant: the second to claim finds the
    first message taken and gets the next (an unconditional claim would give both the
    first one)."""
    alice, bob = make_user("alice"), make_user("bob")
    now = utcnow()
    with db_session_factory() as a, db_session_factory() as b:
        seen_by_a = message_queries.review_queue(a, limit=3)
        seen_by_b = message_queries.review_queue(b, limit=3)
        assert [m.id for m in seen_by_a] == [m.id for m in seen_by_b] == ids[:3]
        assert queue_claims.claim_first(a, seen_by_a, user_id=alice, now=now,
                                        seconds=SECONDS) == 0
        assert queue_claims.claim_first(b, seen_by_b, user_id=bob, now=now,
                                        seconds=SECONDS) == 1
        assert not queue_claims.claim(b, message_id=ids[0], user_id=bob, now=now,
                                      seconds=SECONDS)
        b.commit()
        # A message reviewed since the read is not claimed either.
        reviews.add_review(session=a, message_id=ids[2], label="ham", user_id=alice)
        a.commit()
        assert not queue_claims.claim(b, message_id=ids[2], user_id=bob, now=now,
                                      seconds=SECONDS)
        b.commit()


def test_moderators_loading_the_queue_at_once_are_shown_different_messages(
        db_session_factory, ids, make_user, monkeypatch):
    """Each thread reads the queue, waits until all have read it (so all saw the same
    first message), then claims: every moderator must end up with a message of their own."""
    users = [make_user(f"mo{i}") for i in range(4)]
    barrier, original = threading.Barrier(len(users), timeout=30), message_queries.review_queue

    def read_then_wait(*args, **kwargs):
        items = original(*args, **kwargs)
        barrier.wait()
        return items

    monkeypatch.setattr(message_queries, "review_queue", read_then_wait)
    results, errors = {}, []

    def load(user_id: int) -> None:
        try:
            results[user_id] = shown(db_session_factory, user_id)[0]
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(results.values()) == sorted(ids), results


def test_the_queue_still_reads_its_index_in_order_past_claims(db_session_factory,
                                                              add_messages, make_user):
    """Leaving out others' claims adds a look-up in the claims table, not a sort: the
    queue stays one range scan on ix_messages_review_queue (migration 0009)."""
    from spamguard.db import session_scope

    users = [make_user(f"mo{i}") for i in range(3)]
    add_messages(*[(f"message {i}", (i * 37 % 1000) / 1000) for i in range(3000)],
                 threshold=0.45)
    for user_id in users:
        shown(db_session_factory, user_id)
    with session_scope(db_session_factory) as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE messages")
            connection.exec_driver_sql("ANALYZE queue_claims")
        with captured_statements(connection) as statements:
            queue = message_queries.review_queue(
                session, limit=11, exclude_ids=[5],
                where=[queue_claims.not_claimed_by_others(users[0], utcnow())])
        assert len(queue) == 11
        (sql, params), = [s for s in statements if "threshold_distance IS NOT NULL" in s[0]]
        plan = query_plan(connection, sql, params)
    assert "ix_messages_review_queue" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    assert "Seq Scan on messages" not in plan, plan


def claimed_by(session_factory) -> dict[int, int]:
    """Every claim, as {message id: moderator id}."""
    with session_factory() as session:
        return dict(session.execute(select(QueueClaim.message_id, QueueClaim.user_id)).all())


def test_ending_an_accounts_sessions_ends_its_claims(db_session_factory, ids, make_user):
    """Logging out, being disabled, an admin's password reset or becoming a viewer hand the
    moderator's message to the others at once (they waited for the claim to run out); a
    password change keeps it (that session goes on), and so do other moderators' claims."""
    from spamguard.db import session_scope
    from spamguard.services import users
    from tests.fixtures_admin import PASSWORD

    alice, bob = make_user("alice"), make_user("bob")
    assert shown(db_session_factory, bob)[0] == ids[0]
    endings = {
        "logout": lambda db: users.end_sessions(session=db, user_id=alice),
        "disable": lambda db: users.set_active(session=db, user_id=alice, active=False),
        "reset": lambda db: users.set_password(session=db, username="alice",
                                               password="a-new-long-secret"),
        "viewer": lambda db: users.set_role(session=db, user_id=alice, role="viewer"),
    }
    for how, end in endings.items():
        with session_scope(db_session_factory) as db:  # back to a working moderator
            users.set_active(session=db, user_id=alice, active=True)
            users.set_role(session=db, user_id=alice, role="moderator")
        assert shown(db_session_factory, alice)[0] == ids[1], how
        with session_scope(db_session_factory) as db:
            end(db)
        assert claimed_by(db_session_factory) == {ids[0]: bob}, how
    with session_scope(db_session_factory) as db:
        users.set_role(session=db, user_id=alice, role="moderator")
        users.set_password(session=db, username="alice", password=PASSWORD)
    assert shown(db_session_factory, alice)[0] == ids[1]
    with session_scope(db_session_factory) as db:
        users.change_password(session=db, user_id=alice, current=PASSWORD,
                              new="another-long-secret", repeated="another-long-secret")
    assert claimed_by(db_session_factory) == {ids[0]: bob, ids[1]: alice}
