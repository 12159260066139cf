"""spamguard api-key / classify-pending / serve checks, run through Click."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamguard.cli import build_cli


@pytest.fixture
def cli_env(migrated_db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", migrated_db_url)
    return migrated_db_url


def run(*args: str):
    return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)


def test_revoking_a_key_by_its_name_names_its_id(cli_env):
    """It said "no API key 'gateway-b'" of a key named so (a deployment audit)."""
    run("api-key", "create", "gateway-b")
    refused = run("api-key", "revoke", "gateway-b")
    assert refused.exit_code == 2
    assert "'gateway-b' is a key's name; revoke by its id or prefix: 1 (sg_" in refused.output
    assert run("api-key", "revoke", "1").exit_code == 0


def test_api_key_create_list_revoke(cli_env):
    created = run("api-key", "create", "gateway")
    assert created.exit_code == 0
    key = created.stdout.strip()
    assert key.startswith("sg_")
    listed = run("api-key", "list")
    assert "gateway" in listed.output and key[:12] in listed.output and key not in listed.output
    revoked = run("api-key", "revoke", key[:12])
    assert revoked.exit_code == 0 and revoked.output.startswith("revoked API key 1 (gateway")
    again = run("api-key", "revoke", "1")
    assert again.exit_code == 0
    assert re.fullmatch(r"API key 1 \(gateway, sg_\S+\) was already revoked on "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\n", again.output), again.output
    assert run("api-key", "revoke", "sg_unknown12").exit_code == 2
    reused = run("api-key", "create", "gateway")  # the name of a revoked key
    assert reused.exit_code == 0
    taken = run("api-key", "create", " GateWay ")
    assert taken.exit_code == 2 and taken.stdout == ""
    assert re.fullmatch(r"error: an API key named 'gateway' already exists \(id 2, sg_\S+\); "
                        r"choose another name, or revoke that key first\n", taken.stderr)


def test_api_key_create_with_scopes_and_list_shows_them(cli_env):
    gateway = run("api-key", "create", "gateway", "--scope", "submit")
    assert gateway.exit_code == 0
    assert "API key 1 (gateway, may: submit) created" in gateway.stderr
    assert run("api-key", "create", "everything").exit_code == 0
    listed = run("api-key", "list").output.splitlines()
    assert listed[0].split()[:4] == ["ID", "PREFIX", "NAME", "SCOPES"]
    assert listed[1].split()[3] == "submit"
    assert listed[2].split()[3] == "submit,classify,read"
    bad = run("api-key", "create", "x", "--scope", "write")
    assert bad.exit_code == 2 and "'write' is not one of 'submit', 'classify', 'read'" in (
        bad.output)


def test_classify_pending_needs_a_model(cli_env):
    result = run("classify-pending")
    assert result.exit_code == 2
    assert "spamguard train" in result.output


def register_copy(db_url, model_dir, tmp_path, *, activate_if_none: bool) -> Path:
    """Register a copy of ``model_dir`` under ``tmp_path/models``; return the copy."""
    from spamguard.db import make_engine, make_session_factory, session_scope
    from spamguard.services import registry

    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as session:
        target = tmp_path / "models" / model_dir.name
        shutil.copytree(model_dir, target)
        registry.register_version(session=session, version_dir=target,
                                  activate_if_none=activate_if_none)
    engine.dispose()
    return target


def test_classify_pending_without_an_active_version_names_a_candidate(cli_env, tiny_model_dir,
                                                                     tmp_path):
    register_copy(cli_env, tiny_model_dir, tmp_path, activate_if_none=False)
    result = run("classify-pending")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "1 registered, none active" in result.output
    assert f"spamguard promote {tiny_model_dir.name}` (the newest candidate)" in result.output
    assert "spamguard train" not in result.output


def test_classify_pending_says_why_the_active_version_did_not_load(cli_env, tiny_model_dir,
                                                                   tmp_path):
    from spamguard.db import make_engine, make_session_factory
    from spamguard.services import messages

    target = register_copy(cli_env, tiny_model_dir, tmp_path, activate_if_none=True)
    (target / "head.safetensors").unlink()
    assert run("classify-pending").output.strip() == "no pending messages"  # nothing loaded
    engine = make_engine(cli_env)
    with make_session_factory(engine)() as session:
        messages.ingest(session=session, classifier=None, gateway="twilio", external_id="SM1",
                        sender="+1", recipient="+2", body="hi")
    engine.dispose()
    result = run("classify-pending")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"cannot load model {tiny_model_dir.name}" in result.output, result.output
    assert "spamguard train" not in result.output


def test_classify_pending_says_a_load_failure_once_on_stderr(cli_env, tiny_model_dir, tmp_path):
    """Run as cron runs it: Python's last-resort handler printed the service's JSON
    model_load_failed event above the error line (two lines, the same failure)."""
    import subprocess
    import sys

    from spamguard.db import make_engine, make_session_factory
    from spamguard.services import messages

    target = register_copy(cli_env, tiny_model_dir, tmp_path, activate_if_none=True)
    (target / "head.safetensors").unlink()
    engine = make_engine(cli_env)
    with make_session_factory(engine)() as session:
        messages.ingest(session=session, classifier=None, gateway="twilio", external_id="SM1",
                        sender="+1", recipient="+2", body="hi")
    engine.dispose()
    done = subprocess.run([sys.executable, "-m", "spamguard", "classify-pending", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: cannot load model {tiny_model_dir.name}")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_classify_pending_completes_pending_messages(cli_env, tiny_model_dir, tmp_path,
                                                    monkeypatch):
    from spamguard.db import make_engine, make_session_factory, session_scope
    from spamguard.services import messages, registry

    engine = make_engine(cli_env)
    factory = make_session_factory(engine)
    with factory() as session:
        for i in range(5):
            messages.ingest(session=session, classifier=None, gateway="twilio",
                            external_id=f"SM{i}", sender="+1", recipient="+2", body=f"hi {i}")
    target = tmp_path / "models" / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, target)
    with session_scope(factory) as session:
        registry.register_version(session=session, version_dir=target)
    result = run("classify-pending", "--limit", "3")
    assert result.exit_code == 0 and "classified 3" in result.output and "2 still" in result.output
    # the service's runtime (ONNX Runtime by default), so its verdicts match the service's
    assert list((tmp_path / "home" / "cache" / "onnx").glob("*-fp32.onnx"))
    result = run("classify-pending", "--quiet")
    assert "classified 2" in result.output and "0 still pending" in result.output
    with factory() as session:
        assert messages.count_pending(session=session) == 0
    # From an audit: every cron run loaded the model and printed a line (cron mails it).
    from spamguard.services.model_provider import ModelProvider

    def no_load(*_args, **_kwargs):
        raise AssertionError("loaded a model with nothing pending")

    monkeypatch.setattr(ModelProvider, "get", no_load)
    quiet = run("classify-pending", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""
    assert run("classify-pending").output.strip() == "no pending messages"
    engine.dispose()


@pytest.fixture
def no_gunicorn(monkeypatch):
    """Fail instead of serving, should a start-up check let ``serve`` through."""
    from spamguard import serving

    def refuse(*_args, **_kwargs):
        raise AssertionError("serve started gunicorn")

    monkeypatch.setattr(serving, "run_gunicorn", refuse)


def test_serve_refuses_out_of_date_schema(db_url, monkeypatch, no_gunicorn):
    from sqlalchemy import text

    from spamguard.db import make_engine

    engine = make_engine(db_url)  # tables but no schema revision: not ours to upgrade
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE legacy (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    monkeypatch.setenv("SPAMGUARD_DATABASE_URL", db_url)
    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 32)
    result = run("serve", "--port", "8999")
    assert result.exit_code == 2
    assert "out of date" in result.output and "spamguard db upgrade" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_serve_refuses_placeholder_secret(cli_env, monkeypatch, no_gunicorn):
    monkeypatch.delenv("SPAMGUARD_SECRET_KEY", raising=False)
    monkeypatch.delenv("SPAMGUARD_ENV", raising=False)
    result = run("serve")
    assert result.exit_code == 2 and "SPAMGUARD_SECRET_KEY" in result.output


def test_serve_refuses_a_short_secret_in_production(cli_env, monkeypatch, no_gunicorn):
    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 31)
    monkeypatch.delenv("SPAMGUARD_ENV", raising=False)
    result = run("serve")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: SPAMGUARD_SECRET_KEY has 31 characters: use at least 32 random ones, e.g. from "
        "python -c 'import secrets; print(secrets.token_hex(32))'"]


def test_development_mode_takes_a_short_secret(monkeypatch, tmp_path):
    from spamguard.app import check_secret
    from spamguard.config import load_settings

    monkeypatch.setenv("SPAMGUARD_HOME", str(tmp_path))
    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "short")
    monkeypatch.setenv("SPAMGUARD_ENV", "development")
    check_secret(load_settings(), testing=False)  # no error


def test_serve_refuses_a_port_in_use_in_one_line(cli_env, monkeypatch, no_gunicorn):
    import socket

    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 32)
    with socket.socket() as taken:  # a port the system picked, held by "another service"
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.exit_code == 2, result.output
    assert result.output.strip() == result.output.strip().splitlines()[0]
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "choose another --port" in result.output


def test_serve_refuses_an_unknown_host_in_one_line(cli_env, monkeypatch, no_gunicorn):
    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 32)
    result = run("serve", "--host", "no-such-host.invalid", "--port", "8831")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: cannot listen on no-such-host.invalid:8831")
    assert len(result.output.strip().splitlines()) == 1


def test_gunicorn_options_do_not_preload():
    from spamguard.serving import default_workers, gunicorn_options

    options = gunicorn_options(host="127.0.0.1", port=8000, workers=3, timeout=120)
    assert options["preload_app"] is False and options["workers"] == 3
    assert options["control_socket_disable"] is True  # no shared ~/.gunicorn socket
    assert 2 <= default_workers() <= 4


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SPAMGUARD_TORCH_THREADS", "abc", "use a whole number"),
    ("SPAMGUARD_TORCH_THREADS", "0", "choose 1 to 256"),
    ("SPAMGUARD_RETRAIN_METRIC", "foo", "choose mcc"),
    ("SPAMGUARD_TWILIO_VALIDATE", "enabled", "0/false/no/off"),
    ("SPAMGUARD_LOG_BODIES", "2", "0/false/no/off"),
    ("SPAMGUARD_API_RATE_LIMIT", "600 per minut", "no granularity matched for minut"),
    ("SPAMGUARD_ENV", "dev", "choose production, development"),
    ("SPAMGUARD_RETRAIN_MARGIN", "a bit", "use a number"),
    ("SPAMGUARD_MAX_BODY_CHARS", "-5", "choose 1 or more"),
    ("SPAMGUARD_PUBLIC_BASE_URL", "sms.example.com", "like https://sms.example.com"),
    ("SPAMGUARD_RATE_LIMIT_STORAGE_URI", "bogus://x", "unknown storage scheme"),
    # The redis client library is not installed here: found at start, not by each worker.
    ("SPAMGUARD_RATE_LIMIT_STORAGE_URI", "redis://127.0.0.1:1", "'redis' prerequisite"),
    ("SPAMGUARD_RATE_LIMIT_STORAGE_URI", "redis://:s3cret@127.0.0.1:1/0", ":***@127.0.0.1"),
])
def test_serve_refuses_bad_settings_in_one_line(cli_env, monkeypatch, no_gunicorn, name, value,
                                                says):
    monkeypatch.setenv("SPAMGUARD_SECRET_KEY", "s" * 32)  # so the later checks are reached
    monkeypatch.setenv(name, value)
    result = run("serve")
    assert result.exit_code == 2
    assert result.output.strip() == result.output.strip().splitlines()[0]
    assert f"{name}=" in result.output and says in result.output
    assert "s3cret" not in result.output  # a store's password is never printed


@pytest.mark.parametrize(("host", "bind"), [("127.0.0.1", "127.0.0.1:8831"),
                                            ("::1", "[::1]:8831"), ("[::1]", "[::1]:8831"),
                                            ("::", "[::]:8831"), ("localhost", "localhost:8831")])
def test_gunicorn_binds_ipv6_hosts_in_brackets(host, bind):
    from spamguard.serving import gunicorn_options

    assert gunicorn_options(host=host, port=8831, workers=2, timeout=120)["bind"] == bind


def test_workers_get_the_configured_torch_threads(monkeypatch):
    import torch

    from spamguard import serving

    before = torch.get_num_threads()
    monkeypatch.setenv("SPAMGUARD_TORCH_THREADS", "2")
    try:
        serving._one_torch_thread(None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("log_bodies", "hidden"), [("0", True), ("1", False)])
def test_cli_engines_hide_bound_values_unless_bodies_are_logged(cli_env, monkeypatch,
                                                                log_bodies, hidden):
    from spamguard.cli.context import CliContext, session_factory_for

    monkeypatch.setenv("SPAMGUARD_LOG_BODIES", log_bodies)
    with session_factory_for(CliContext()) as factory:
        assert factory.kw["bind"].hide_parameters is hidden


def test_each_command_is_found_in_the_module_that_registers_it():
    """The top-level group imports a command's module only when the command is used;
    its map must name, for every command a module registers, that module."""
    import importlib
    import pkgutil

    import click

    import spamguard.cli as package
    from spamguard.cli import COMMAND_MODULES

    registered = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"spamguard.cli.{info.name}")
        if hasattr(module, "register"):
            group = click.Group("probe")
            module.register(group)
            registered.update(dict.fromkeys(group.commands, info.name))
    assert registered == COMMAND_MODULES


def test_a_command_imports_its_own_module_and_not_the_others():
    from tests.fixtures_ml import python_prints

    code = ("import sys\n"
            "sys.argv = ['spamguard', 'promotion', '--help']\n"
            "from spamguard.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in sys.modules if m.endswith('_commands')))\n")
    assert python_prints(code)[-1] == "['spamguard.cli.promotion_commands']"
    result = CliRunner().invoke(build_cli(), ["--help"])
    assert result.exit_code == 0 and "classify-pending" in result.output
