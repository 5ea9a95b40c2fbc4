"""kvload.webauth: a real Locust (web UI on loopback) behind the login of --kvt-web-password-file.

Unauthenticated pages redirect to the login, a wrong password is refused, the right one gets in, /hdr (kvload's own
route) needs the login too; bad options stop Locust with one line and exit 2, and the password shows nowhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.locustrun import LOCUSTFILE, locust_binary
from tests.support.servers import ManagedProcess, free_port

PASSWORD = "Zq8-web-ui-secret-41f3"


def _write_password(path: Path, text: str = PASSWORD + "\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ManagedProcess]]:
    """A Locust master with its web UI on a free loopback port, login by password file, user 'tester'."""
    workdir = tmp_path_factory.mktemp("webauth")
    secret = _write_password(workdir / "web-password")
    port = free_port()
    proc = ManagedProcess(
        "locust",
        [str(locust_binary()), "-f", str(LOCUSTFILE), "--master", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(free_port()), "--web-host", "127.0.0.1", "--web-port", str(port),
         "--kvt-web-password-file", str(secret), "--kvt-web-user", "tester"],
        workdir, port,
    )
    proc.start()
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()
        # the password is never logged, not even a refused attempt's
        assert PASSWORD not in (workdir / "locust.log").read_text(errors="replace")


def _login(base: str, user: str, password: str) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    response = session.post(f"{base}/kvt-login", data={"username": user, "password": password},
                            allow_redirects=False, timeout=10)
    return session, response


def _redirects_to_login(response: requests.Response) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_pages_redirect_to_the_login_page(master: tuple[str, ManagedProcess]) -> None:
    base, _ = master
    for path in ("/", "/hdr", "/stats/requests"):
        response = requests.get(base + path, allow_redirects=False, timeout=10)
        assert _redirects_to_login(response), (path, response.status_code, response.headers)
    swarm = requests.post(f"{base}/swarm", data={"user_count": 1, "spawn_rate": 1}, allow_redirects=False, timeout=10)
    assert _redirects_to_login(swarm)
    # the login page itself is open, and its form posts to kvload's check
    page = requests.get(f"{base}/login", timeout=10)
    assert page.status_code == 200 and "/kvt-login" in page.text


@pytest.mark.parametrize(("user", "password"), [("tester", "wrong"), ("tester", ""), ("admin", PASSWORD),
                                                ("tester", PASSWORD + "x"), ("tester", PASSWORD[:-1])])
def test_wrong_credentials_are_refused(master: tuple[str, ManagedProcess], user: str, password: str) -> None:
    base, _ = master
    session, response = _login(base, user, password)
    assert _redirects_to_login(response), response.headers
    assert _redirects_to_login(session.get(f"{base}/hdr", allow_redirects=False, timeout=10))


def test_the_right_password_gets_in(master: tuple[str, ManagedProcess]) -> None:
    base, _ = master
    session, response = _login(base, "tester", PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    index = session.get(f"{base}/", allow_redirects=False, timeout=10)
    assert index.status_code == 200 and "<html" in index.text.lower()
    hdr = session.get(f"{base}/hdr", allow_redirects=False, timeout=10)
    assert hdr.status_code == 200 and hdr.json()["unit"] == "us"
    workers = session.get(f"{base}/worker-count", allow_redirects=False, timeout=10)
    assert workers.status_code == 200 and workers.json() == {"worker_count": 0}
    # a forged session cookie (signed with another key) is not a login
    forged = requests.Session()
    forged.cookies.set("session", session.cookies.get("session", "")[:-4] + "AAAA")
    assert _redirects_to_login(forged.get(f"{base}/hdr", allow_redirects=False, timeout=10))


def _run_bad(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(locust_binary()), "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port", str(free_port()),
         *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("case", ["missing", "empty", "web-login-alone", "no-user"])
def test_bad_options_stop_with_one_line(tmp_path: Path, case: str) -> None:
    secret = _write_password(tmp_path / "pw")
    args, expected = {
        "missing": (["--kvt-web-password-file", str(tmp_path / "nope")], f"--kvt-web-password-file {tmp_path}/nope"),
        "empty": (["--kvt-web-password-file", str(_write_password(tmp_path / "empty", "\n"))], "first line is empty"),
        "web-login-alone": (["--web-login"], "--web-login needs --kvt-web-password-file"),
        "no-user": (["--kvt-web-password-file", str(secret), "--kvt-web-user", ""], "--kvt-web-user"),
    }[case]
    proc = _run_bad(tmp_path, *args)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kvload:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
