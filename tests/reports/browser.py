"""Drive headless Chromium over the DevTools protocol on a pipe (no websocket, no extra package).

``--remote-debugging-pipe`` makes Chromium read CDP commands from fd 3 and write replies and
events to fd 4, as NUL-terminated JSON. :func:`inspect_page` opens one page and reports every
network request it made, every console message / exception, the values of some DOM queries,
and optionally saves a full-page screenshot::

    result = inspect_page("report.html", expressions={"ids": "..."}, screenshot="shot.png")
    assert not result.network_requests and not result.console_errors
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BrowserError", "PageResult", "find_chromium", "inspect_page"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe"]


_TRAMPOLINE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
               "os.execv(sys.argv[3], sys.argv[3:])")


class BrowserError(RuntimeError):
    """Chromium failed to start, answered an error, or timed out."""


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM``, then chromium / chromium-browser / chrome)."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    """What happened while a page loaded."""

    url: str
    network_requests: list[str] = field(default_factory=list)
    """URLs requested other than the page itself and ``data:`` URLs."""
    all_requests: list[str] = field(default_factory=list)
    """Every URL the page requested (the page itself included; data: URLs shortened)."""
    console_errors: list[str] = field(default_factory=list)
    """Console errors/warnings, uncaught exceptions and browser log errors (CSP, loads)."""
    dialogs: list[str] = field(default_factory=list)
    """alert/confirm/prompt dialogs the page opened (a sign of executed script)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Results of the ``expressions`` evaluated after load."""
    screenshot: Path | None = None


class _Pipe:
    """CDP over two pipes: commands to Chromium's fd 3, messages from its fd 4."""

    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen) -> None:
        self.write_fd, self.read_fd, self.proc = write_fd, read_fd, proc
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(read_fd, selectors.EVENT_READ)

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self.write_fd, data)
            data = data[n:]
        want = self.next_id
        deadline = time.monotonic() + timeout_s
        while True:
            reply = None
            for m in self._read(deadline):  # keep every event read with the reply
                if m.get("id") == want:
                    reply = m
                else:
                    self.events.append(m)
            if reply is not None:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_event(self, method: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events[i]
        while True:
            found = None
            for m in self._read(deadline):  # keep every event of the batch
                self.events.append(m)
                if m.get("method") == "Page.javascriptDialogOpening":
                    # A dialog blocks the page (and its load event) until answered.
                    self.send("Page.handleJavaScriptDialog", {"accept": False},
                              session=m.get("sessionId"))
                if m.get("method") == method and found is None:
                    found = m
            if found is not None:
                return found

    def drain(self, quiet_s: float = 0.3) -> None:
        """Collect events until none arrive for ``quiet_s``."""
        while True:
            try:
                got = self._read(time.monotonic() + quiet_s)
            except BrowserError:
                return
            self.events.extend(got)

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(timeout=left):
                raise BrowserError("timed out waiting for Chromium")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buf += chunk
        *msgs, self.buf = self.buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]


def _above_9(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (the original is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def _short(url: str) -> str:
    return url[:40] + "…" if url.startswith("data:") and len(url) > 40 else url


def inspect_page(path: str | Path, *, expressions: dict[str, str] | None = None,
                 screenshot: str | Path | None = None, width: int = 1280, height: int = 900,
                 timeout_s: float = 60.0, chromium: str | None = None) -> PageResult:
    """Load a local HTML file in headless Chromium and report what it did.

    Args:
        path: The HTML file.
        expressions: name -> JavaScript expression, evaluated after load (value by JSON).
        screenshot: Where to save a full-page PNG (None: no screenshot).
        width: Viewport width in CSS pixels.
        height: Viewport height.
        timeout_s: Limit for each step.
        chromium: Executable (default: :func:`find_chromium`).

    Raises:
        BrowserError: Chromium is missing, failed, or timed out.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError("chromium not found")
    url = Path(path).resolve().as_uri()
    result = PageResult(url=url)
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # The child's ends move to fds 3 and 4 below: keep them above 9 first so that neither
    # redirection overwrites the other's source.
    to_chrome_r, from_chrome_w = _above_9(to_chrome_r), _above_9(from_chrome_w)
    profile = tempfile.mkdtemp(prefix="report-chromium-")
    log = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115
    # Chromium expects the pipe on fds 3 and 4: a Python trampoline moves ours there and execs
    # it (dash cannot redirect fds above 9; preexec_fn is unsafe with threads).
    args = [sys.executable, "-c", _TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), exe,
            *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "about:blank"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            pass_fds=(to_chrome_r, from_chrome_w), start_new_session=True)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r, proc)
    try:
        try:
            _drive(pipe, url, result, expressions, screenshot, width, height, timeout_s)
        except BrowserError as exc:
            log.flush()
            tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-3000:]
            raise BrowserError(f"{exc}\n--- chromium log (tail) ---\n{tail}") from None
    finally:
        os.close(to_chrome_w)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        os.close(from_chrome_r)
        pipe.sel.close()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
    return result


def _drive(pipe: _Pipe, url: str, result: PageResult, expressions: dict[str, str] | None,
           screenshot: str | Path | None, width: int, height: int, timeout_s: float) -> None:
    """Open ``url`` in a new tab, evaluate, screenshot, collect the events into ``result``."""
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout_s=timeout_s)
    sess = pipe.send("Target.attachToTarget", {"targetId": target["targetId"],
                                               "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        pipe.send(f"{domain}.enable", session=sess)
    pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                     "deviceScaleFactor": 1,
                                                     "mobile": False}, session=sess)
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": url}, session=sess)
    pipe.wait_event("Page.loadEventFired", timeout_s)
    pipe.drain()
    for name, expr in (expressions or {}).items():
        r = pipe.send("Runtime.evaluate", {"expression": f"JSON.stringify({expr})",
                                           "returnByValue": True}, session=sess)
        if "exceptionDetails" in r:
            raise BrowserError(f"{name}: {r['exceptionDetails'].get('text')}")
        result.values[name] = json.loads(r["result"].get("value", "null"))
    if screenshot is not None:
        size = pipe.send("Page.getLayoutMetrics", session=sess)["cssContentSize"]
        shot = pipe.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width,
                     "height": min(int(size["height"]) + 1, 16000), "scale": 1}},
            session=sess, timeout_s=timeout_s)
        out = Path(screenshot)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        result.screenshot = out
    pipe.drain()
    for ev in pipe.events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Network.requestWillBeSent":
            req_url = params.get("request", {}).get("url", "")
            result.all_requests.append(_short(req_url))
            if req_url != url and not req_url.startswith("data:"):
                result.network_requests.append(req_url)
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                            "warning",
                                                                            "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in
                     params.get("args", [])]
            result.console_errors.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            det = params.get("exceptionDetails", {})
            result.console_errors.append(
                f"exception: {det.get('text')} {det.get('exception', {}).get('description')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") in ("error", "warning"):
                result.console_errors.append(
                    f"{entry.get('source')} {entry.get('level')}: {entry.get('text')} "
                    f"{entry.get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            result.dialogs.append(f"{params.get('type')}: {params.get('message')}")
    try:
        pipe.send("Browser.close", timeout_s=10)
    except BrowserError:
        pass
