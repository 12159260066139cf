"""Load benchmark: `spamguard serve` (gunicorn) on loopback, driven by concurrent clients.

Usage::

    python bench/load.py --model-home /path/to/instance      # reuse a trained model
    python bench/load.py                                      # train the default model first
    python bench/load.py --rate 120 --requests 6000           # paced at 120 requests/s
    python bench/load.py --quantize                           # int8 backbone (SPAMGUARD_QUANTIZE)

Every run uses a fresh temporary SPAMGUARD_HOME with a new SQLite database. Clients send
signed Twilio webhooks (a share of them retries of an earlier MessageSid) and JSON API
messages for a bounded count and time, then the database is checked: every accepted message
stored exactly once (lost = 0, duplicated = 0).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import requests
from twilio.request_validator import RequestValidator

from spamguard.config import check_number_format

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-twilio-token"


@dataclass
class Plan:
    """The request mix, decided up front so every run with a seed is the same."""

    kinds: list[str]  # "webhook", "retry", "api"
    bodies: list[str]


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    sids: set[str] = field(default_factory=set)  # accepted Twilio MessageSids
    api_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, seconds: float, ident: str) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            self.statuses[(kind, status)] += 1
            if kind in {"webhook", "retry"} and status == 200:
                self.sids.add(ident)
            elif kind == "api" and status in {200, 201, 202}:
                self.api_ids.add(ident)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-home", type=Path, help="instance whose newest model to serve")
    parser.add_argument("--requests", type=int, default=4000, help="requests to send at most")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to send at most")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="total requests per second (0: each client as fast as it can)")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers")
    parser.add_argument("--retry-share", type=float, default=0.10)
    parser.add_argument("--api-share", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--quantize", action="store_true",
                        help="serve with SPAMGUARD_QUANTIZE=1 (int8 backbone)")
    parser.add_argument("--runtime", choices=["onnx", "torch", "torch-bf16"], default=None,
                        help="SPAMGUARD_RUNTIME for the server (default: its own default)")
    args = parser.parse_args()
    try:
        check_number_format(args.runtime or "onnx", args.quantize)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def spamguard(env: dict, *args: str) -> str:
    """Run a spamguard command in the bench home and return its stdout."""
    done = subprocess.run([sys.executable, "-m", "spamguard", *args], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout


def prepare_home(home: Path, env: dict, model_home: Path | None) -> str:
    """Fresh database plus a model: copied from ``model_home`` or trained now."""
    spamguard(env, "db", "upgrade")
    if model_home is None:
        warm = ROOT / "instance" / "cache"
        if warm.is_dir():
            shutil.copytree(warm, home / "cache")
        print("training the default model (uses the warm embedding cache if present)...")
        spamguard(env, "train")
    else:
        versions = sorted(p.parent for p in (model_home / "models").glob("*/model.json"))
        if not versions:
            raise SystemExit(f"no model version under {model_home / 'models'}")
        target = home / "models" / versions[-1].name
        shutil.copytree(versions[-1], target)
        register_version(env, target)
    return spamguard(env, "api-key", "create", "bench").strip()


def register_version(env: dict, directory: Path) -> None:
    """Register (and so activate) a copied version in the bench database."""
    code = ("from spamguard.config import load_settings; from spamguard.db import *; "
            "from spamguard.services import registry; import sys; "
            "s = load_settings(); e = make_engine(s.resolved_database_url)\n"
            "with session_scope(make_session_factory(e)) as session:\n"
            "    registry.register_version(session=session, version_dir=sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(directory)], env=env, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict, port: int, workers: int | None, log_path: Path):
    """Start `spamguard serve` in its own process group; return the process."""
    args = [sys.executable, "-m", "spamguard", "serve", "--port", str(port)]
    if workers:
        args += ["--workers", str(workers)]
    log = open(log_path, "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)


def warm_up(base: str, workers: int, deadline: float) -> float:
    """Wait until the server answers and every worker has loaded the model; return seconds."""
    started = time.perf_counter()
    ready_rounds = 0
    while time.time() < deadline and ready_rounds < 3:
        try:
            answers = run_parallel(lambda: requests.get(f"{base}/healthz", timeout=60).json(),
                                   workers * 2)
        except requests.ConnectionError:
            time.sleep(0.3)
            continue
        loaded = all(a.get("model", {}).get("loaded") for a in answers)
        ready_rounds = ready_rounds + 1 if loaded else 0
    if ready_rounds < 3:
        raise SystemExit("server did not become ready (see the server log)")
    return time.perf_counter() - started


def run_parallel(call, count: int) -> list:
    out: list = [None] * count

    def one(i: int) -> None:
        try:
            out[i] = call()
        except requests.RequestException:
            out[i] = None  # not up yet: the caller retries

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(o is None for o in out):
        raise requests.ConnectionError("a warm-up request failed")
    return out


def make_plan(args: argparse.Namespace) -> Plan:
    rng = random.Random(args.seed)
    texts = [line.split("\t", 1)[1] for line in
             (ROOT / "data" / "sms_spam_collection.tsv").read_text("utf-8").splitlines()]
    kinds = []
    for i in range(args.requests):
        r = rng.random()
        if r < args.api_share:
            kinds.append("api")
        elif i > 0 and r < args.api_share + args.retry_share:
            kinds.append("retry")
        else:
            kinds.append("webhook")
    return Plan(kinds=kinds, bodies=[rng.choice(texts) for _ in kinds])


class Driver:
    """Sends the plan from ``clients`` threads; webhooks are signed as Twilio signs them."""

    def __init__(self, args, plan: Plan, base: str, api_key: str) -> None:
        self.args, self.plan, self.base = args, plan, base
        address = urlsplit(base)
        self.host, self.port = address.hostname, address.port
        self.api_key = api_key
        self.validator = RequestValidator(TOKEN)
        self.results = Results()
        self.next_index = 0
        self.index_lock = threading.Lock()
        self.sent_sids: list[dict] = []
        self.rng = random.Random(args.seed + 1)

    def take(self) -> int | None:
        with self.index_lock:
            if self.next_index >= len(self.plan.kinds) or time.time() > self.stop_at:
                return None
            self.next_index += 1
            return self.next_index - 1

    def run(self) -> float:
        self.started = time.time()
        self.stop_at = self.started + self.args.duration
        threads = [threading.Thread(target=self.client) for _ in range(self.args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.time() - self.started

    def client(self) -> None:
        while (i := self.take()) is not None:
            if self.args.rate:
                delay = self.started + i / self.args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            kind = self.plan.kinds[i]
            try:
                status, ident, seconds = self.send(kind, i)
            except (OSError, http.client.HTTPException):
                status, ident, seconds = 0, "", 0.0
            self.results.add(kind, status, seconds, ident)

    def webhook_params(self, kind: str, i: int) -> dict:
        with self.index_lock:
            if kind == "retry" and self.sent_sids:
                return self.rng.choice(self.sent_sids)
            params = {"MessageSid": f"SM{i:032x}", "AccountSid": "AC" + "0" * 32,
                      "From": f"+1555{i % 10_000_000:07d}", "To": "+15550000000",
                      "Body": self.plan.bodies[i], "NumMedia": "0"}
            self.sent_sids.append(params)
            return params

    def send(self, kind: str, i: int) -> tuple[int, str, float]:
        if kind == "api":
            payload = {"id": f"bench-{i}", "from": "+15551234567", "to": "+15550000000",
                       "body": self.plan.bodies[i]}
            status, seconds = self.post("/api/v1/messages", json.dumps(payload).encode(), {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.api_key}"})
            return status, payload["id"], seconds
        params = self.webhook_params(kind, i)
        signature = self.validator.compute_signature(f"{self.base}/webhook/twilio", params)
        body = urlencode(params).encode()
        status, seconds = self.post("/webhook/twilio", body, {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature})
        return status, params["MessageSid"], seconds

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, float]:
        """One POST on a fresh connection (gunicorn's sync workers close it after each
        request anyway). http.client, not requests: the clients share the server's cores,
        and the lighter the client, the more of the machine measures the server."""
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            return response.status, time.perf_counter() - started
        finally:
            connection.close()


def database_counts(env: dict) -> dict:
    """Rows per gateway, distinct ids, verdict totals, pending, messages with >1 verdict."""
    code = """
import json
from sqlalchemy import text
from spamguard.config import load_settings
from spamguard.db import make_engine
e = make_engine(load_settings().resolved_database_url)
q = {
 "twilio_rows": "select count(*) from messages where gateway='twilio'",
 "api_rows": "select count(*) from messages where gateway='api'",
 "verdicts": "select count(*) from verdicts",
 "pending": "select count(*) from messages where verdict_status='pending'",
 "multi_verdict": "select count(*) from (select message_id from verdicts group by message_id "
                  "having count(*) > 1) t",
}
with e.connect() as c:
    out = {k: c.execute(text(v)).scalar() for k, v in q.items()}
    out["twilio_ids"] = [r[0] for r in c.execute(text(
        "select external_id from messages where gateway='twilio'"))]
    out["api_ids"] = [r[0] for r in c.execute(text(
        "select external_id from messages where gateway='api'"))]
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def percentile_ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def report(args, results: Results, elapsed: float, counts: dict, warm: float,
           client_cpu: float) -> int:
    """Print the results table; return the number of integrity failures."""
    def sent(kind: str) -> int:
        return len(results.latencies.get(kind, []))

    webhook = results.latencies.get("webhook", []) + results.latencies.get("retry", [])
    api = results.latencies.get("api", [])
    total = len(webhook) + len(api)
    errors = sum(n for (_k, status), n in results.statuses.items() if status not in {
        200, 201, 202})
    lost = (len(results.sids - set(counts["twilio_ids"]))
            + len(results.api_ids - set(counts["api_ids"])))
    duplicated = (counts["twilio_rows"] - len(set(counts["twilio_ids"]))
                  + counts["api_rows"] - len(set(counts["api_ids"])))
    extra = (counts["twilio_rows"] - len(results.sids)) + (counts["api_rows"]
                                                          - len(results.api_ids))
    rows = [
        ("backbone runtime", args.backbone_setup),
        ("clients / rate", f"{args.clients} / {args.rate or 'max'} req/s"),
        ("warm-up (model load in workers)", f"{warm:.1f} s"),
        ("requests sent (webhook / retry / api)",
         f"{total} ({sent('webhook')} / {sent('retry')} / {sent('api')})"),
        ("elapsed", f"{elapsed:.1f} s"),
        # The clients share the server's 2 cores: what they burn, the server cannot use.
        ("load generator CPU (share of one core)", f"{client_cpu:.0%}"),
        ("throughput, all requests", f"{total / elapsed:.1f} req/s"),
        ("throughput, webhook messages", f"{len(webhook) / elapsed:.1f} msg/s"),
        ("webhook latency p50 / p95 / p99 / max (ms)",
         " / ".join(percentile_ms(webhook, q) for q in (50, 95, 99, 100))),
        ("api latency p50 / p95 / p99 / max (ms)",
         " / ".join(percentile_ms(api, q) for q in (50, 95, 99, 100))),
        ("non-2xx answers", str(errors)),
        ("stored messages (twilio / api)", f"{counts['twilio_rows']} / {counts['api_rows']}"),
        ("verdicts / pending / >1 verdict", f"{counts['verdicts']} / {counts['pending']} / "
         f"{counts['multi_verdict']}"),
        ("lost (accepted, not stored)", str(lost)),
        ("duplicated (same id stored twice)", str(duplicated)),
        ("unexpected extra rows", str(extra)),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return lost + duplicated + max(extra, 0)


def main() -> int:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="spamguard-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SPAMGUARD_HOME": str(home), "SPAMGUARD_SECRET_KEY": "bench-" + "x" * 32,
           "SPAMGUARD_TWILIO_AUTH_TOKEN": TOKEN, "SPAMGUARD_PUBLIC_BASE_URL": base,
           "SPAMGUARD_API_RATE_LIMIT": "1000000 per minute"}
    env.pop("SPAMGUARD_DATABASE_URL", None)
    if args.quantize:
        env["SPAMGUARD_QUANTIZE"] = "1"
    if args.runtime:
        env["SPAMGUARD_RUNTIME"] = args.runtime
    runtime = env.get("SPAMGUARD_RUNTIME", "onnx")
    number_format = ("int8" if env.get("SPAMGUARD_QUANTIZE") == "1"
                     else "bf16" if runtime == "torch-bf16" else "fp32")
    args.backbone_setup = f"{runtime}, {number_format}"
    server = None
    try:
        api_key = prepare_home(home, env, args.model_home)
        server = start_server(env, port, args.workers, home / "server.log")
        from spamguard.serving import default_workers

        warm = warm_up(base, args.workers or default_workers(), time.time() + 120)
        print(f"server ready after {warm:.1f} s; sending...", flush=True)
        driver = Driver(args, make_plan(args), base, api_key)
        cpu_started = time.process_time()
        elapsed = driver.run()
        client_cpu = (time.process_time() - cpu_started) / elapsed  # cores this process used
        counts = database_counts(env)
        failures = report(args, driver.results, elapsed, counts, warm, client_cpu)
        return 1 if failures else 0
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)  # our own gunicorn's process group
            server.wait(30)
        if args.keep:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
