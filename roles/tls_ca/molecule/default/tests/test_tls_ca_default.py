"""A CA from the controller, host certificates, and a Redis that speaks TLS only."""

from __future__ import annotations

from tests.support.molecule_kv import cli, secret

TLS = "--tls --cacert /etc/kvtestbed/tls/ca.crt"


def test_tls_files(host):
    key = host.file("/etc/kvtestbed/tls/host.key")
    assert key.mode == 0o640 and key.group == "kvtestbed-tls"
    assert host.file("/etc/kvtestbed/tls/ca.crt").exists
    sans = host.check_output("openssl x509 -in /etc/kvtestbed/tls/host.crt -noout -ext subjectAltName")
    assert host.ansible.get_variables()["ansible_host"] in sans and "kt-1" in sans
    assert "OK" in host.check_output("openssl verify -CAfile /etc/kvtestbed/tls/ca.crt /etc/kvtestbed/tls/host.crt")
    assert "kvtestbed-tls" in host.check_output("id redis")


def test_tls_ping(host):
    assert cli(host, 6379, "PING", deployment="tls_redis", extra=TLS) == "PONG"


def test_plaintext_refused(host):
    out = host.run(f"REDISCLI_AUTH={secret('tls_redis-admin')} timeout 5 redis-cli --user admin --no-auth-warning "
                   "-p 6379 PING")
    assert "PONG" not in out.stdout
