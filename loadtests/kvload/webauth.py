"""A login in front of the web UI: one user, its password read from a file.

    locust -f loadtests/locustfile.py --kvt-web-password-file secrets/locust-web-password   # user: admin

Locust's --web-login only draws the login page; the check is the locustfile's job (Locust's docs, "Adding
authentication to the Web UI"). Giving --kvt-web-password-file turns the login on (with or without --web-login, so a
forgotten flag cannot leave the UI open), and --web-login without a password file is refused: Locust would otherwise
answer every page with an "auth exception". The password comes from the file only, never from a command line
(where `ps` shows it), and is never logged; it is compared in constant time.

Sessions are signed with a key made at start: restarting the master logs everyone out, and no key sits on disk.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from flask import Response, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, login_user
from locust import events
from locust.env import Environment
from locust.web import WebUI

from kvload.plugin import fail

logger = logging.getLogger(__name__)

LOGIN_PATH = "/kvt-login"
REFUSED = "Wrong user name or password"


class WebUser(UserMixin):
    """The one user of the web UI; flask_login keeps its name (the id) in the signed session cookie."""

    def __init__(self, name: str) -> None:
        self.id = name


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--kvt-web-password-file",
        default="",
        help="turn the web UI's login on; the password is the file's first line (never pass it on a command line)",
        include_in_web_ui=False,
    )
    parser.add_argument("--kvt-web-user", default="admin", help="the web UI's user name", include_in_web_ui=False)


def read_password(path: str) -> str:
    """The file's first line; one line and exit 2 when it cannot be read or is empty (the message names the file,
    never its content)."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as exc:
        fail(f"--kvt-web-password-file {path}: cannot read it ({exc.strerror})")
    except UnicodeDecodeError:
        fail(f"--kvt-web-password-file {path}: not UTF-8 text")
    if not password:
        fail(f"--kvt-web-password-file {path}: the first line is empty; write the password there")
    return password


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def enable(web_ui: WebUI, user: str, password: str, base_path: str = "") -> None:
    """Protect every page of web_ui (Locust's and ours: they use auth_required_if_enabled) with user/password; /metrics
    (kvload.prometheus) also takes them as basic auth."""
    app = web_ui.app
    assert app is not None
    if not web_ui.web_login:
        # what WebUI.__init__ does for --web-login; the web server has not started yet (Locust starts it after init)
        manager = LoginManager()
        manager.init_app(app)
        manager.login_view = "locust.login"
        web_ui.login_manager = manager
        web_ui.web_login = True
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

    def load_user(user_id: str) -> WebUser | None:
        return WebUser(user_id) if _same(user_id, user) else None

    def credentials_ok(given_user: str, given_password: str) -> bool:
        # both compared, always: which one was wrong must not show in the time taken
        user_ok = _same(given_user, user)
        password_ok = _same(given_password, password)
        return user_ok and password_ok

    web_ui.login_manager.user_loader(load_user)
    web_ui.auth_args = {**web_ui.auth_args, "username_password_callback": base_path + LOGIN_PATH}
    # the same check for kvload.prometheus's /metrics, which Prometheus reads with basic auth (no login form)
    web_ui.kvt_credentials_ok = credentials_ok  # type: ignore[attr-defined]

    @app.route(base_path + LOGIN_PATH, methods=["POST"])
    def kvt_login() -> Response:
        if credentials_ok(request.form.get("username", ""), request.form.get("password", "")):
            login_user(WebUser(user))
            return redirect(url_for("locust.index"))  # type: ignore[return-value]
        logger.warning("web UI: refused a login from %s", request.remote_addr)
        session["auth_error"] = REFUSED
        return redirect(url_for("locust.login"))  # type: ignore[return-value]


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    web_ui = environment.web_ui
    options = environment.parsed_options
    if web_ui is None or options is None:
        return  # headless or a worker: no web UI to protect
    path = getattr(options, "kvt_web_password_file", "") or ""
    if not path:
        if web_ui.web_login:
            fail("--web-login needs --kvt-web-password-file FILE (the login's password, first line of FILE)")
        return
    user = getattr(options, "kvt_web_user", "") or ""
    if not user:
        fail("--kvt-web-user: give a user name")
    enable(web_ui, user, read_password(path), getattr(options, "web_base_path", "") or "")
