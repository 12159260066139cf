"""Near-exact copies are grouped, and a split keeps each group on one side."""

import json
import random

import numpy as np
import pytest

from spamguard.ml.data import LabelledData, split
from spamguard.ml.near_duplicates import (
    group_counts,
    near_duplicate_groups,
    split_groups,
    split_keeping_copies,
)

CUP = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121"


@pytest.mark.parametrize("a, b", [
    ("Call 150 ppm now", "Call 150ppm now"),                   # a space
    (CUP, CUP[1:]),                                            # a dropped letter ("ree entry")
    ("SMS SERVICES for your inclusive text credits, pls go to www.comuk.net login",
     "SMSSERVICES. for yourinclusive text credits, pls goto www.comuk.net login"),
])
def test_copies_that_differ_by_spacing_or_a_letter_share_a_group(a, b):
    groups = near_duplicate_groups([a, "see you at lunch", b])
    assert groups[0] == groups[2] != groups[1]


@pytest.mark.parametrize("a, b", [
    ("Ok lor", "Ok lar"),                                      # short: 83% alike
    ("I am waiting for your call sir.", "Sir, i am waiting for your call."),
    ("😂", "??"),                                              # no letter or digit
    ("", ""),
])
def test_different_messages_stay_apart(a, b):
    groups = near_duplicate_groups([a, b])
    assert groups[0] != groups[1]


def test_groups_are_connected_pairs_numbered_by_first_member():
    base = "URGENT! We are trying to contact U. Todays draw shows that you have won a prize"
    chain = [base, "lunch?", base + " GUARANTEED", base + " GUARANTEED call 09050"]
    groups = near_duplicate_groups(chain)
    assert groups.tolist() == [0, 1, 0, 0]
    assert group_counts(groups) == {"groups": 1, "messages": 3}


def _data(texts, labels):
    return LabelledData(list(texts), np.asarray(labels, dtype=np.int64))


SPAM_TEMPLATES = [
    "WINNER!! As a valued network customer you have been selected to receive a prize",
    "Your free ringtone is waiting to be collected. Simply text the password to 85069",
    "URGENT! You have won a 1 week FREE membership in our prize Jackpot! Txt CLAIM",
    "Had your mobile 11 months or more? U R entitled to Update to the latest colour",
    "SIX chances to win CASH! From 100 to 20,000 pounds txt CSH11 and send to 87575",
    "Congrats! 1 year special cinema pass for 2 is yours. call 09061209465 now!",
    "Thanks for your subscription to Ringtone UK your mobile will be charged 5/month",
    "XXXMobileMovieClub: To use your credit, click the WAP link in the next txt",
    "England v Macedonia - dont miss the goals/team news. Txt ur national team",
    "Please call our customer service representative on 0800 169 6031 between",
    "Urgent UR awarded a complimentary trip to EuroDisinc Trav, Aco&Entry41",
    "Did you hear about the new Divorce Barbie? It comes with all of Ken's stuff!",
]


def _campaigns():
    """12 spam campaigns of 3 near-exact copies each, and 60 distinct ham."""
    texts, labels = [], []
    for body in SPAM_TEMPLATES:
        texts += [body, body.replace(" ", "  ", 1).replace("!", "!!", 1) + " now",
                  body + " txt STOP"]
        labels += [1, 1, 1]
    words = ("lunch home work pub train bus late early mum dad dinner film game match "
             "coffee tea shop keys phone car rain sun beach park gym class exam book").split()
    pick = random.Random(0)
    for _ in range(60):
        texts.append(" ".join(pick.sample(words, 6)))
        labels.append(0)
    return _data(texts, labels)


def test_split_keeps_each_group_on_one_side():
    data = _campaigns()
    parts, groups = split_keeping_copies(data, seed=2018, always_train=None, grouped=True)
    side = {text: name for name in ("train", "val", "test") for text in getattr(parts, name).texts}
    assert len(side) == len(data)
    for group in set(groups.tolist()):
        members = [data.texts[i] for i in np.flatnonzero(groups == group)]
        assert len({side[text] for text in members}) == 1
    ungrouped = split(data, seed=2018)
    spans = sum(len({s for s in (("train" if t in ungrouped.train.texts else
                                  "val" if t in ungrouped.val.texts else "test")
                                 for t in (data.texts[3 * c], data.texts[3 * c + 1],
                                           data.texts[3 * c + 2]))}) > 1
                for c in range(12))
    assert spans > 0  # without groups some campaign does land on two sides


def test_lone_messages_split_exactly_as_without_groups():
    data = _data([f"message number {i} about {'x' * i}" for i in range(40)],
                 [i % 4 == 0 for i in range(40)])
    with_groups = split(data, seed=2018, groups=np.arange(len(data)))
    without = split(data, seed=2018)
    for name in ("train", "val", "test"):
        assert getattr(with_groups, name).texts == getattr(without, name).texts


def test_always_training_messages_are_alone_and_not_compared():
    texts = ["WIN a prize now call 0800", "WIN a prize now call 0801", "hello there"]
    groups = split_groups(texts, np.array([False, True, False]))
    assert len(set(groups.tolist())) == 3
    assert split_groups(texts)[0] == split_groups(texts)[1]


def test_split_refuses_groups_of_the_wrong_length():
    with pytest.raises(ValueError, match="groups has 2 ids for 3 messages"):
        split(_data(["a b", "c d", "e f"], [0, 1, 0]), groups=np.arange(2))


def test_training_records_the_groups_and_rebuilds_the_same_split(tmp_path, tiny_backbone):
    from spamguard.ml.data import dedupe
    from spamguard.ml.evaluation import version_split
    from spamguard.ml.train import TrainConfig, train_model

    data = _campaigns()
    source = tmp_path / "campaigns.tsv"
    source.write_text("".join(f"{'spam' if y else 'ham'}\t{t}\n"
                              for t, y in zip(data.texts, data.labels, strict=True)))
    from spamguard.ml.data import load_labelled

    result = train_model(load_labelled(source), models_dir=tmp_path / "models",
                         cache_root=tmp_path / "cache", backbone=tiny_backbone,
                         config=TrainConfig(epochs=2), data_source=str(source),
                         progress=False)
    metadata = json.loads((result.directory / "model.json").read_text())
    assert metadata["data"]["near_duplicates"] == {"groups": 12, "messages": 36, "ratio": 0.9}
    assert metadata["config"]["group_near_duplicates"] is True
    assert "36 messages in 12 groups (90% alike or more)" in (
        result.directory / "report.md").read_text()
    rebuilt = version_split(metadata)
    expected, _ = split_keeping_copies(dedupe(load_labelled(source))[0], seed=2018,
                                       always_train=None, grouped=True)
    assert rebuilt.test.texts == expected.test.texts
    # A version from before the grouping records no such setting: rebuilt without it.
    del metadata["config"]["group_near_duplicates"]
    assert version_split(metadata).test.texts == split(
        dedupe(load_labelled(source))[0], seed=2018).test.texts


def test_one_campaign_as_all_the_spam_is_split_one_by_one(tmp_path):
    body = "WINNER!! As a valued network customer you have been selected to receive a prize"
    data = _data([f"{body} ref {'x' * i}" for i in range(8)]
                 + [f"ham message {i} {'about lunch ' * (i % 5)}{'y' * i}" for i in range(40)],
                 [1] * 8 + [0] * 40)
    assert len(set(near_duplicate_groups(data.texts[:8]).tolist())) == 1
    parts, groups = split_keeping_copies(data, seed=2018, always_train=None, grouped=True)
    assert groups is None
    assert parts.test.texts == split(data, seed=2018).test.texts


def test_without_a_test_part_training_and_validation_keep_the_recipes_proportion():
    data = _campaigns()
    parts, groups = split_keeping_copies(data, seed=2018, always_train=None, grouped=True,
                                         with_test=False)
    assert len(parts.test) == 0 and groups is not None
    assert len(parts.train) + len(parts.val) == len(data)
    assert len(parts.val) / len(data) == pytest.approx(0.15 / 0.85, abs=0.04)
    assert parts.val.labels.sum() > 0 and (parts.val.labels == 0).sum() > 0


def test_two_campaigns_as_all_the_spam_never_leave_validation_without_spam():
    """Stratifying 2 spam groups may put both in training; then the copies are split one by
    one (a candidate validated on ham only would almost never say spam)."""
    campaigns = [SPAM_TEMPLATES[0], SPAM_TEMPLATES[1]]
    spam = [f"{body} ref {'x' * i}" for body in campaigns for i in range(4)]
    data = _data(spam + [" ".join(random.Random(i).sample(
        "lunch home work pub train bus late early mum dad dinner film".split(), 5))
        for i in range(20)], [1] * 8 + [0] * 20)
    assert len(set(near_duplicate_groups(spam).tolist())) == 2
    for seed in range(2018, 2028):
        for with_test in (True, False):
            parts, _ = split_keeping_copies(data, seed=seed, always_train=None, grouped=True,
                                            with_test=with_test)
            for part in (parts.val, parts.test) if with_test else (parts.val,):
                assert set(part.labels.tolist()) == {0, 1}, (seed, with_test)
