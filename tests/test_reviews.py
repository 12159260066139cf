"""Reviews: supersede with history, undo, bulk relabel; and the queries that list them."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from spamguard.models import Message, Review
from spamguard.services import message_queries, reviews
from spamguard.services.message_queries import FilterError, MessageFilter
from spamguard.services.reviews import ReviewError
from tests.fixtures_db import captured_statements, query_plan


@pytest.fixture
def ids(add_messages):
    return add_messages(("win a prize", 0.92), ("lunch?", 0.1), ("maybe spam", 0.56),
                        ("maybe ham", 0.45), ("pending one", None))


def _message(session, message_id) -> Message:
    session.expire_all()
    return session.get(Message, message_id)


def test_relabel_supersedes_and_keeps_history(db_session, ids, make_user):
    uid = make_user("mo")
    reviews.add_review(session=db_session, message_id=ids[0], label="spam", user_id=uid)
    reviews.add_review(session=db_session, message_id=ids[0], label="ham", user_id=uid,
                       note="a real prize draw")
    db_session.commit()
    history = reviews.review_history(db_session, ids[0])
    assert [(r.label, r.is_current) for r in history] == [("spam", False), ("ham", True)]
    assert history[1].note == "a real prize draw"
    assert _message(db_session, ids[0]).review_label == "ham"


def test_undo_restores_previous_review(db_session, ids, make_user):
    uid = make_user("mo")
    first = reviews.add_review(session=db_session, message_id=ids[1], label="ham", user_id=uid)
    second = reviews.add_review(session=db_session, message_id=ids[1], label="spam",
                                user_id=uid)
    reviews.undo_review(session=db_session, review_id=second.id)
    db_session.commit()
    assert _message(db_session, ids[1]).review_label == "ham"
    assert [r.id for r in reviews.review_history(db_session, ids[1]) if r.is_current] == [first.id]
    reviews.undo_review(session=db_session, review_id=first.id)
    db_session.commit()
    message = _message(db_session, ids[1])
    assert message.review_label is None and message.reviewed_at is None
    with pytest.raises(ReviewError):
        reviews.undo_review(session=db_session, review_id=first.id)


def test_an_undone_newest_review_id_is_never_given_out_again(db_session, ids, make_user):
    """SQLite reuses the highest id after it is deleted unless the table is AUTOINCREMENT;
    then a moderator who saw the undone review would pass the Seen check of a new one."""
    alice, bob = make_user("alice"), make_user("bob")
    reviews.add_review(session=db_session, message_id=ids[1], label="ham", user_id=alice)
    newest = reviews.add_review(session=db_session, message_id=ids[0], label="spam",
                                user_id=alice)
    db_session.commit()
    seen = reviews.Seen(reviews.latest_review_id(db_session, ids[0]))
    reviews.undo_review(session=db_session, review_id=newest.id)
    db_session.commit()
    again = reviews.add_review(session=db_session, message_id=ids[0], label="ham",
                               user_id=alice)
    db_session.commit()
    assert again.id > newest.id
    with pytest.raises(reviews.ReviewConflict):
        reviews.add_review(session=db_session, message_id=ids[0], label="spam", user_id=bob,
                           seen=seen)
    db_session.rollback()


@pytest.mark.parametrize(("label", "note"), [("maybe", None), ("spam", "x" * 2001)])
def test_add_review_rejects_bad_input(db_session, ids, label, note):
    with pytest.raises(ReviewError):
        reviews.add_review(session=db_session, message_id=ids[0], label=label, user_id=None,
                           note=note)
    with pytest.raises(ReviewError, match="no message"):
        reviews.add_review(session=db_session, message_id=999999, label="spam", user_id=None)


def test_bulk_relabel_by_ids_and_by_filter(db_session, ids, make_user):
    uid = make_user("mo")
    reviews.add_review(session=db_session, message_id=ids[0], label="ham", user_id=uid)
    assert reviews.bulk_relabel(session=db_session, ids=[ids[0], ids[1]], label="spam",
                                user_id=uid) == 2
    db_session.commit()
    assert _message(db_session, ids[0]).review_label == "spam"
    current = db_session.scalar(select(func.count()).select_from(Review).where(
        Review.message_id == ids[0], Review.is_current))
    assert current == 1 and len(reviews.review_history(db_session, ids[0])) == 2
    matching = message_queries.matching_ids(db_session, MessageFilter(review="unreviewed"))
    assert reviews.bulk_relabel(session=db_session, ids=matching, label="ham",
                                user_id=uid) == 3
    db_session.commit()
    assert message_queries.queue_size(db_session) == 0
    assert reviews.bulk_relabel(session=db_session, ids=[], label="ham", user_id=uid) == 0


def test_review_queue_orders_by_uncertainty(db_session, ids):
    queue = message_queries.review_queue(db_session, limit=10)
    assert [m.id for m in queue] == [ids[3], ids[2], ids[1], ids[0], ids[4]]
    assert [m.id for m in message_queries.review_queue(
        db_session, limit=2, exclude_ids=[ids[3]])] == [ids[2], ids[1]]
    reviews.add_review(session=db_session, message_id=ids[3], label="ham", user_id=None)
    assert ids[3] not in [m.id for m in message_queries.review_queue(db_session)]


def test_review_queue_measures_each_verdict_from_its_own_models_threshold(db_session,
                                                                          add_messages):
    """After a promotion the backlog keeps the old model's probabilities: 0.68 under a
    threshold of 0.7 is the most uncertain verdict there is, though 0.28 away from the new
    model's 0.4; 0.95 under 0.7 is surer than 0.45 under 0.4."""
    old = add_messages(("old, nearly spam", 0.68), ("old, sure spam", 0.95), threshold=0.7)
    new = add_messages(("new, nearly spam", 0.45), ("new, sure ham", 0.02), threshold=0.4)
    queue = message_queries.review_queue(db_session, limit=10)
    assert [m.id for m in queue] == [old[0], new[0], old[1], new[1]]


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, [4, 3, 2, 1, 0]),
    ({"model_label": "spam"}, [2, 0]),
    ({"model_label": "pending"}, [4]),
    ({"review": "unreviewed"}, [4, 3, 2, 1]),
    ({"review": "ham"}, [0]),
    ({"disagreement": "1"}, [0]),
    ({"min_p": "0.4", "max_p": "0.6"}, [3, 2]),
    ({"q": "MAYBE"}, [3, 2]),
    ({"q": "100%"}, []),
    ({"sender": "+15550002222"}, [1]),
    ({"since": (date.today() + timedelta(days=1)).isoformat()}, []),
    ({"until": date.today().isoformat()}, [4, 3, 2, 1, 0]),
])
def test_list_filters(db_session, ids, filters, expected):
    db_session.get(Message, ids[1]).sender = "+15550002222"
    reviews.add_review(session=db_session, message_id=ids[0], label="ham", user_id=None)
    db_session.commit()
    page = message_queries.list_messages(db_session, MessageFilter.from_args(filters))
    assert [m.id for m in page.items] == [ids[i] for i in expected]
    assert page.total == len(expected)


@pytest.mark.parametrize("args", [{"model_label": "maybe"}, {"min_p": "lots"},
                                  {"since": "yesterday"}, {"review": "x"}])
def test_filter_errors_name_the_field(args):
    with pytest.raises(FilterError, match=next(iter(args))):
        MessageFilter.from_args(args)


def test_pagination(db_session, add_messages):
    add_messages(*[f"message {i}" for i in range(7)])
    page = message_queries.list_messages(db_session, MessageFilter(), page=2, per_page=3)
    assert (page.total, page.pages, page.has_prev, page.has_next) == (7, 3, True, True)
    assert [m.body for m in page.items] == ["message 3", "message 2", "message 1"]


def test_similar_messages_share_text_or_campaign(db_session, add_messages):
    a, b, c = add_messages("Call 0800 123 now!", "call 0800 999 NOW", "unrelated")
    similar = message_queries.similar_messages(db_session, db_session.get(Message, a))
    assert [m.id for m in similar] == [b]
    assert c not in [m.id for m in similar]
    # Emoji and punctuation normalise to nothing: unrelated, so not "similar".
    smile, _heart = add_messages("😂", "❤️ ??")
    assert message_queries.similar_messages(db_session, db_session.get(Message, smile)) == []


def _at_once(decide, *labels: str) -> None:
    """Run ``decide(label)`` for each label in its own thread and wait for all of them."""
    import threading

    threads = [threading.Thread(target=decide, args=(label,)) for label in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_concurrent_decisions_on_one_message_take_turns(db_session_factory, ids, make_user):
    """Two moderators decide the same message at once: both are kept, the later one is
    current, and neither gets an error (on PostgreSQL the loser used to hit the unique
    one-current-review index)."""
    import threading
    import time

    uid = make_user("mo")
    barrier, errors, order = threading.Barrier(2), [], []

    def decide(label: str) -> None:
        try:
            with db_session_factory() as session:
                session.get(Message, ids[2])  # both have read the message before deciding
                barrier.wait()
                reviews.add_review(session=session, message_id=ids[2], label=label,
                                   user_id=uid)
                time.sleep(0.3)  # hold the transaction open while the other one tries
                session.commit()
                order.append(label)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    _at_once(decide, "spam", "ham")
    assert errors == [] and len(order) == 2
    with db_session_factory() as session:
        history = reviews.review_history(session, ids[2])
        assert [r.label for r in history] == order
        assert [r.is_current for r in history] == [False, True]
        assert session.get(Message, ids[2]).review_label == order[-1]


def test_a_decision_is_refused_when_the_message_changed_since_it_was_seen(
        db_session, ids, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    seen = reviews.Seen(reviews.latest_review_id(db_session, ids[0]))
    assert seen == reviews.Seen(None)
    first = reviews.add_review(session=db_session, message_id=ids[0], label="spam",
                               user_id=alice, seen=seen)
    db_session.commit()
    with pytest.raises(reviews.ReviewConflict) as refused:
        reviews.add_review(session=db_session, message_id=ids[0], label="ham", user_id=bob,
                           seen=seen)
    assert refused.value.review.id == first.id and refused.value.review.user.username == "alice"
    db_session.rollback()
    assert [r.label for r in reviews.review_history(db_session, ids[0])] == ["spam"]
    # Seen after alice's decision, a relabel goes through.
    later = reviews.Seen(reviews.latest_review_id(db_session, ids[0]))
    reviews.add_review(session=db_session, message_id=ids[0], label="ham", user_id=bob,
                       seen=later)
    db_session.commit()
    assert _message(db_session, ids[0]).review_label == "ham"


def test_concurrent_decisions_on_what_both_saw_unreviewed_keep_only_the_first(
        db_session_factory, ids, make_user):
    """Both moderators were shown the message unreviewed and decide at the same moment: one
    decision is recorded, the other is refused (on SQLite too, which ignores FOR UPDATE)."""
    import threading
    import time

    uid = make_user("mo")
    barrier, outcomes = threading.Barrier(2), []

    def decide(label: str) -> None:
        try:
            with db_session_factory() as session:
                session.get(Message, ids[2])
                barrier.wait()
                reviews.add_review(session=session, message_id=ids[2], label=label,
                                   user_id=uid, seen=reviews.Seen(None))
                time.sleep(0.3)  # hold the transaction open while the other one tries
                session.commit()
                outcomes.append(label)
        except reviews.ReviewConflict:
            outcomes.append("refused")
        except Exception as exc:  # noqa: BLE001  (reported below)
            outcomes.append(exc)

    _at_once(decide, "spam", "ham")
    winners = [o for o in outcomes if o != "refused"]
    assert len(outcomes) == 2 and winners in (["spam"], ["ham"]), outcomes
    with db_session_factory() as session:
        history = reviews.review_history(session, ids[2])
        assert [(r.label, r.is_current) for r in history] == [(winners[0], True)]


def test_review_queue_reads_its_index_in_order(db_session_factory, add_messages):
    """The queue's query reads ix_messages_review_queue in order (migration 0009) and never
    sorts the unreviewed messages, on SQLite and on PostgreSQL (which uses the index for
    the order only when the query orders by review_label too)."""
    from spamguard.db import session_scope

    add_messages(*[(f"message {i}", (i * 37 % 1000) / 1000) for i in range(3000)],
                 threshold=0.45)
    with session_scope(db_session_factory) as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE messages")
        with captured_statements(connection) as statements:
            assert len(message_queries.review_queue(session, limit=11, exclude_ids=[5])) == 11
        (sql, params), = [s for s in statements if "threshold_distance IS NOT NULL" in s[0]]
        plan = query_plan(connection, sql, params)
    assert "ix_messages_review_queue" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
