"""Secure connections: Kafka SASL (PLAIN, SCRAM) and TLS, Redis AUTH, ACL users and TLS, the API token.

One extra broker + Redis for this module (a second :class:`LocalStack` with SASL_PLAINTEXT and
SASL_SSL listeners and ``requirepass``), plus a TLS-only Redis; certificates come from a
throw-away CA made with openssl. The worker gets every credential from its environment, never
on the command line, and none of them may appear in its log or on its web endpoints.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import decode_entry

from attnrec.errors import ConfigError
from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics, make_consumer
from attnrec.settings import Settings, env_name
from tests.feeding import Feeder
from tests.helpers import WorkerProc

KAFKA_USER = "attnrec"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path] | None:
    """A throw-away CA and a server certificate for 127.0.0.1 (None without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=attnrec-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "san.cnf", "-out", "server.crt")
    run("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")  # fmt: skip
    (d / "server.pem").write_text((d / "server.pk8").read_text() + (d / "server.crt").read_text())
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key", "pem": d / "server.pem", "dir": d}


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path] | None) -> Iterator[Any]:
    """A broker with SASL_PLAINTEXT and (with openssl) SASL_SSL listeners — PLAIN, SCRAM-SHA-256/512 —
    and a Redis with a password."""
    from attnrec.apps.stack import LocalStack, free_port

    st = LocalStack(
        tmp_path_factory.mktemp("secure-stack"),
        kafka_jit="quick",
        kafka_port=free_port(),
        controller_port=free_port(),
        redis_port=free_port(),
        sasl_port=free_port(),
        sasl_ssl_port=free_port() if certs else None,
        ssl_keystore=certs["pem"] if certs else None,
        sasl_users={KAFKA_USER: "k-" + secrets.token_urlsafe(18)},
        redis_password="r-" + secrets.token_urlsafe(18),
        kafka_heap="384m",  # 256m: the log cleaner's 128 MB buffer ran it out of heap at start (seen once)
    )
    st.up()
    try:
        yield st
    finally:
        st.down()


@pytest.fixture(scope="module")
def tls_redis(certs: dict[str, Path] | None) -> Iterator[dict[str, Any]]:
    """A Redis that speaks only TLS (certificate from a throw-away CA) and requires a password."""
    from attnrec.apps.stack import LocalStack, free_port

    if certs is None:
        pytest.fail("openssl not installed (deploy/setup-system.sh installs it): cannot make a test certificate")
    d = certs["dir"]
    port = free_port()
    password = "t-" + secrets.token_urlsafe(18)
    proc = subprocess.Popen(
        [LocalStack.redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(d)],
        cwd=d, stdout=open(d / "redis.log", "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.crt'}"
    client = redis.Redis.from_url(url, password=password, socket_timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield {"url": url, "password": password, "client": client, "ca": d / "ca.crt", "port": port}
    finally:
        proc.terminate()
        proc.wait(10)


def _admin_redis(st: Any) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=st.redis_port, password=st.redis_password, socket_timeout=5)


def settings_from_env(monkeypatch: pytest.MonkeyPatch, names: dict[str, str], registry: Path, kafka_bootstrap: str,
                      redis_url: str, **env: str) -> Settings:  # fmt: skip
    """Put ``env`` (settings fields: credentials, protocols) in the environment, where the worker
    gets them from, and read the settings back from it (the rest given here)."""
    for field, value in env.items():
        monkeypatch.setenv(env_name(field), value)
    return Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, registry=registry, partitions=2, **names)


def send_and_wait_for_recs(s: Settings, w: WorkerProc, r: redis.Redis, tag: str = "sec") -> tuple[list[str], dict[str, str]]:
    """Produce a few events per user through ``s``'s Kafka connection, wait for each user's last
    recommendation, and check the Redis buffers (read with ``r``) hold exactly what was sent."""
    users = [f"{tag}-{i}" for i in range(6)]
    sent = [ClickEvent(f"{tag}-{n}-{i}", u, f"item-{n}", "click", 1_764_300_000_000 + 10 * n + i)
            for n in range(3) for i, u in enumerate(users)]  # fmt: skip
    with Feeder(s) as feeder:
        feeder.send_all(sent)
    c = make_consumer(s, s.recs_topic, group_id=None)
    last = {u: [e for e in sent if e.user_id == u][-1].event_id for u in users}
    got: dict[str, str] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and any(got.get(u) != last[u] for u in users):
            for msgs in c.poll(timeout_ms=300).values():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    got[rec["user_id"]] = rec["trigger_event_id"]
    finally:
        c.close()
    assert got == last, f"recommendations missing: {got}\n{w.tail()}"
    for u in users:
        entries = [decode_entry(x) for x in r.lrange(user_keys(u)[0], 0, -1)]
        assert [e.ts for e in entries] == [e.ts for e in sent if e.user_id == u][::-1]
    return users, last


# ------------------------------------------------------------------------------ no services


def test_non_loopback_bind_requires_a_token() -> None:
    with pytest.raises(ConfigError, match="ATTNREC_API_TOKEN"):
        Settings(web_host="0.0.0.0")
    s = Settings(web_host="0.0.0.0", api_token="t0ken-value")
    assert s.web_host == "0.0.0.0"


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        Settings(web_host="0.0.0.0", api_token="")


def test_secrets_are_not_in_the_settings_repr() -> None:
    s = Settings(
        kafka_security_protocol="SASL_SSL", kafka_username="u", kafka_password="kafka-pw-123",
        redis_password="redis-pw-456", api_token="token-789",
    )  # fmt: skip
    text = repr(s) + str(s) + s.model_dump_json()
    for secret in ("kafka-pw-123", "redis-pw-456", "token-789"):
        assert secret not in text


def test_sasl_needs_a_username() -> None:
    with pytest.raises(ConfigError, match="ATTNREC_KAFKA_USERNAME"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")


# ------------------------------------------------------------------------------ services


@pytest.mark.integration
def test_services_refuse_clients_without_credentials(secure_stack: Any) -> None:
    st = secure_stack
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=st.redis_port, socket_timeout=5).ping()
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        redis.Redis(host="127.0.0.1", port=st.redis_port, password="wrong", socket_timeout=5).ping()
    assert _admin_redis(st).ping()

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    good = st.sasl_users[KAFKA_USER]
    for mech in ("PLAIN", "SCRAM-SHA-512"):
        a = KafkaAdminClient(bootstrap_servers=st.sasl_bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mech,
                             sasl_plain_username=KAFKA_USER, sasl_plain_password=good, request_timeout_ms=5000)  # fmt: skip
        a.list_topics()
        a.close()
    with pytest.raises(KafkaError):  # authentication fails: the client never bootstraps
        KafkaAdminClient(bootstrap_servers=st.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=KAFKA_USER, sasl_plain_password="wrong",
                         request_timeout_ms=3000, bootstrap_timeout_ms=4000).list_topics()  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(
    "mechanism,redis_acl_user",
    [("PLAIN", None), ("SCRAM-SHA-256", "attnrec-worker")],
    ids=["sasl-plain+requirepass", "sasl-scram+redis-acl-user"],
)
def test_worker_connects_with_credentials_from_the_environment(
    secure_stack: Any,
    names: dict[str, str],
    registry_with_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mechanism: str,
    redis_acl_user: str | None,
) -> None:
    st = secure_stack
    kafka_pw = st.sasl_users[KAFKA_USER]
    redis_pw = st.redis_password
    token = "tok-" + secrets.token_urlsafe(24)
    if redis_acl_user is not None:  # a least-privilege ACL user instead of the default user
        redis_pw = "acl-" + secrets.token_urlsafe(18)
        _admin_redis(st).execute_command(
            "ACL", "SETUSER", redis_acl_user, "reset", "on", f">{redis_pw}", "~{u:*", "~{trend:*", "~{online}:*", "~{catalog}:*", "~attnrec:state*", "~attnrec:progress*", "+@all", "-@dangerous"
        )
        monkeypatch.setenv("ATTNREC_REDIS_USERNAME", redis_acl_user)
    # every secret comes from the environment (WorkerProc copies os.environ)
    s = settings_from_env(monkeypatch, names, registry_with_model, st.sasl_bootstrap,
                          f"redis://127.0.0.1:{st.redis_port}/0",  # no password in the URL
                          kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                          kafka_username=KAFKA_USER, kafka_password=kafka_pw, redis_password=redis_pw, api_token=token,
                          log_level="DEBUG")  # fmt: skip
    assert s.kafka_password is not None and s.kafka_password.get_secret_value() == kafka_pw
    ensure_topics(s)
    w = WorkerProc(s, tmp_path)
    try:
        w.wait_ready()
        # users and event ids of this case only: the same event_id again would be a producer's retry
        users, last = send_and_wait_for_recs(s, w, _admin_redis(st), tag=f"sec-{mechanism.lower()}")
        # the API refuses a request without the bearer token (or with a wrong one)
        auth = {"Authorization": f"Bearer {token}"}
        for path in ("/metrics", f"/recs/{users[0]}"):
            assert w.get(path)[0] == 401, path
            assert w.get(path, headers={"Authorization": "Bearer nope"})[0] == 401, path
            assert w.get(path, headers={"Authorization": token})[0] == 401, path  # scheme required
            code, body = w.get(path, headers=auth)
            assert code == 200, (path, body)
            for secret in (kafka_pw, redis_pw, token):
                assert secret.encode() not in body
        code, body = w.get(f"/recs/{users[0]}", headers=auth)
        assert orjson.loads(body)["trigger_event_id"] == last[users[0]]
        # probes stay open for the orchestrator, and say nothing secret
        for path in ("/healthz", "/readyz"):
            code, body = w.get(path)
            assert code == 200, (path, body)
            for secret in (kafka_pw, redis_pw, token):
                assert secret.encode() not in body
    finally:
        rc = w.terminate()
    log = w.tail(10_000_000)
    assert "worker starting" in log, log[-3000:]
    for what, secret in (("kafka password", kafka_pw), ("redis password", redis_pw), ("api token", token)):
        assert secret not in log, f"the {what} appears in the worker log"
    assert rc == 0, log[-3000:]


@pytest.mark.integration
def test_a_refused_worker_logs_no_secret(
    secure_stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong credentials: the worker fails to connect, says so, and still logs no secret."""
    st = secure_stack
    wrong_kafka = "wk-" + secrets.token_urlsafe(18)
    wrong_redis = "wr-" + secrets.token_urlsafe(18)
    s = settings_from_env(monkeypatch, names, registry_with_model, st.sasl_bootstrap, f"redis://127.0.0.1:{st.redis_port}/0",
                          kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                          kafka_username=KAFKA_USER, kafka_password=wrong_kafka, redis_password=wrong_redis,
                          log_level="DEBUG")  # fmt: skip
    w = WorkerProc(s, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and w.proc.poll() is None:
            time.sleep(0.5)
    finally:
        w.kill()
    log = w.tail(10_000_000)
    assert log.strip(), "the worker logged nothing"
    assert w.proc.returncode != 0
    assert wrong_kafka not in log and wrong_redis not in log, "a password appears in the worker log"
    assert st.sasl_users[KAFKA_USER] not in log and st.redis_password not in log


@pytest.mark.integration
def test_worker_over_tls(
    secure_stack: Any,
    tls_redis: dict[str, Any],
    names: dict[str, str],
    registry_with_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka over SASL_SSL (SCRAM-SHA-512, ATTNREC_KAFKA_SSL_CAFILE) and Redis over TLS (rediss:// with
    a private CA as ``ssl_ca_certs`` in the URL) + AUTH: every connection of the worker is encrypted."""
    with pytest.raises(redis.exceptions.ConnectionError):  # plain TCP is not served
        redis.Redis(host="127.0.0.1", port=tls_redis["port"], password=tls_redis["password"], socket_timeout=3).ping()
    with pytest.raises(redis.exceptions.ConnectionError):  # an unknown CA is refused by the client
        redis.Redis.from_url(f"rediss://127.0.0.1:{tls_redis['port']}/0", password=tls_redis["password"], socket_timeout=3).ping()
    kafka_pw = secure_stack.sasl_users[KAFKA_USER]
    s = settings_from_env(monkeypatch, names, registry_with_model, secure_stack.sasl_ssl_bootstrap, tls_redis["url"],
                          kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                          kafka_username=KAFKA_USER, kafka_password=kafka_pw, kafka_ssl_cafile=str(tls_redis["ca"]),
                          redis_password=tls_redis["password"])  # fmt: skip
    ensure_topics(s)
    w = WorkerProc(s, tmp_path)
    try:
        w.wait_ready()
        send_and_wait_for_recs(s, w, tls_redis["client"], tag="tls")
    finally:
        rc = w.terminate()
    log = w.tail(10_000_000)
    assert tls_redis["password"] not in log and kafka_pw not in log
    assert rc == 0, log[-3000:]
