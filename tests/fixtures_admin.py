"""Admin UI fixtures: accounts, logged-in clients per role (with a CSRF token), messages.

CSRF stays enabled in tests: :class:`AdminClient` reads the token from a rendered form, as a
browser does, and sends it with every POST.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from spamguard.sqltypes import utcnow

PASSWORD = "correct-horse-battery"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


SEEN = re.compile(r'name="seen" value="([^"]+)"')  # the review a decision form showed
FLASH = re.compile(r'<p class="flash flash-(\w+)" role="(?:status|alert)"[^>]*>(.*?)</p>',
                   re.DOTALL)


def flashes(response) -> list[tuple[str, str]]:
    """The flashed messages a page shows: (category, text as read, HTML entities decoded)."""
    from html import unescape

    return [(category, unescape(text))
            for category, text in FLASH.findall(response.get_data(as_text=True))]


def csrf_token(client, url: str = "/admin/login") -> str:
    """Fetch ``url`` and return the CSRF token of its first form."""
    match = TOKEN.search(client.get(url, follow_redirects=True).get_data(as_text=True))
    assert match, f"no csrf_token in {url}"
    return match.group(1)


class AdminClient:
    """A Flask test client logged in as one user; ``post`` adds the CSRF token."""

    def __init__(self, client, username: str) -> None:
        self.client, self.username, self.token = client, username, ""

    def login(self, password: str = PASSWORD):
        response = self.client.post("/admin/login", data={
            "username": self.username, "password": password,
            "csrf_token": csrf_token(self.client)})
        self.token = csrf_token(self.client)
        return response

    def get(self, url: str, **kwargs):
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict | None = None, **kwargs):
        return self.client.post(url, data={"csrf_token": self.token, **(data or {})}, **kwargs)


@pytest.fixture
def make_user(db_session_factory):
    """Create an account (password :data:`PASSWORD`); return its id."""
    from spamguard.db import session_scope
    from spamguard.services import users

    def make(username: str, role: str = "moderator", password: str = PASSWORD) -> int:
        with session_scope(db_session_factory) as session:
            return users.create_user(session=session, username=username, password=password,
                                     role=role).id

    return make


@pytest.fixture
def login_as(app, make_user):
    """Return a factory of logged-in :class:`AdminClient`s, one account per role asked."""

    def login(role: str) -> AdminClient:
        make_user(role, role)
        client = AdminClient(app.test_client(), role)
        response = client.login()
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return login


@pytest.fixture
def admin_client(login_as) -> AdminClient:
    return login_as("admin")


@pytest.fixture
def moderator_client(login_as) -> AdminClient:
    return login_as("moderator")


@pytest.fixture
def viewer_client(login_as) -> AdminClient:
    return login_as("viewer")


def new_message(body: str, *, p: float | None = None, sender: str = "+15550001111",
                received_at: datetime | None = None, threshold: float = 0.5, **extra):
    """Build (not add) a message row; ``p`` None leaves it pending."""
    from spamguard.ml.data import text_hash
    from spamguard.models import Message

    label = None if p is None else ("spam" if p >= threshold else "ham")
    return Message(gateway="test", sender=sender, recipient="+15559990000", body=body,
                   received_at=received_at or utcnow(), text_hash=text_hash(body),
                   verdict_status="pending" if p is None else "classified",
                   spam_probability=p, model_label=label,
                   threshold_distance=None if p is None else abs(p - threshold), **extra)


@pytest.fixture
def add_messages(db_session_factory):
    """Insert messages; each item is a body or a (body, probability) pair; return ids."""
    from spamguard.db import session_scope

    def add(*items, start: datetime | None = None, step=timedelta(minutes=1), **common):
        start = start or utcnow() - timedelta(hours=1)
        with session_scope(db_session_factory) as session:
            rows = []
            for i, item in enumerate(items):
                body, p = (item, None) if isinstance(item, str) else item
                rows.append(new_message(body, p=p, received_at=start + i * step, **common))
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    return add


@pytest.fixture
def two_versions(install_model, tiny_model_dir, tmp_path):
    """The tiny model (active) and a copy registered as a second, candidate version."""
    import json
    import shutil

    first = install_model(tiny_model_dir)
    copy = tmp_path / "copy-source" / f"{tiny_model_dir.name}-b"
    shutil.copytree(tiny_model_dir, copy)
    info = json.loads((copy / "model.json").read_text())
    info["version"] = f"{info['version']}-b"
    (copy / "model.json").write_text(json.dumps(info))
    return first, install_model(copy, activate=False)
