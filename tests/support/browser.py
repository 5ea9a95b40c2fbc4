"""A real browser for tests: headless Chromium (Debian's) driven over the DevTools protocol (websocket-client)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websocket

from tests.support.binaries import require
from tests.support.servers import LOOPBACK
from tests.support.wait import wait_until

# Sets a React-rendered input the way typing does: the native value setter, then the events React listens to.
SET_INPUT = """(name, value) => {
  const el = document.querySelector(`input[name="${name}"]`);
  if (!el) return false;
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(el, value);
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}"""


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket (websocket-client, which Locust's
    python-socketio[client] dependency installs)."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=15, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:  # events in between are not needed
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def set_input(self, name: str, value: str) -> None:
        assert self.js(f"({SET_INPUT})({json.dumps(name)}, {json.dumps(value)})"), f"no input named {name}"

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''"))

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    """Debian's chromium, headless, with one page driven over the DevTools protocol; ended with its helpers."""
    binary = require(
        shutil.which("chromium") or shutil.which("chromium-browser"), "chromium", "apt-get install chromium"
    )
    profile = tmp_path / "chromium"
    proc = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # the tests run as root in CI
            "--disable-gpu",
            "--window-size=1400,1000",  # wide enough for the header to show the status (narrow pages fold it away)
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks one and writes it to DevToolsActivePort
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its helper processes share the group: all are ended together
    )
    tools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and len(port_file.read_text().split()) >= 2, 30, 0.1, "chromium")
        port = port_file.read_text().split()[0]
        pages = json.loads(urllib.request.urlopen(f"http://{LOOPBACK}:{port}/json/list", timeout=5).read())
        tools = DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        yield tools
    finally:
        if tools is not None:
            tools.close()
        end_group(proc)


def end_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- Locust's web UI: the steps its tests share ---------------------------------------------------------------------


def login(tools: DevTools, url: str, user: str, password: str, ready: str, timeout_s: float = 20) -> None:
    """Open url, log in through kvload's login page and wait for the selector `ready` on the page behind it."""
    tools.call("Page.navigate", url=f"{url}/")
    wait_until(lambda: tools.js("!!document.querySelector('input[name=password]')"), timeout_s, 0.1, "the login page")
    tools.set_input("username", user)
    tools.set_input("password", password)
    tools.js("document.querySelector('button[type=submit]').click()")
    selector = json.dumps(ready)
    wait_until(lambda: tools.js(f"!!document.querySelector({selector})"), timeout_s, 0.1, f"{ready} after login")


def click_start(tools: DevTools) -> None:
    """The start form's submit button (its label says start)."""
    tools.js("[...document.querySelectorAll('button[type=submit]')].find(b => /start/i.test(b.innerText)).click()")


def click_tab(tools: DevTools, title: str, *, prefix: bool = False) -> bool:
    """Click the tab titled `title` (case-insensitive; with prefix, the first whose title starts so); False: none."""
    wanted = json.dumps(title.lower())
    test = f"name.startsWith({wanted})" if prefix else f"name === {wanted}"
    return bool(
        tools.js(
            "(() => { const t = [...document.querySelectorAll('[role=tab]')]"
            f".find(t => {{ const name = t.innerText.trim().toLowerCase(); return {test}; }});"
            " if (t) t.click(); return !!t; })()"
        )
    )


def table_rows(tools: DevTools) -> dict[tuple[str, str], list[str]]:
    """The shown table's rows of 3 cells or more, by their first two cells: (section, figure) -> the row's cells."""
    rows = tools.js("[...document.querySelectorAll('table tbody tr')].map(tr => [...tr.cells].map(td => td.innerText))")
    return {(r[0], r[1]): r for r in rows or [] if len(r) >= 3}


def fetch_json(tools: DevTools, path: str) -> Any:
    """GET path from the page (with its login cookie) as JSON."""
    return json.loads(tools.js(f"fetch({json.dumps(path)}).then(r => r.text())"))


def run_stopped(tools: DevTools) -> bool:
    """Locust's header shows the run's state STOPPED."""
    return "STOPPED" in str(tools.js("(document.querySelector('header') || document.body).innerText")).upper()
