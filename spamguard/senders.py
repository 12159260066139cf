"""One phone number, however it was written: "+44 7911 123456", "+447911123456" and
"447911123456" are the same sender.

Gateways store E.164 ("+447911123456"), but a JSON API caller sends what it has, and a
moderator types what they see. The digits of a phone number, with the marks people write
in one left out, are kept beside the sender (``messages.sender_digits``, migration 0016),
so the sender filter finds every form with one index lookup. Digits are compared as
written: no country code is added or removed ("07911 123456" is not "+44 7911 123456").
"""

from __future__ import annotations

import re

PHONE_MARKS = re.compile(r"[+\s().-]")  # written in a phone number, not part of it
MIN_PHONE_DIGITS = 8  # E.164 numbers have 8 to 15 digits; short codes 3 to 6


def phone_digits(sender: str) -> str | None:
    """The digits of a phone-number sender, without "+", spaces, dashes, dots and
    parentheses; None for a name ("BARCLAYS"), a short code ("1555": fewer than
    :data:`MIN_PHONE_DIGITS` digits, so "+1555" is not "1555") or anything else."""
    digits = PHONE_MARKS.sub("", sender)
    if digits.isascii() and digits.isdigit() and len(digits) >= MIN_PHONE_DIGITS:
        return digits
    return None


def sender_key(sender: str) -> str:
    """What a sender rule matches on: a phone number's digits (:func:`phone_digits`), else
    the sender as written without surrounding spaces and with case folded ("HSBC" is
    "hsbc"; short codes stay exact)."""
    return phone_digits(sender) or sender.strip().casefold()
