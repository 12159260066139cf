"""The review queue page: order, decide, skip, undo, roles."""

from __future__ import annotations

import re

from spamguard.models import Message, Review

CURRENT = re.compile(r'id="current" data-message-id="(\d+)"')


def current_id(client) -> int | None:
    match = CURRENT.search(client.get("/admin/queue").get_data(as_text=True))
    return int(match.group(1)) if match else None


def test_decide_skip_undo(moderator_client, add_messages, db_session_factory,
                          tiny_model_dir):
    import json

    # Placed around the active (tiny) model's threshold: closest first.
    t = json.loads((tiny_model_dir / "model.json").read_text())["threshold"]
    assert 0.2 < t < 0.8
    sure, unsure, middle = add_messages(("sure spam", 0.999), ("unsure", t + 0.01),
                                        ("middle", t - 0.15))
    assert current_id(moderator_client) == unsure
    moderator_client.post("/admin/queue/decide", data={"message_id": unsure, "label": "ham",
                                                       "note": "a friend"})
    assert current_id(moderator_client) == middle
    moderator_client.post("/admin/queue/skip", data={"message_id": middle})
    assert current_id(moderator_client) == sure
    response = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert f"Undid your decision on message {unsure}" in response.get_data(as_text=True)
    assert current_id(moderator_client) == unsure  # the undone message comes back first
    moderator_client.post("/admin/queue/decide", data={"message_id": unsure, "label": "spam"})
    moderator_client.post("/admin/queue/reset-skipped")
    assert current_id(moderator_client) == middle
    with db_session_factory() as session:
        assert session.get(Message, unsure).review_label == "spam"
        assert [r.label for r in session.query(Review).filter_by(message_id=unsure)] == ["spam"]


def test_empty_queue_and_nothing_to_undo(moderator_client):
    text = moderator_client.get("/admin/queue").get_data(as_text=True)
    assert "Nothing left to review" in text
    undo = moderator_client.post("/admin/queue/undo", follow_redirects=True)
    assert "Nothing to undo" in undo.get_data(as_text=True)


def test_bad_decision_is_refused(moderator_client, add_messages):
    (mid,) = add_messages(("x", 0.5))
    for data in ({"message_id": mid, "label": "maybe"}, {"message_id": "abc", "label": "spam"},
                 {"message_id": 987654, "label": "spam"}):
        response = moderator_client.post("/admin/queue/decide", data=data,
                                         follow_redirects=True)
        assert "Not recorded" in response.get_data(as_text=True)
    assert current_id(moderator_client) == mid


def test_viewer_sees_queue_but_cannot_decide(viewer_client, add_messages):
    (mid,) = add_messages(("x", 0.5))
    page = viewer_client.get("/admin/queue").get_data(as_text=True)
    assert "data-key=\"s\"" not in page
    assert viewer_client.post("/admin/queue/decide",
                              data={"message_id": mid, "label": "spam"}).status_code == 403
    assert viewer_client.post("/admin/queue/undo").status_code == 403


def test_out_of_range_ids_are_refused_and_do_not_break_the_queue(moderator_client,
                                                                 add_messages):
    add_messages(("unsure", 0.51))
    huge = "9" * 30
    decided = moderator_client.post("/admin/queue/decide",
                                    data={"message_id": huge, "label": "spam"},
                                    follow_redirects=True)
    assert decided.status_code == 200 and "Not recorded" in decided.get_data(as_text=True)
    moderator_client.post("/admin/queue/skip", data={"message_id": huge})
    page = moderator_client.get("/admin/queue")
    assert page.status_code == 200 and "unsure" in page.get_data(as_text=True)
