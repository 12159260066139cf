"""Tests for spamguard.services.evalset and ``spamguard evalset`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from spamguard.cli import build_cli
from spamguard.db import session_scope
from spamguard.errors import DataError
from spamguard.ml.data import LabelledData, load_labelled, text_hash
from spamguard.ml.evaluation import version_split
from spamguard.models import Review
from spamguard.services.evalset import (
    add_reviewed,
    choose_from_base,
    ensure_evalset,
    load_evalset,
)
from tests.fixtures_ml import sample_data
from tests.fixtures_retrain import base_rows, copy_version, store_reviews, write_labelled


def test_choose_from_base_is_stratified_seeded_and_deduplicated() -> None:
    base = sample_data(6)
    doubled = LabelledData(base.texts + [t.upper() for t in base.texts],
                           np.concatenate([base.labels, base.labels]))
    first = choose_from_base(doubled, 0.25)
    assert first.texts == choose_from_base(base, 0.25).texts
    assert len(first) == 21 and first.counts()["spam"] == 9
    assert choose_from_base(base, 0.25, seed=1).texts != first.texts


def test_choose_from_base_refuses_impossible_sets() -> None:
    with pytest.raises(DataError, match="between 0 and 1"):
        choose_from_base(sample_data(2), 1.5)
    with pytest.raises(DataError, match="cannot choose an evaluation set"):
        choose_from_base(sample_data(1), 0.05)


def test_ensure_evalset_chooses_once(db_session_factory) -> None:
    with session_scope(db_session_factory) as session:
        chosen, created = ensure_evalset(session=session, base=sample_data(6), fraction=0.2)
    assert created and len(chosen) == 17
    with session_scope(db_session_factory) as session:
        again, created = ensure_evalset(session=session, base=sample_data(3), fraction=0.5)
    assert not created and again.texts == chosen.texts and again.hashes == chosen.hashes


def test_add_reviewed_grows_the_set(db_session_factory) -> None:
    ids = store_reviews(db_session_factory, [("one reviewed message", "spam"),
                                             ("two reviewed message", "ham"),
                                             ("three reviewed message", "ham"),
                                             ("ONE reviewed message!", "spam")])
    with session_scope(db_session_factory) as session:
        ensure_evalset(session=session, base=sample_data(6), fraction=0.2)
        assert add_reviewed(session=session, message_ids=[ids[0]]).added == 1
        assert add_reviewed(session=session, message_ids=[ids[3]]).already == 1  # same text
        assert add_reviewed(session=session, count=5).added == 2
        evalset = load_evalset(session)
    assert len(evalset) == 20 and evalset.sources == {"base": 17, "review": 3}
    assert text_hash("two reviewed message") in evalset.hashes
    assert "3 from reviews" in evalset.describe()


def test_labels_follow_the_latest_review(db_session_factory) -> None:
    """A corrected review relabels its evaluation message; an undone one leaves it out; a
    review of a base evaluation text overrides the base label (and is not counted twice)."""
    from spamguard.services import reviews
    from spamguard.services.training_data import build_training_set

    base = sample_data(6)
    (mistake,) = store_reviews(db_session_factory, [("see you at the gym at 6", "spam")])
    (undone,) = store_reviews(db_session_factory, [("lunch at noon then?", "ham")])
    with session_scope(db_session_factory) as session:
        chosen, _ = ensure_evalset(session=session, base=base, fraction=0.2)
        assert add_reviewed(session=session, message_ids=[mistake, undone]).added == 2
    base_ham = next(t for t, label in zip(chosen.texts, chosen.labels, strict=True)
                    if label == 0)
    (moderated,) = store_reviews(db_session_factory, [(base_ham, "spam")])
    with session_scope(db_session_factory) as session:
        snapshot = session.scalar(select(func.max(Review.id)))
        reviews.add_review(session=session, message_id=mistake, label="ham", user_id=None)
        last = reviews.review_history(session, undone)[-1].id
        reviews.undo_review(session=session, review_id=last)
    with session_scope(db_session_factory) as session:
        evalset = load_evalset(session)
        before = load_evalset(session, up_to_review=snapshot)
        training = build_training_set(session=session, base=base, exclude=evalset.hashes)
    labels = dict(zip(evalset.texts, evalset.labels, strict=True))
    assert labels["see you at the gym at 6"] == 0 and labels[base_ham] == 1
    assert "lunch at noon then?" not in labels and text_hash("lunch at noon then?") in \
        evalset.hashes
    assert (evalset.relabelled, evalset.left_out, len(evalset)) == (2, 1, 18)
    assert "2 relabelled by later reviews; 1 left out: review undone" in evalset.describe()
    assert evalset.counts()["relabelled_by_reviews"] == 2
    # The run's snapshot: reviews after it do not count yet (an undo deletes its review).
    before_labels = dict(zip(before.texts, before.labels, strict=True))
    assert before_labels["see you at the gym at 6"] == 1 and before.relabelled == 1
    # Evaluation texts are never trained on, nor counted as overriding the base data.
    assert base_ham not in training.data.texts
    assert training.counts["reviews_overriding_base"] == 0


def test_add_reviewed_refuses_unreviewed_messages(db_session_factory, add_messages) -> None:
    (unreviewed,) = add_messages("nobody looked at me")
    with session_scope(db_session_factory) as session, pytest.raises(
            DataError, match=f"^no such message\\(s\\): 12345; message\\(s\\) with no "
                             f"review: {unreviewed}$"):
        add_reviewed(session=session, message_ids=[12345, unreviewed])


def test_evalset_cli(retrain_env, retrain_settings, db_session_factory) -> None:
    runner = CliRunner()
    cli = build_cli()
    result = runner.invoke(cli, ["evalset", "show"], env=retrain_env)
    assert result.exit_code == 0 and "empty" in result.output
    result = runner.invoke(cli, ["evalset", "add"], env=retrain_env)
    assert result.exit_code == 2 and "--from-reviews" in result.output
    for no_row in ("9223372036854775808", "0"):  # past the (BIGINT) ids: a usage error
        result = runner.invoke(cli, ["evalset", "add", "--message-id", no_row], env=retrain_env)
        assert result.exit_code == 2 and "--message-id" in result.output, result.output
    # A message id past 32 bits (migration 0011) is looked for.
    result = runner.invoke(cli, ["evalset", "add", "--message-id", "3000000000"],
                           env=retrain_env)
    assert result.exit_code == 2 and "no such message(s): 3000000000" in result.output
    store_reviews(db_session_factory, [("please hold this one out", "ham")])
    result = runner.invoke(cli, ["evalset", "add", "--from-reviews", "5"], env=retrain_env)
    assert result.exit_code == 0, result.output
    assert "added 1 reviewed message(s)" in result.output
    base = load_labelled(retrain_settings.base_data)
    assert len(choose_from_base(base, 0.2)) == 17
    result = runner.invoke(cli, ["evalset", "show"], env=retrain_env)
    assert "evaluation set: 18 messages" in result.output and "1 from reviews" in result.output
    (again,) = store_reviews(db_session_factory, [("PLEASE hold this one out!", "ham")])
    result = runner.invoke(cli, ["evalset", "add", "--message-id", str(again)], env=retrain_env)
    assert "added 0 reviewed message(s) (1 not: the same text is in the set already)" in (
        result.output)


def _active_trained_through(session, max_review_id: int | None, started_at=None) -> None:
    """Register an active version made by a retraining run that read the reviews up to
    ``max_review_id`` (as training_runs records it), started at ``started_at`` (now)."""
    from spamguard.models import ModelVersion, TrainingRun
    from spamguard.sqltypes import utcnow

    session.add(ModelVersion(id="v-active", directory="/nowhere", backbone="tiny",
                             backbone_hash="0", created_at=utcnow(), status="active",
                             threshold=0.5, metrics={}))
    session.flush()
    session.add(TrainingRun(status="promoted", trigger="cron", candidate_version_id="v-active",
                            max_review_id=max_review_id, started_at=started_at or utcnow()))
    session.flush()


def test_from_reviews_leaves_out_what_the_active_model_was_trained_on(
        db_session_factory) -> None:
    """Reviewed messages the active version learnt would favour it at the gate (a lifecycle
    audit: every candidate was then rejected), so --from-reviews takes only later ones, one
    per text; a message given by id is added all the same, and counted for a warning."""
    old = store_reviews(db_session_factory, [("old reviewed one", "spam"),
                                             ("old reviewed two", "ham")])
    new = store_reviews(db_session_factory, [("new reviewed one", "spam"),
                                             ("NEW reviewed one!", "spam"),
                                             ("new reviewed two", "ham")])
    with session_scope(db_session_factory) as session:
        last_old = session.scalar(select(func.max(Review.id)).where(
            Review.message_id.in_(old)))
        _active_trained_through(session, last_old)
        ensure_evalset(session=session, base=sample_data(6), fraction=0.2)
        result = add_reviewed(session=session, count=2)
        assert (result.added, result.already, result.unseen_left) == (2, 0, 0)
        hashes = load_evalset(session).hashes
        assert {text_hash("new reviewed one"), text_hash("new reviewed two")} <= hashes
        assert text_hash("old reviewed one") not in hashes
        assert add_reviewed(session=session, count=5).added == 0  # none unseen is left
        given = add_reviewed(session=session, message_ids=[old[0]])
        assert (given.added, given.trained_on) == (1, 1)
    assert len({text_hash(text) for text in ("new reviewed one", "NEW reviewed one!",
                                             "new reviewed two")}) == len(new) - 1


def test_evalset_cli_says_when_from_reviews_finds_too_few(retrain_env, db_session_factory,
                                                          monkeypatch):
    from spamguard.services import evalset

    (old,) = store_reviews(db_session_factory, [("learnt by the active model", "ham")])
    monkeypatch.setattr(evalset, "trained_on_by_active",  # tested above
                        lambda session: {text_hash("learnt by the active model")})
    result = CliRunner().invoke(build_cli(), ["evalset", "add", "--from-reviews", "5"],
                                env=retrain_env)
    assert result.exit_code == 0, result.output
    assert "added 0 reviewed message(s)" in result.output
    assert "note: --from-reviews takes only reviewed messages the active model was not " \
           "trained on" in result.output
    result = CliRunner().invoke(build_cli(), ["evalset", "add", "--message-id", str(old)],
                                env=retrain_env)
    assert "added 1 reviewed message(s)" in result.output
    assert "warning: the active model was trained on 1 of the messages" in result.output


def test_the_comparison_leaves_out_what_was_added_after_the_active_model_learnt_it(
        db_session_factory) -> None:
    """Messages added before today's rule (or by --message-id) that the active model had
    learnt are left out when it is compared, never trained on; one in the set before the
    active model was trained was not learnt (training left it out) and stays."""
    from datetime import timedelta

    from spamguard.models import EvalExample
    from spamguard.services.evalset import learnt_by
    from spamguard.sqltypes import utcnow

    early, late = store_reviews(db_session_factory, [("in the set before training", "spam"),
                                                     ("added after it was learnt", "ham")])
    with session_scope(db_session_factory) as session:
        ensure_evalset(session=session, base=sample_data(6), fraction=0.2)
        add_reviewed(session=session, message_ids=[early])
        session.execute(EvalExample.__table__.update().values(
            added_at=utcnow() - timedelta(hours=2)))
        _active_trained_through(session, session.scalar(select(func.max(Review.id))),
                                started_at=utcnow() - timedelta(hours=1))
        assert add_reviewed(session=session, message_ids=[late]).trained_on == 1
        learnt = learnt_by(session, "v-active")
        assert learnt.hashes == {text_hash("in the set before training"),
                                 text_hash("added after it was learnt")}
        compared = load_evalset(session, learnt=learnt)
        everything = load_evalset(session)
    assert compared.left_out_learnt == 1 and len(compared) == len(everything) - 1
    assert "added after it was learnt" not in compared.texts
    assert "in the set before training" in compared.texts
    assert compared.hashes == everything.hashes  # still never trained on
    assert "1 left out: added after the active model learnt them" in compared.describe()
    assert compared.counts()["left_out_learnt_by_active"] == 1
    with session_scope(db_session_factory) as session:
        assert learnt_by(session, None) == learnt_by(session, "no-such-version")


@pytest.fixture(scope="session")
def base_trained_dir(tmp_path_factory, tiny_backbone) -> Path:
    """A version `spamguard train` made from a base file (the retraining base rows): its
    training and validation texts can be rebuilt (copy it before changing it)."""
    import torch

    from spamguard.ml.train import TrainConfig, train_model

    root = tmp_path_factory.mktemp("base-trained")
    data = write_labelled(root / "base.tsv", base_rows())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_torch_thread: two spin-wait on a busy machine
    try:
        result = train_model(load_labelled(data), models_dir=root / "models", cache_root=None,
                             backbone=tiny_backbone, config=TrainConfig(epochs=1),
                             data_source=str(data), progress=False)
    finally:
        torch.set_num_threads(threads)
    return result.directory


def _activate_copy(settings, factory, version_dir: Path, **data_changes) -> dict:
    """Register a copy of ``version_dir`` (its model.json ``data`` updated with
    ``data_changes``) as the active version; return its metadata."""
    from spamguard.services import registry

    directory = copy_version(version_dir, settings.models_dir)
    metadata = json.loads((directory / "model.json").read_text())
    metadata["data"].update(data_changes)
    (directory / "model.json").write_text(json.dumps(metadata))
    with session_scope(factory) as session:
        registry.register_version(session=session, version_dir=directory, status="active")
    return metadata


def test_from_reviews_leaves_out_the_active_models_base_training_texts(
        retrain_settings, db_session_factory, base_trained_dir) -> None:
    """Texts of the active version's training or validation split of its base data (canned
    replies are in the 2012 data and in live traffic) would favour it at the gate as much
    as the reviews it learnt: --from-reviews leaves them out, and a message given by id is
    counted for the warning. Its test split was never seen, so may be added."""
    metadata = _activate_copy(retrain_settings, db_session_factory, base_trained_dir)
    parts = version_split(metadata)
    trained, tuned, held_out = parts.train.texts[0], parts.val.texts[0], parts.test.texts[0]
    ids = store_reviews(db_session_factory, [(trained, "ham"), (tuned, "ham"),
                                             (held_out, "spam"), ("new reviewed one", "ham")])
    with session_scope(db_session_factory) as session:
        result = add_reviewed(session=session, count=5)
        assert (result.added, result.unseen_left) == (2, 0)
        assert load_evalset(session).hashes == {text_hash(held_out),
                                                text_hash("new reviewed one")}
        assert result.base_checked
        given = add_reviewed(session=session, message_ids=[ids[0]])
        assert (given.added, given.trained_on, given.base_checked) == (1, 1, True)


def test_from_reviews_says_when_the_base_training_data_cannot_be_rebuilt(
        retrain_settings, retrain_env, db_session_factory, base_trained_dir, tmp_path) -> None:
    """A version whose recorded data file is gone (or a retrained one) cannot be checked
    against its base training data: the messages are added, and the command says so."""
    metadata = _activate_copy(retrain_settings, db_session_factory, base_trained_dir,
                              source=str(tmp_path / "gone.tsv"))
    assert version_split(metadata) is None
    trained = version_split(json.loads((base_trained_dir / "model.json").read_text()))
    with session_scope(db_session_factory) as session:  # as the command would choose it
        chosen, _ = ensure_evalset(session=session, fraction=0.2,
                                   base=load_labelled(retrain_settings.base_data_path))
    text = next(t for t in trained.train.texts if text_hash(t) not in chosen.hashes)
    store_reviews(db_session_factory, [(text, "ham")])
    result = CliRunner().invoke(build_cli(), ["evalset", "add", "--from-reviews", "5"],
                                env=retrain_env)
    assert result.exit_code == 0, result.output
    assert "added 1 reviewed message(s)" in result.output
    assert (f"note: the active model's base training data ({metadata['version']}) could "
            "not be rebuilt") in result.stderr
    assert "checked only against the reviews it learnt" in result.stderr
    with session_scope(db_session_factory) as session:
        assert add_reviewed(session=session).base_checked is False
