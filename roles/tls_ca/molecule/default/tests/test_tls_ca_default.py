"""A CA from the controller, host certificates, and a Redis that speaks TLS only."""

from __future__ import annotations

from tests.support.molecule_kv import assert_secrets_private, cli, secret

TLS = "--tls --cacert /etc/kvtestbed/tls/ca.crt"


def test_tls_files(host):
    key = host.file("/etc/kvtestbed/tls/host.key")
    assert key.mode == 0o640 and key.group == "kvtestbed-tls"
    assert host.file("/etc/kvtestbed/tls/ca.crt").exists
    sans = host.check_output("openssl x509 -in /etc/kvtestbed/tls/host.crt -noout -ext subjectAltName")
    assert host.ansible.get_variables()["ansible_host"] in sans and "kt-1" in sans
    assert "OK" in host.check_output("openssl verify -CAfile /etc/kvtestbed/tls/ca.crt /etc/kvtestbed/tls/host.crt")
    assert "kvtestbed-tls" in host.check_output("id redis")


def test_redis_runs_on_tls_only(host):
    service = host.service("redis@6379")
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://127.0.0.1:6379").is_listening
    conf = host.file("/etc/redis/redis-6379.conf").content_string
    assert "port 0" in conf.splitlines() and "tls-port 6379" in conf.splitlines()


def test_tls_ping(host):
    assert cli(host, 6379, "PING", deployment="tls_redis", extra=TLS) == "PONG"
    # a client that does not trust the CA is turned away by the handshake
    out = host.run(f"REDISCLI_AUTH={secret('tls_redis-admin')} timeout 5 redis-cli --user admin --no-auth-warning "
                   "--tls --cacert /etc/ssl/certs/ca-certificates.crt -p 6379 PING")
    assert out.rc != 0 and "PONG" not in out.stdout, out


def test_plaintext_refused(host):
    # the port is open (the PING over TLS above answers): a plaintext client gets no reply, the connection is closed
    assert host.socket("tcp://127.0.0.1:6379").is_listening
    out = host.run(f"REDISCLI_AUTH={secret('tls_redis-admin')} timeout 5 redis-cli --user admin --no-auth-warning "
                   "-p 6379 PING")
    assert out.rc != 0 and "PONG" not in out.stdout, out
    # redis-cli reports the reset (I/O error, Connection reset by peer, Server closed the connection)
    assert any(text in out.stdout + out.stderr for text in ("I/O error", "Connection reset", "closed")), out


def test_secrets_are_private():
    """Passwords, the CA and host keys and certificates on the controller: 0600 files in 0700 dirs."""
    assert_secrets_private()
