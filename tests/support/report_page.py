"""A report page in headless Chromium with the network off: every plot drawn? any console error? any request?

Used by the report's integration test and by the lab's scenario test (tests/support/browser.py drives Chromium).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.browser import DevTools, chromium
from tests.support.wait import wait_until

LOAD_TIMEOUT_S = 30  # a 5 MB page with plotly.js inline parses in ~1 s; a slow shared CI core gets room

# Recorded in the page itself, before any of its scripts run: errors the protocol's events could race with.
ERROR_HOOK = """
window.__kvtErrors = [];
const kvtConsoleError = console.error.bind(console);
console.error = (...args) => { window.__kvtErrors.push(args.map(String).join(' ')); kvtConsoleError(...args); };
window.addEventListener('error', e => window.__kvtErrors.push('error: ' + (e.message || e.target.src || e.type)), true);
window.addEventListener('unhandledrejection', e => window.__kvtErrors.push('rejection: ' + e.reason));
"""

PLOTS_STATE = """(() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  return {
    total: divs.length,
    drawn: divs.filter(d => d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg')
                            && d._fullData && d._fullData.length > 0).length,
    ready: document.readyState,
    hooked: Array.isArray(window.__kvtErrors),
    errors: window.__kvtErrors || [],
  };
})()"""


class Console:
    """The protocol's error events (Runtime exceptions and console.error, Log entries of level error, failed
    loads) and every request that left file://, collected from one DevTools connection."""

    def __init__(self, tools: DevTools) -> None:
        self.tools = tools
        self.errors: list[str] = []
        self.requests: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """DevTools.call that keeps the events it reads past instead of dropping them."""
        tools = self.tools
        tools.next_id += 1
        tools.ws.send(json.dumps({"id": tools.next_id, "method": method, "params": params}))
        for _ in range(100_000):  # bounded: a page cannot flood us forever
            msg = json.loads(tools.ws.recv())
            if msg.get("id") == tools.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self._event(msg.get("method", ""), msg.get("params", {}))
        raise AssertionError(f"{method}: no answer among 100000 events")

    def _event(self, name: str, params: dict[str, Any]) -> None:
        if name == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(str((details.get("exception") or {}).get("description") or details["text"])[:300])
        elif name == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif name == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")
        elif name == "Network.loadingFailed":
            why = params.get("errorText") or f"blocked by {params.get('blockedReason')}"
            self.errors.append(f"load failed: {why}")
        elif name == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                self.requests.append(url)

    def open(self, page: Path) -> dict[str, Any]:
        """Navigate to page and wait (bounded) until it has loaded and every plot div is drawn or the page has
        recorded an error; the last state either way."""
        self.call("Page.navigate", url=page.as_uri())

        def settled() -> dict[str, Any] | None:
            state = self.call("Runtime.evaluate", expression=PLOTS_STATE, returnByValue=True)["result"]["value"]
            done = state["ready"] == "complete" and (state["drawn"] == state["total"] or state["errors"])
            return state if done else None

        try:
            return wait_until(settled, LOAD_TIMEOUT_S, 0.2, f"{page.name} to draw its plots")
        finally:
            self.call("Runtime.evaluate", expression="1")  # reads the events sent before this answer


@contextlib.contextmanager
def offline_console(tmp_path: Path) -> Iterator[Console]:
    """Chromium with its network off (offline, and every http(s)/ws URL blocked should anything still try) and the
    error hook installed in every page, watched by a Console."""
    with chromium(tmp_path) as tools:
        watcher = Console(tools)
        for domain in ("Page", "Runtime", "Log", "Network"):
            watcher.call(f"{domain}.enable")
        watcher.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                     uploadThroughput=-1)  # fmt: skip
        watcher.call("Network.setBlockedURLs", urls=["http://*", "https://*", "ws://*", "wss://*"])
        watcher.call("Page.addScriptToEvaluateOnNewDocument", source=ERROR_HOOK)
        yield watcher
