"""``spamguard train``, ``classify`` and ``report``: thin wrappers over :mod:`spamguard.ml`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from spamguard.cli.context import CliContext, NumberRange, is_terminal, pass_ctx
from spamguard.config import DEFAULT_DATA, RUNTIMES, parse_also_train
from spamguard.errors import DataError, ModelError
from spamguard.ml.version_files import DEFAULT_POOLING, METADATA_FILE, POOLINGS

STDIN_PROMPT = "reading messages from standard input, one a line; end with Ctrl-D"


def stdin_is_a_terminal() -> bool:
    return is_terminal(sys.stdin)


def stderr_is_terminal() -> bool:
    return is_terminal(sys.stderr)


def resolve_model_dir(ctx: CliContext, model: str | None) -> Path:
    """A version directory from a path, a version id, or (None) the active version."""
    if model and Path(model).is_dir():
        return Path(model)
    from spamguard.cli.context import transaction
    from spamguard.services import registry

    with transaction(ctx, create=False) as session:
        version = registry.get_version(session, model) if model else registry.active_version(
            session)
        if version is None:
            raise ModelError("no active model: run `spamguard train` first (or pass --model)")
        if version.status == "deleted":
            raise ModelError(f"model version {version.id} was deleted (`spamguard models "
                             "delete`); see `spamguard models` for the others")
        directory = Path(version.directory)
        if not directory.is_dir():
            raise ModelError(f"model version {version.id}: its folder {directory} does not "
                             "exist (moved or deleted?)")
        return directory


def register(cli: click.Group) -> None:
    """Add ``train``, ``classify`` and ``report`` to ``cli``."""

    @cli.command("train")
    @click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path),
                  default=DEFAULT_DATA, show_default="the shipped SMS Spam Collection subset",
                  help="Labelled TSV/CSV (label ham/spam or 0/1, then text).")
    @click.option("--also-train", "also_train", multiple=True, metavar="FILE",
                  help="Labelled TSV/CSV whose messages always join the training part, never "
                       "validation or test (repeatable); 'present-day' for the shipped "
                       "present-day examples (data/present_day.tsv), 'none' for none "
                       "(default: SPAMGUARD_ALSO_TRAIN, else none).")
    @click.option("--backbone", default=None,
                  help="Local directory or hub id of a BERT-family encoder "
                       "(default: SPAMGUARD_BACKBONE, else the packaged all-MiniLM-L6-v2).")
    @click.option("--pooling", type=click.Choice(POOLINGS), default=DEFAULT_POOLING,
                  show_default=True,
                  help="How token states become one vector: mean-last3 (the masked means of "
                       "the last three layers side by side), mean, cls, pooler or mean-cls.")
    @click.option("--max-length", type=click.IntRange(8, 512), default=128, show_default=True)
    @click.option("--epochs", type=click.IntRange(1, 1000), default=40, show_default=True)
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, show_default=True)
    @click.option("--no-features", is_flag=True, help="Use the embedding alone.")
    @click.option("--no-lexical", is_flag=True,
                  help="Score with the BERT head alone, without blending in the TF-IDF + SVM "
                       "model.")
    @click.option("--max-ham-fpr", type=NumberRange(0, 1), default=0.002,
                  show_default=True, help="Validation ham false-positive budget for the threshold.")
    @pass_ctx
    def train_command(ctx: CliContext, data_path: Path, also_train: tuple[str, ...],
                      backbone: str | None, pooling: str,
                      max_length: int, epochs: int, seed: int, no_features: bool,
                      no_lexical: bool, max_ham_fpr: float) -> None:
        """Train a model version on labelled data and print its report."""
        from sqlalchemy.exc import SQLAlchemyError

        from spamguard.cli.context import session_factory_for
        from spamguard.db import database_error, session_scope
        from spamguard.ml.also_train import (
            also_train_note,
            is_also_train,
            load_also_train,
            with_also_train,
        )
        from spamguard.ml.data import load_labelled
        from spamguard.ml.train import TrainConfig, train_model
        from spamguard.services import registry
        from spamguard.services.audit import cli_user

        settings = ctx.settings
        try:
            paths = parse_also_train(also_train, split=False) if also_train else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--also-train") from None
        named_by = "--also-train" if paths is not None else "SPAMGUARD_ALSO_TRAIN"
        if paths is None:
            paths = settings.also_train_paths or []
        data = load_labelled(data_path)
        also = load_also_train(paths, named_by)
        if len(also):
            click.echo(f"train: {also_train_note(also.files)} always in training "
                       f"({named_by})", err=True)
        config = TrainConfig(pooling=pooling, max_length=max_length, epochs=epochs, seed=seed,
                             features=not no_features, lexical=not no_lexical,
                             max_ham_fpr=max_ham_fpr)
        # The database is opened (made, or its schema checked) before training: an
        # out-of-date schema or a server that is down fails now, not minutes later.
        with session_factory_for(ctx) as factory:
            result = train_model(with_also_train(data, also), models_dir=settings.models_dir,
                                 cache_root=settings.cache_dir,
                                 backbone=backbone or settings.backbone or None, config=config,
                                 data_source=str(Path(data_path).resolve()),
                                 log=lambda line: click.echo(line, err=True),
                                 always_train=is_also_train, also_train_files=also.files)
            try:
                with session_scope(factory) as session:
                    version = registry.register_version(session=session,
                                                        version_dir=result.directory,
                                                        by=cli_user())
                    status = version.status
            except SQLAlchemyError as exc:  # down (exit 1) or failing (2): the folder stays
                if (error := database_error(exc)) is None:
                    raise
                raise type(error)(
                    f"model version {result.metadata['version']} was written to "
                    f"{result.directory} but not registered: {error} (`spamguard promote "
                    f"{result.directory}` registers it and makes it active)") from None
        click.echo(result.summary)
        timing = result.metadata["timing"]
        click.echo(f"\nmodel {result.metadata['version']} ({status}) in {result.directory}")
        click.echo(f"report: {result.directory / 'report.md'}; took {timing['total_s']:.1f} s, "
                   f"{timing['backbone_texts_embedded']} texts through the backbone")

    @cli.command("classify")
    @click.option("--model", default=None, help="Version id or version directory "
                  "(default: the active model).")
    @click.option("--batch-size", type=click.IntRange(1, 1024), default=32, show_default=True)
    @click.option("--quantize", is_flag=True, help="Run the backbone with int8 Linear layers "
                  "(faster on CPU, scores shift slightly; see docs/performance.md).")
    @click.option("--runtime", type=click.Choice(list(RUNTIMES)), default=None,
                  help="Backbone runtime (default: SPAMGUARD_RUNTIME, else auto: torch-bf16 "
                       "where this CPU runs it faster than fp32, else onnx; "
                       "docs/performance.md).")
    @click.option("--format", "input_format", type=click.Choice(["auto", "text", "csv", "tsv"]),
                  default="auto", show_default=True,
                  help="Input format; auto: a .csv/.tsv suffix or a first line that looks "
                       "like a header with a text column means a table, else one message a "
                       "line.")
    @click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path),
                    default="-")
    @pass_ctx
    def classify_command(ctx: CliContext, model: str | None, batch_size: int, quantize: bool,
                         runtime: str | None, input_format: str, source: Path) -> None:
        """Classify messages (a text file, one a line, or CSV/TSV with a text column).

        Prints one JSON object a line, in input order.
        """
        from spamguard.ml.classifier import SpamClassifier
        from spamguard.ml.data import load_texts

        def notice(line: str) -> None:
            click.echo(f"note: {line}", err=True)

        if str(source) == "-":
            if sys.stdin is None:  # closed (`<&-`): nothing to read, and no FILE given
                raise DataError("standard input is closed: give a FILE to classify")
            if stdin_is_a_terminal():  # a person, who would otherwise wait with no prompt
                click.echo(STDIN_PROMPT, err=True)
            texts = load_texts(Path("<stdin>"), sys.stdin.buffer.read(),
                               input_format=input_format, notice=notice)
        else:
            if not source.exists():
                raise click.BadParameter(f"{source}: no such file", param_hint="SOURCE")
            texts = load_texts(source, input_format=input_format, notice=notice)
        directory = resolve_model_dir(ctx, model)
        if not texts:  # nothing to do: skip loading the backbone (seconds)
            click.echo("note: no messages in the input", err=True)
            return
        runtime = runtime or ctx.settings.runtime
        classifier = SpamClassifier.load(directory, batch_size=batch_size,
                                         quantize=quantize, runtime=runtime,
                                         onnx_dir=ctx.settings.onnx_dir)
        # a person, not a script, is watching: say why the scores are not the service's
        if runtime == "auto" and classifier.backbone.variant == "bf16" \
                and stderr_is_terminal():
            notice("runtime torch-bf16 (auto: the fastest on this CPU); "
                   "--runtime onnx gives the service's fp32 scores")
        for result in classifier.classify(texts):
            click.echo(json_line(result))

    @cli.command("report")
    @click.option("--model", default=None, help="Version id or directory (default: active).")
    @click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False,
                  path_type=Path), default=None,
                  help="Labelled file to evaluate on (default: show the version's own report).")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Folder to write the report to, created if missing; files of the same "
                       "name there are replaced. With --data: the new report (default: a "
                       "folder under the version's reports/). Without: a copy of the "
                       "version's stored report (report.json, report.md and its images).")
    @pass_ctx
    def report_command(ctx: CliContext, model: str | None, data_path: Path | None,
                       out: Path | None) -> None:
        """Show a model's classification report, or evaluate it on another labelled file."""
        from spamguard.ml.evaluation import copy_stored_report, evaluate_version, stored_report

        directory = resolve_model_dir(ctx, model)
        if (out is not None and (out / METADATA_FILE).is_file()
                and (data_path is not None or out.resolve() != directory.resolve())):
            # Its report files are that version's own (the admin UI shows them): a report
            # written there replaced the version's test-split report without a word.
            raise ModelError(f"--out {out} is a model version's folder, whose report files "
                             "belong to that version: choose another folder")
        if data_path is None:
            summary, path = (stored_report(directory) if out is None
                             else copy_stored_report(directory, out))
        else:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            default_out = out is None
            out = out or directory / "reports" / f"{data_path.stem}-{stamp}"
            out.mkdir(parents=True, exist_ok=True)  # a bad --out fails before the scoring
            try:
                summary, path = evaluate_version(
                    directory, data_path, out,
                    note=lambda line: click.echo(f"note: {line}", err=True))
            except BaseException:
                if default_out and not any(out.iterdir()):
                    out.rmdir()  # a bad file left an empty folder per try under reports/
                raise
        click.echo(summary)
        click.echo(f"\nreport: {path}")


# Line breaks for Python's str.splitlines() (and JavaScript before ES2019) that
# json.dumps(ensure_ascii=False) leaves raw (it escapes those below U+0020 itself):
# escaped, so each line of output is one object.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_line(value: object) -> str:
    """``value`` as JSON on exactly one line, UTF-8 text kept readable."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)
