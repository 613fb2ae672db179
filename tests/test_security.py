"""TLS and authentication end to end: Apache Kafka's TLS, SASL/PLAIN and SASL/SCRAM-SHA-512
listeners, and redis-server on TLS with an ACL user (certificates made by the fixtures).

Refusals exit 3 with one line naming the profile (plus a hint), never the secret, and
never librdkafka's own log lines.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import evrelay
from tests.test_contract_kafka import create_topic

KAFKA_SECRET = "scram-secret"


def assert_one_line_refusal(run, *, names: str, secret: str, started: float, within: float = 8.0) -> str:
    assert run.returncode == 3, run.err
    lines = run.err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("evrelay: error: "), run.err
    assert len(lines) == 1 or lines[1].startswith("evrelay: hint: "), run.err
    assert names in lines[0], run.err
    assert secret not in run.err + run.out
    assert "librdkafka" not in run.err and "%3|" not in run.err and "Traceback" not in run.err
    assert time.monotonic() - started < within, "a refusal must not wait out the whole timeout"
    return lines[0]


@pytest.fixture
def kafka_profiles(apache_kafka):
    topic = create_topic(apache_kafka.bootstrap, f"sec-{uuid.uuid4().hex[:6]}")
    tls = apache_kafka.tls
    Path("evrelay.toml").write_text(
        f"""
[profiles.scram]
backend = "kafka"
bootstrap_servers = "{apache_kafka.address('SASLTLS')}"
topic = "{topic}"
[profiles.scram.options]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "scram-user"
"sasl.password" = "${{KAFKA_PASSWORD}}"
"ssl.ca.location" = "{tls.ca}"

[profiles.untrusted]
backend = "kafka"
bootstrap_servers = "{apache_kafka.address('TLS')}"
topic = "{topic}"
[profiles.untrusted.options]
"security.protocol" = "SSL"
"ssl.ca.location" = "{tls.other_ca}"

[profiles.unverified]
backend = "kafka"
bootstrap_servers = "{apache_kafka.address('TLS')}"
topic = "{topic}"
[profiles.unverified.options]
"security.protocol" = "SSL"
"enable.ssl.certificate.verification" = false
"""
    )
    return topic


@pytest.mark.kafka
def test_kafka_profile_with_scram_over_tls_and_inline_plain_and_tls_addresses(apache_kafka, kafka_profiles):
    topic = kafka_profiles
    env = {"KAFKA_PASSWORD": KAFKA_SECRET}
    published = evrelay("publish", "scram", "over-scram", env=env)
    assert published.returncode == 0, published.err
    plain = f"kafka://plain-user:plain-secret@{apache_kafka.address('SASL')}/{topic}?security.protocol=SASL_PLAINTEXT&sasl.mechanism=PLAIN"
    published = evrelay("publish", plain, "over-plain", "-v")
    assert published.returncode == 0, published.err
    assert "plain-secret" not in published.err and "plain-user:********@" in published.err
    tls_only = f"kafka://{apache_kafka.address('TLS')}/{topic}?security.protocol=SSL&ssl.ca.location={apache_kafka.tls.ca}"
    got = evrelay("tail", tls_only, "-o", "raw")
    assert got.returncode == 0, got.err
    assert got.out.splitlines() == ["over-scram", "over-plain"]
    tailed = evrelay("tail", "scram", "-o", "raw", "-v", env=env)
    assert tailed.returncode == 0 and tailed.out.splitlines() == ["over-scram", "over-plain"], tailed.err
    assert KAFKA_SECRET not in tailed.err


@pytest.mark.kafka
def test_kafka_wrong_password_exits_3_naming_the_profile(apache_kafka, kafka_profiles):
    started = time.monotonic()
    run = evrelay("publish", "scram", "x", env={"KAFKA_PASSWORD": "wrong-secret"})
    line = assert_one_line_refusal(run, names="profile 'scram'", secret="wrong-secret", started=started)
    assert "refused the credentials" in line and "SCRAM-SHA-512" in line
    # As a bridge's sink (reachability is checked in the background, then waited for
    # before the first read): a refusal, not an outage retried forever.
    for lines in ("", '{"value":"x"}\n'):
        started = time.monotonic()
        run = evrelay("bridge", "-", "scram", input=lines, env={"KAFKA_PASSWORD": "wrong-secret"}, timeout=60)
        line = assert_one_line_refusal(run, names="profile 'scram'", secret="wrong-secret", started=started)
        assert "refused the credentials" in line
    started = time.monotonic()
    run = evrelay("tail", f"kafka://plain-user:not-it@{apache_kafka.address('SASL')}/{kafka_profiles}"
                  "?security.protocol=SASL_PLAINTEXT&sasl.mechanism=PLAIN")
    line = assert_one_line_refusal(run, names="plain-user:********@", secret="not-it", started=started)
    assert "refused the credentials" in line


@pytest.mark.kafka
def test_kafka_untrusted_certificate_exits_3_and_verification_off_is_warned(kafka_profiles):
    started = time.monotonic()
    run = evrelay("tail", "untrusted", "--timeout", "20s")
    line = assert_one_line_refusal(run, names="profile 'untrusted'", secret="-----BEGIN", started=started)
    assert "TLS handshake" in line and "certificate" in line
    run = evrelay("publish", "unverified", "anyway")
    assert run.returncode == 0, run.err
    (warning,) = [line for line in run.err.splitlines() if "warning" in line]
    assert "TLS certificate verification is off for" in warning and "profile 'unverified'" in warning


@pytest.mark.redis
def test_rediss_with_an_acl_user(tls_redis_server):
    server = tls_redis_server
    Path("evrelay.toml").write_text(
        f"""
[profiles.secure]
backend = "redis"
url = "rediss://{server.USER}:${{REDIS_PASSWORD}}@127.0.0.1:{server.port}/0"
stream = "secure-{uuid.uuid4().hex[:6]}"
[profiles.secure.options]
ssl_ca_certs = "{server.tls.ca}"
"""
    )
    ok = {"REDIS_PASSWORD": server.PASSWORD}
    assert evrelay("publish", "secure", "over-tls", env=ok).returncode == 0
    tailed = evrelay("tail", "secure", "-o", "raw", "-v", env=ok)
    assert tailed.returncode == 0 and tailed.out.splitlines() == ["over-tls"], tailed.err
    assert server.PASSWORD not in tailed.err

    started = time.monotonic()
    run = evrelay("tail", "secure", env={"REDIS_PASSWORD": "wrong-secret"})
    line = assert_one_line_refusal(run, names="profile 'secure'", secret="wrong-secret", started=started)
    assert "refused the credentials" in line

    inline = f"rediss://{server.USER}:{server.PASSWORD}@127.0.0.1:{server.port}/0/elsewhere"
    started = time.monotonic()
    run = evrelay("publish", inline, "x")  # no ssl_ca_certs: the server's CA is not trusted
    line = assert_one_line_refusal(run, names="rediss://evrelay-user:********@", secret=server.PASSWORD, started=started)
    assert "TLS certificate is not trusted" in line
    run = evrelay("publish", inline + "?ssl_cert_reqs=none", "x")
    assert run.returncode == 0, run.err
    assert "TLS certificate verification is off" in run.err and server.PASSWORD not in run.err
