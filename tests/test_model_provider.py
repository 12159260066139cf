"""The per-process model provider: lazy load, hot switch, backbone reuse, failures."""

from __future__ import annotations

import json
import shutil

import pytest

from spamguard.services import registry
from spamguard.services.model_provider import ModelProvider, provider_for, read_active


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def second_version(tiny_model_dir, tmp_path):
    """A copy of the tiny model under another version id (same backbone)."""
    target = tmp_path / "models" / "second"
    shutil.copytree(tiny_model_dir, target)
    info = json.loads((target / "model.json").read_text())
    info["version"] = "second-version"
    (target / "model.json").write_text(json.dumps(info))
    return target


def register(session, directory, *, activate=True):
    version = registry.register_version(session=session, version_dir=directory,
                                        activate_if_none=activate)
    if activate:
        registry.promote(session=session, version_id=version.id)
    session.commit()
    return version.id


def test_nothing_active_returns_none(db_session):
    provider = ModelProvider(check_seconds=0)
    assert provider.get(session=db_session) is None
    assert provider.loads == 0


def test_loads_lazily_and_switches_after_interval(db_session, tiny_model_dir, second_version):
    first = register(db_session, tiny_model_dir)
    clock = Clock()
    provider = ModelProvider(check_seconds=5, clock=clock)
    assert provider.peek() is None  # nothing loaded before first use
    assert provider.get(session=db_session).version == first
    second = register(db_session, second_version)
    clock.now = 4
    assert provider.get(session=db_session).version == first  # not due yet: no query
    clock.now = 5
    switched = provider.get(session=db_session)
    assert switched.version == second and provider.loads == 2
    assert provider.backbone_reuses == 1  # same backbone hash: not loaded again


def test_failed_load_returns_none_and_retries(db_session, tiny_model_dir, tmp_path):
    broken = tmp_path / "models" / "broken"
    shutil.copytree(tiny_model_dir, broken)
    version_id = register(db_session, broken)
    (broken / "head.safetensors").unlink()
    clock = Clock()
    provider = ModelProvider(check_seconds=5, clock=clock)
    assert provider.get(session=db_session) is None
    assert version_id in provider.last_error
    shutil.copy(tiny_model_dir / "head.safetensors", broken / "head.safetensors")
    clock.now = 5
    assert provider.get(session=db_session).version == version_id
    assert provider.last_error is None


def test_reset_forgets_the_model(db_session, tiny_model_dir):
    register(db_session, tiny_model_dir)
    provider = ModelProvider(check_seconds=60)
    assert provider.get(session=db_session) is not None
    provider.reset()
    assert provider.peek() is None and provider.version_id is None


def test_read_active_and_app_extension(db_session, app):
    active = registry.active_version(db_session)  # the app fixture installed the tiny model
    assert read_active(db_session).id == active.id
    assert provider_for(app) is provider_for(app)
    assert provider_for(app).check_seconds == app.config["SPAMGUARD"].model_check_seconds


def test_running_app_switches_without_restart(make_app, second_version, install_model):
    app = make_app(model_check_seconds=0)
    from tests.fixtures_service import create_key

    headers = {"Authorization": f"Bearer {create_key(app)}"}
    client = app.test_client()
    before = client.post("/api/v1/classify", json={"texts": ["hi"]}, headers=headers)
    install_model(second_version)  # activates it, as `spamguard promote` would
    after = client.post("/api/v1/classify", json={"texts": ["hi"]}, headers=headers)
    assert before.get_json()["model_version"] != after.get_json()["model_version"]
    assert after.get_json()["model_version"] == "second-version"


@pytest.mark.parametrize(("options", "variant"), [({"quantize": True}, "int8"),
                                                  ({"runtime": "torch-bf16"}, "bf16")])
def test_number_format_settings_serve_that_backbone(db_session, tiny_model_dir, second_version,
                                                    options, variant):
    register(db_session, tiny_model_dir)
    provider = ModelProvider(check_seconds=0, **options)
    first = provider.get(session=db_session)
    assert first.backbone.variant == variant
    assert 0.0 <= float(first.predict_proba(["WIN a prize now"])[0]) <= 1.0
    register(db_session, second_version)
    switched = provider.get(session=db_session)
    assert switched.backbone is first.backbone  # reused, not converted a second time


def test_a_version_on_an_edited_copy_of_the_backbone_gets_its_own(db_session, tiny_model_dir,
                                                                   tiny_backbone_dir, tmp_path):
    """Same weights, other tokenizer settings: the loaded backbone is not reused (the new
    version would refuse it), the version's own backbone is loaded."""
    from spamguard.ml.backbone import load_backbone
    from tests.fixtures_ml import edited_backbone_copy

    edited_dir = edited_backbone_copy(tiny_backbone_dir, tmp_path / "edited",
                                      tokenizer={"do_lower_case": False})
    edited = load_backbone(str(edited_dir))
    target = shutil.copytree(tiny_model_dir, tmp_path / "models" / "on-edited")
    info = json.loads((target / "model.json").read_text())
    info["version"] = "on-edited"
    info["backbone"].update(name=edited.name, settings=edited.settings)
    (target / "model.json").write_text(json.dumps(info))
    register(db_session, tiny_model_dir)
    provider = ModelProvider(check_seconds=0)
    first = provider.get(session=db_session)
    register(db_session, target)
    switched = provider.get(session=db_session)
    assert switched.version == "on-edited" and provider.last_error is None
    assert provider.backbone_reuses == 0
    assert switched.backbone.settings == edited.settings != first.backbone.settings


class Events:
    """The JSON lines the provider logs on ``spamguard.model``."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def __enter__(self) -> Events:
        import logging

        class Keep(logging.Handler):
            def emit(handler, record) -> None:  # noqa: N805 - the outer self is Events
                self.lines.append(json.loads(record.getMessage()))

        self._logger = logging.getLogger("spamguard.model")
        self._handler, self._level = Keep(), self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)

    def named(self, event: str) -> list[dict]:
        return [line for line in self.lines if line["event"] == event]


def test_each_load_is_logged_with_the_version_it_replaced(db_session, tiny_model_dir,
                                                          second_version):
    import os

    first = register(db_session, tiny_model_dir)
    provider = ModelProvider(check_seconds=0)
    with Events() as events:
        provider.get(session=db_session)
        provider.get(session=db_session)  # the same version: nothing to say
        second = register(db_session, second_version)
        provider.get(session=db_session)
    loaded = events.named("model_loaded")
    assert [(line["version"], line["previous"]) for line in loaded] == [
        (first, None), (second, first)]
    assert [line["backbone_reused"] for line in loaded] == [False, True]
    assert all(line["seconds"] >= 0 and line["pid"] == os.getpid() for line in loaded)
    assert events.lines == loaded


def test_a_failing_load_is_logged_once_until_it_changes(db_session, tiny_model_dir, tmp_path):
    broken = tmp_path / "models" / "broken"
    shutil.copytree(tiny_model_dir, broken)
    version_id = register(db_session, broken)
    (broken / "head.safetensors").unlink()
    provider = ModelProvider(check_seconds=0)
    with Events() as events:
        for _ in range(3):  # a check every few seconds must not fill the log
            assert provider.get(session=db_session) is None
        shutil.copy(tiny_model_dir / "head.safetensors", broken / "head.safetensors")
        provider.get(session=db_session)
        (broken / "head.safetensors").unlink()
        provider.reset()
        provider.get(session=db_session)  # failing again after a success: logged again
    assert [line["event"] for line in events.lines] == [
        "model_load_failed", "model_loaded", "model_load_failed"]
    failed = events.lines[0]
    assert failed["version"] == version_id and failed["serving"] is None
    assert failed["error"] == f"cannot load model {version_id}: " + failed["error"].split(
        ": ", 1)[1]


def test_losing_the_active_version_is_logged_once(db_session, tiny_model_dir):
    from sqlalchemy import update

    from spamguard.models import ModelVersion

    version_id = register(db_session, tiny_model_dir)
    provider = ModelProvider(check_seconds=0)
    provider.get(session=db_session)
    db_session.execute(update(ModelVersion).values(status="retired"))
    db_session.commit()
    with Events() as events:
        for _ in range(3):
            assert provider.get(session=db_session).version == version_id  # keeps serving
    assert events.lines == [{"event": "no_active_model", "keeping": version_id,
                             "pid": events.lines[0]["pid"]}]
    registry.promote(session=db_session, version_id=version_id)  # back: nothing to load
    db_session.commit()
    provider.get(session=db_session)
    db_session.execute(update(ModelVersion).values(status="retired"))
    db_session.commit()
    with Events() as again:
        provider.get(session=db_session)
    assert [line["event"] for line in again.lines] == ["no_active_model"]  # news again


def test_the_service_writes_model_events_to_its_log(make_app, logging_setup):
    """The service's log (stderr) gets the load line: the logger is not left at WARNING.
    (Logging not set up by anyone else: see test_ops for an operator's root handlers.)"""
    import io
    import logging

    with logging_setup.without_root_handlers():
        app = make_app(model_check_seconds=0)
    stream = io.StringIO()
    handlers = [handler for handler in logging.getLogger("spamguard.model").handlers
                if type(handler) is logging.StreamHandler]  # not pytest's capturing ones
    assert handlers, "the app gave spamguard.model no stderr handler"
    for handler in handlers:  # the fixture drops them after the test
        handler.setStream(stream)
    assert app.test_client().get("/healthz").status_code == 200
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["event"] == "model_loaded" and line["version"]
