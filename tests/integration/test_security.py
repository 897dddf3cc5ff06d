"""Security against real components (docs/security.md): a TLS-only redis-server with ACL users and no default
user, certificates made by the test with the openssl CLI, the least-privilege users of
`aml_screener.watchlist.acl` applied with `aml-screener watchlist acl --apply`, the watchlist loaded by the sync
job's CLI as the sync user, real `aml-screener run` processes as the screener user; and secrets configured with
distinctive values that must appear in no log line, probe body, metric or error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from aml_screener.demo.sample import BUNDLED_MANIFEST, sample_listings
from aml_screener.devstack.generator import Expected
from aml_screener.devstack.redis_server import RedisServer, RedisTls
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.codec import FramedReader
from aml_screener.screener.schemas import UnknownSchemaId
from aml_screener.watchlist.acl import screener_user
from tests.integration.harness import (
    REPOSITORY,
    IsolatedStack,
    OutputReader,
    ScreenerProcess,
    all_decided,
    encoder,
    generate,
    produce,
    produce_raw,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make test certificates"),
]

ADMIN, ADMIN_PASSWORD = "admin", "admin-Pw-5e0d71"
SCREENER, SCREENER_PASSWORD = "aml-screener", "screener-Pw-9c4a2f"
SYNC, SYNC_PASSWORD = "aml-sync", "sync-Pw-3b7e55"
KEYS = WatchlistKeys()


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256, 1 day)."""
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "1",
             "-subj", "/CN=aml-screener test CA")  # fmt: skip
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        ext = d / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                 "-subj", f"/CN=aml-screener test {name}")  # fmt: skip
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-out", str(d / f"{name}.crt"), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@pytest.fixture
def secure_redis(certs: Certs) -> Iterator[RedisServer]:
    """TLS only (no plain-text port), client certificates required, the default user disabled, one admin."""
    tls = RedisTls(certs.server_cert, certs.server_key, certs.ca, auth_clients="yes")
    admin_user = ["--user", ADMIN, "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all", "--user", "default", "off"]
    with RedisServer(tls=tls, extra_args=admin_user, username=ADMIN, password=ADMIN_PASSWORD) as server:
        yield server


def redis_env(server: RedisServer, certs: Certs, user: str | None, password: str | None) -> dict[str, str]:
    env = {
        "AML_REDIS_URL": server.url,
        "AML_REDIS_SSL_CA_CERTS": str(certs.ca),
        "AML_REDIS_SSL_CERTFILE": str(certs.client_cert),
        "AML_REDIS_SSL_KEYFILE": str(certs.client_key),
    }
    if user is not None:
        env["AML_REDIS_USERNAME"] = user
    if password is not None:
        env["AML_REDIS_PASSWORD"] = password
    return env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AML_")}
    return subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def client_as(server: RedisServer, certs: Certs, user: str, password: str) -> redis.Redis:
    return redis.Redis.from_url(
        server.url,
        username=user,
        password=password,
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
        decode_responses=True,
        socket_timeout=5,
    )


@pytest.fixture
def provisioned(secure_redis: RedisServer, certs: Certs) -> RedisServer:
    """The operator's steps from docs/security.md: apply the two ACL users as admin, then sync as `aml-sync`."""
    applied = cli(
        "watchlist", "acl", "--apply", "--screener-password-env", "SCREENER_PW", "--sync-password-env", "SYNC_PW",
        env={**redis_env(secure_redis, certs, ADMIN, ADMIN_PASSWORD), "SCREENER_PW": SCREENER_PASSWORD,
             "SYNC_PW": SYNC_PASSWORD},
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert SCREENER_PASSWORD not in applied.stdout + applied.stderr
    assert SYNC_PASSWORD not in applied.stdout + applied.stderr
    loaded = cli(
        "watchlist",
        "load",
        "--manifest",
        str(BUNDLED_MANIFEST),
        env=redis_env(secure_redis, certs, SYNC, SYNC_PASSWORD),
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "activated" in loaded.stdout
    return secure_redis


def start_screener(
    screeners: Callable[..., ScreenerProcess], server: RedisServer, certs: Certs, instance: str, **env: str
) -> ScreenerProcess:
    return screeners(instance, **redis_env(server, certs, SCREENER, SCREENER_PASSWORD), **env)


def acl_denials(server: RedisServer, user: str) -> list[dict[str, Any]]:
    with server.client(decode_responses=True) as admin:
        return [entry for entry in admin.acl_log() if entry["username"] == user]


def test_screener_reads_over_mutual_tls_as_a_read_only_acl_user_and_flags_listed_addresses(
    provisioned: RedisServer, certs: Certs, stack: IsolatedStack, screeners, reader: OutputReader
) -> None:
    events = generate(sample_listings(), 600, seed=41, hit_share=0.1, invalid_share=0.02, malformed_share=0.02)
    screener = start_screener(screeners, provisioned, certs, "tls-1")
    screener.wait_assigned(timeout=60)
    produce(stack, events)
    outputs = reader.read_until(all_decided(events), 60, "every event decided")

    flagged_expected = {e.event_id for e in events if e.expected is Expected.FLAGGED}
    outcome = outputs.outcome_of()
    assert len(flagged_expected) > 30
    assert {event_id for event_id, o in outcome.items() if o == "FLAGGED"} == flagged_expected
    for event in events:
        if event.expected is not Expected.DEAD_LETTER:
            assert outcome[event.event_id] == event.expected.value
    with client_as(provisioned, certs, SYNC, SYNC_PASSWORD) as sync:
        active = sync.get(KEYS.active)
    assert {d["watchlist_version"] for d in outputs.decisions} == {active}, "decided against what the sync loaded"

    # Everything the screener did (connect, lookups, change subscription, freshness reads) is inside its rules.
    assert acl_denials(provisioned, SCREENER) == []

    with client_as(provisioned, certs, SCREENER, SCREENER_PASSWORD) as reader_only:
        assert reader_only.get(KEYS.active) == active
        table = next(iter(json.loads(reader_only.hgetall(KEYS.version(active))["tables"]).values()))
        refused: list[Callable[[], object]] = [
            lambda: reader_only.set(KEYS.active, "forged-version"),
            lambda: reader_only.hset(table, "evm:0x" + "0" * 40, "[]"),
            lambda: reader_only.hdel(table, next(iter(reader_only.hgetall(table)))),
            lambda: reader_only.delete(KEYS.active),
            lambda: reader_only.publish(KEYS.changes, "{}"),
            lambda: reader_only.get("some-other-application:key"),
            reader_only.flushall,
            lambda: reader_only.config_get("*"),
            lambda: reader_only.keys("*"),
        ]
        for attempt in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        assert reader_only.get(KEYS.active) == active and reader_only.hlen(table) > 0, "nothing was changed"
    assert len(acl_denials(provisioned, SCREENER)) == len(refused), "ACL LOG records each refusal (it is watched)"

    with client_as(provisioned, certs, SYNC, SYNC_PASSWORD) as sync:
        for attempt in (
            lambda: sync.set("some-other-application:key", "x"),
            sync.flushall,
            lambda: sync.config_set("save", "60 1"),
            lambda: sync.execute_command("ACL", "SETUSER", "intruder", "on", ">pw", "+@all"),
            lambda: sync.publish("other-channel", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()

    # Without TLS, without a client certificate, or with a placeholder password, nothing gets in.
    with pytest.raises(redis.ConnectionError), redis.Redis(port=provisioned.port, socket_timeout=2) as plain:
        plain.ping()
    no_client_cert = redis.Redis.from_url(
        provisioned.url, username=SCREENER, password=SCREENER_PASSWORD, ssl_ca_certs=str(certs.ca), socket_timeout=2
    )
    with pytest.raises(redis.ConnectionError), no_client_cert:
        no_client_cert.ping()
    with provisioned.client() as admin, pytest.raises(redis.ResponseError, match="hash"):
        admin.execute_command(*screener_user(KEYS.prefix, None, "placeholder-user").setuser_args())
    assert screener.terminate() == 0


@dataclass
class Registry:
    url: str
    authorizations: list[str | None] = field(default_factory=list)


@pytest.fixture
def registry_with_basic_auth() -> Iterator[tuple[Registry, str]]:
    """A Schema Registry (the two REST calls the screener makes) that insists on HTTP basic auth."""
    credentials = "svc-screener:registry-Pw-61d0aa"
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: dict[str, Any] | None) -> None:
            seen.append(self.headers.get("Authorization"))
            code = 200 if self.headers.get("Authorization") == expected else 401
            if code == 200 and body is None:
                code, body = 404, {"error_code": 40403, "message": "Schema not found"}
            payload = json.dumps(body if code != 401 else {"error_code": 40101, "message": "unauthorized"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            schema_id = int(self.path.rstrip("/").rsplit("/", 1)[1])
            try:
                self._answer({"schema": json.dumps(REPOSITORY.writer_schema(schema_id))})
            except UnknownSchemaId:
                self._answer(None)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._answer({"id": REPOSITORY.output_schema_id("", json.loads(body["schema"]))})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Registry(f"http://127.0.0.1:{server.server_address[1]}", seen), credentials
    server.shutdown()
    server.server_close()


def test_secrets_never_reach_logs_probes_or_metrics_and_logs_carry_no_account_ids(
    provisioned: RedisServer,
    certs: Certs,
    stack: IsolatedStack,
    screeners,
    reader: OutputReader,
    *,
    registry_with_basic_auth: tuple[Registry, str],
) -> None:
    registry, basic_auth = registry_with_basic_auth
    wrong_password = "wrong-Pw-0f8e13"
    secrets_env = {
        "AML_SCHEMA_REGISTRY_URL": registry.url,
        "AML_SCHEMA_REGISTRY_BASIC_AUTH": basic_auth,
        # Not used by the plain-text embedded broker, but configured: they are in the settings that get logged.
        "AML_KAFKA_SASL_USERNAME": "svc-screener",
        "AML_KAFKA_SASL_PASSWORD": "sasl-Pw-2a9c47",
        "AML_KAFKA_SSL_KEY_PASSWORD": "keypass-Pw-77b3e0",
    }
    secrets = [
        SCREENER_PASSWORD,
        wrong_password,
        basic_auth,
        basic_auth.split(":", 1)[1],
        base64.b64encode(basic_auth.encode()).decode(),  # the Authorization header value
        secrets_env["AML_KAFKA_SASL_PASSWORD"],
        secrets_env["AML_KAFKA_SSL_KEY_PASSWORD"],
    ]
    bodies: list[str] = []

    def capture(process: ScreenerProcess) -> None:
        bodies.append(process.metrics())
        for path in ("/readyz", "/healthz"):
            bodies.append(json.dumps(process.probe(path)[1]))

    # The error path: a wrong Redis password keeps the screener alive, healthy, not ready, and says why.
    locked_out = screeners("locked-out", **redis_env(provisioned, certs, SCREENER, wrong_password), **secrets_env)
    locked_out.wait_until(
        lambda: locked_out.probe("/readyz")[1].get("reason") == "redis_auth_failed", 30, "not ready: auth failed"
    )
    status, body = locked_out.probe("/readyz")
    assert status == 503 and body["fail_closed"] is True and not body["assigned_partitions"]
    assert locked_out.probe("/healthz")[0] == 200, "an auth failure is not a reason for a restart loop"
    assert locked_out.metric("aml_screener_lookup_errors_total", reason="redis_auth_failed") >= 1
    capture(locked_out)

    # The normal path, with a few flagged, unscreenable and dead-lettered events (one with a 60 KB account id).
    events = generate(sample_listings(), 200, seed=43, hit_share=0.1, invalid_share=0.05, malformed_share=0.05)
    huge_account = "acct-" + "7" * 60_000
    template = decoded(next(e for e in events if e.expected is Expected.CLEAR).value)
    huge = encoder().encode({**template, "event_id": "huge-account-1", "account_id": huge_account})
    screener = start_screener(screeners, provisioned, certs, "secrets-1", **secrets_env)
    screener.wait_assigned(timeout=60)
    produce(stack, events)
    produce_raw(stack, [(b"acct-huge", huge)])
    outputs = reader.read_until(
        lambda out: all_decided(events)(out) and "field_too_long" in out.dead_letter_reasons(), 60, "all decided"
    )
    assert outputs.dead_letter_reasons()["field_too_long"] == 1, "the 60 KB account id is refused by name"
    assert any(o == "FLAGGED" for o in outputs.outcome_of().values())
    assert set(registry.authorizations) == {"Basic " + base64.b64encode(basic_auth.encode()).decode()}, (
        "every registry call carried the configured credentials"
    )
    capture(screener)
    assert locked_out.terminate() == 0 and screener.terminate() == 0

    logs = {process.instance: process.log.read_text(errors="replace") for process in (locked_out, screener)}
    everything = "\n".join([*logs.values(), *bodies])
    for secret in secrets:
        assert secret not in everything, f"a configured secret ({secret[:4]}...) leaked"

    # Structured logs: every line is one JSON object; none carries a customer's account id or address.
    account_ids = {decoded(e.value)["account_id"] for e in events if e.expected is not Expected.DEAD_LETTER}
    account_ids.add(huge_account[:64])
    addresses = {e.address for e in events if len(e.address or "") >= 20}
    for instance, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{instance} logged nothing"
        for line in lines:
            record = json.loads(line)  # raises on any non-JSON line
            assert {"ts", "level", "logger", "msg"} <= set(record), line
            for identifier in account_ids | addresses:
                assert identifier not in line, f"{instance} logged a customer identifier: {line[:200]}"
    assert any(json.loads(line)["msg"] == "starting screener" for line in logs["secrets-1"].splitlines())
    # ...and each hit is named by its event id (and decision id) for the analyst's trail.
    flag_lines = [json.loads(line) for line in logs["secrets-1"].splitlines() if "withdrawal flagged" in line]
    flagged = {e.event_id for e in events if e.expected is Expected.FLAGGED}
    assert flagged and {line["event_id"] for line in flag_lines} == flagged
    assert all(line["decision_id"] and line["lists"] for line in flag_lines)


_FRAMED = FramedReader(REPOSITORY, logical_types=False)


def decoded(value: bytes) -> dict[str, Any]:
    """A generated event's record (malformed ones: an empty dict)."""
    try:
        return _FRAMED.decode(value)[1]
    except Exception:  # malformed on purpose
        return {}
