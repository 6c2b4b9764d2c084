"""A headless Chromium driven over the DevTools protocol, for the dashboard's browser test.

Why the DevTools protocol and not Selenium: it needs only the ``chromium`` binary and the
``websockets`` package (no chromedriver to keep in step with the browser), and it gives
screenshots, console errors and Content-Security-Policy violations directly. The browser
runs with a throwaway profile; its DevTools port is read from the ``DevToolsActivePort``
file the browser writes (``--remote-debugging-port=0``: no port race). Waiting is by
polling a condition in the page, never by sleeping a fixed time.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser binary: ``$ROUTEGUARD_CHROMIUM``, else the first of CANDIDATES on PATH."""
    override = os.environ.get("ROUTEGUARD_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class PageError(AssertionError):
    """The page did something a test should not accept (a script error, a timeout)."""


class Page:
    """One tab, attached through the browser's DevTools WebSocket (flattened sessions)."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self._ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self.console_errors: list[str] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command on this tab and return its result."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params,
                                  "sessionId": self._session}))  # fmt: skip
        while True:
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise PageError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('source')}: {entry.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = params.get("args", [])
            self.console_errors.append("console: " + " ".join(str(a.get("value")) for a in args))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        out = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in out:
            raise PageError(f"{expression!r} threw: {out['exceptionDetails'].get('text')}")
        return out.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; its value, or PageError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise PageError(f"timed out after {timeout:g} s waiting for {expression}")
            time.sleep(interval)

    def goto(self, url: str) -> None:
        """Load ``url`` and wait until the document has loaded."""
        self.send("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector``, as a user would."""
        rect = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e || e.disabled) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); const x = r.x + r.width / 2;"
            " const y = r.y + r.height / 2; const top = document.elementFromPoint(x, y);"
            " return r.width && top && e.contains(top) ? {x, y} : null; })()"
        )  # visible and not covered by another element: what a user could click
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"],
                      button="left", clickCount=1)  # fmt: skip

    def type(self, selector: str, text: str) -> None:
        """Focus the element matching ``selector`` and type ``text`` into it."""
        self.click(selector)
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path, width: int = 1360) -> None:
        """A PNG of the whole page (not just the viewport) at ``width`` CSS pixels."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        try:
            out = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        finally:  # input events map through the real window again
            self.send("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(out["data"]))


@contextlib.contextmanager
def chromium(binary: str, width: int = 1360, height: int = 900) -> Iterator[Page]:
    """A headless Chromium with one blank tab, closed (and its profile removed) at exit."""
    profile = tempfile.mkdtemp(prefix="routeguard-chromium-")
    args = [
        binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check",
        "--disable-gpu", "--disable-extensions", "--disable-background-networking",
        "--disable-dev-shm-usage", "--hide-scrollbars", "about:blank",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise PageError(f"chromium exited with {proc.returncode}: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise PageError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port, ws_path = port_file.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{ws_path}", max_size=None) as ws:
            ws.send(json.dumps({"id": 1, "method": "Target.createTarget",
                                "params": {"url": "about:blank"}}))  # fmt: skip
            target = _reply(ws, 1)["targetId"]
            ws.send(json.dumps({"id": 2, "method": "Target.attachToTarget",
                                "params": {"targetId": target, "flatten": True}}))  # fmt: skip
            page = Page(ws, _reply(ws, 2)["sessionId"])
            for domain in ("Page", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def _reply(ws: ClientConnection, msg_id: int) -> dict[str, Any]:
    """The result of browser-level command ``msg_id`` (events before it are skipped)."""
    while True:
        msg = json.loads(ws.recv(timeout=30))
        if msg.get("id") == msg_id:
            if "error" in msg:
                raise PageError(str(msg["error"]))
            result: dict[str, Any] = msg["result"]
            return result
