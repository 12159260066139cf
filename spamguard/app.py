"""The Flask application factory (flaskr style): defaults, then environment, then overrides."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from werkzeug.wsgi import get_content_length

from spamguard.config import PLACEHOLDER_SECRET, Settings, load_settings
from spamguard.errors import SpamguardError
from spamguard.extensions import Database
from spamguard.plot_config import use_writable_config
from spamguard.shipped import shipped_dir

WEB_DIR = shipped_dir("web")
BLUEPRINTS = ("spamguard.webhook", "spamguard.api", "spamguard.ops", "spamguard.admin")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides settings (tests pass ``home``, ``database_url``...).

    Keys of ``config`` that are not :class:`~spamguard.config.Settings` fields are kept in
    ``settings.extra`` and also copied into ``app.config`` (e.g. ``TESTING``).
    """
    settings = load_settings(config)
    check_secret(settings, testing=bool(settings.extra.get("TESTING")))
    settings.home.mkdir(parents=True, exist_ok=True)
    use_writable_config(settings.cache_dir)
    app = Flask(__name__, template_folder=str(WEB_DIR / "templates"),
                static_folder=str(WEB_DIR / "static"), static_url_path="/static")
    app.config.update(SECRET_KEY=session_secret(settings),
                      MAX_CONTENT_LENGTH=settings.max_request_bytes,
                      SPAMGUARD=settings, **settings.extra)
    Database().init_app(app)
    for module_name in BLUEPRINTS:
        _register(app, module_name)
    app.wsgi_app = StreamedBodyLimit(app.wsgi_app, app)  # type: ignore[method-assign]

    @app.errorhandler(SpamguardError)
    def _user_error(exc: SpamguardError):
        return jsonify(error=str(exc)), 400

    return app


MIN_SECRET_CHARS = 32  # a short key can be guessed offline from one signed session cookie


def check_secret(settings: Settings, *, testing: bool) -> None:
    """Refuse the placeholder or a short secret key outside development and tests."""
    if settings.env == "development" or testing:
        return
    if settings.secret_key == PLACEHOLDER_SECRET:
        raise SpamguardError("SPAMGUARD_SECRET_KEY is not set: set it to a long random string "
                             "(or SPAMGUARD_ENV=development for local use)")
    if len(settings.secret_key) < MIN_SECRET_CHARS:
        raise SpamguardError(
            f"SPAMGUARD_SECRET_KEY has {len(settings.secret_key)} characters: use at least "
            f"{MIN_SECRET_CHARS} random ones, e.g. from "
            "python -c 'import secrets; print(secrets.token_hex(32))'")


DEV_SECRET_FILE = "dev-secret-key"


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies.

    Development mode without ``SPAMGUARD_SECRET_KEY`` must not sign with the placeholder: it
    is public, so anyone could forge an admin's session cookie. It gets a random key instead,
    made once and kept in ``$SPAMGUARD_HOME/dev-secret-key`` (mode 600), so logins survive
    a restart and every gunicorn worker signs alike.
    """
    if settings.secret_key != PLACEHOLDER_SECRET or settings.env != "development":
        return settings.secret_key
    import secrets

    path = settings.home / DEV_SECRET_FILE
    try:
        if not path.exists():
            _publish_secret(path, secrets.token_urlsafe(48))
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpamguardError(f"{path}: cannot make or read the development key ({exc}); "
                             "set SPAMGUARD_SECRET_KEY") from None
    if len(key) < 32:
        raise SpamguardError(f"{path} holds no usable key: delete it to make a new one")
    return key


def _publish_secret(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` (mode 600) unless another process got there first: written
    to a temporary file and hard-linked into place, so nobody reads half a key. Where the
    file system has no hard links, an exclusive create does (a reader may then, rarely, see
    an empty file for an instant and fail with a clear error; a restart fixes it)."""
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    try:
        os.link(tmp, path)  # atomic and exclusive: workers starting together agree
    except FileExistsError:
        pass
    except OSError:  # no hard links here (some network or shared folders)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
    finally:
        tmp.unlink(missing_ok=True)


class StreamedBodyLimit:
    """Hold a body sent without ``Content-Length`` (chunked) to ``MAX_CONTENT_LENGTH`` too.

    For such a body Werkzeug stops reading at the limit without an error when the server
    ends the stream itself (gunicorn sets ``wsgi.input_terminated``): a 200 KB chunked
    request was cut at 64 KiB and the cut form or JSON accepted. Here the body is read up to
    one byte past the limit and handed on with its length, so one too large gets the same
    413 as a request whose ``Content-Length`` says so.
    """

    def __init__(self, wsgi_app: Any, app: Flask) -> None:
        self.wsgi_app, self.app = wsgi_app, app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        # What Werkzeug streams: no usable Content-Length (or one beside Transfer-Encoding),
        # from a server that ends the stream (gunicorn: a request without either has none).
        if limit is not None and environ.get("wsgi.input_terminated") \
                and get_content_length(environ) is None:
            stream, chunks, size = environ["wsgi.input"], [], 0
            while size <= limit:
                chunk = stream.read(min(64 * 1024, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            # Now a body of known length (with Transfer-Encoding Werkzeug ignores it); one
            # over the limit gets Werkzeug's 413 before anything reads it.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input"] = io.BytesIO(b"".join(chunks))
            environ["CONTENT_LENGTH"] = str(size)
        return self.wsgi_app(environ, start_response)


def _register(app: Flask, module_name: str) -> None:
    """Register ``module_name.bp`` (and run its ``init_app`` if it has one)."""
    from importlib import import_module

    module = import_module(module_name)
    if "id" not in app.url_map.converters:  # before the first rule that uses <id:...>
        from spamguard.sqltypes import id_converters

        app.url_map.converters.update(id_converters())
    if hasattr(module, "init_app"):
        module.init_app(app)
    app.register_blueprint(module.bp)
