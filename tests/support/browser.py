"""Headless Debian Chromium driven over the DevTools protocol (aiohttp's websocket client, no extra package).

``--dump-dom`` only sees the top document; MLflow shows HTML artifacts in a sandboxed iframe, so the
tests evaluate JavaScript in every frame (execution context) of the page, out-of-process iframes included.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


def available() -> bool:
    return shutil.which("chromium") is not None


class _Session:
    def __init__(self, ws):
        self.ws, self.next_id, self.pending, self.contexts, self.children = ws, 0, {}, {}, set()

    async def call(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps(msg))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(msg["id"], None)

    async def pump(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw.data)
            if "id" in msg and msg["id"] in self.pending:
                self.pending.pop(msg["id"]).set_result(msg.get("result", msg.get("error", {})))
            elif msg.get("method") == "Runtime.executionContextCreated":
                ctx = msg["params"]["context"]
                self.contexts[(msg.get("sessionId"), ctx["id"])] = ctx
            elif msg.get("method") == "Runtime.executionContextDestroyed":
                self.contexts.pop((msg.get("sessionId"), msg["params"]["executionContextId"]), None)
            elif msg.get("method") == "Target.attachedToTarget":  # an out-of-process iframe
                child = msg["params"]["sessionId"]
                self.children.add(child)
                asyncio.ensure_future(self._enable(child))

    async def _enable(self, session: str) -> None:
        await self.call("Runtime.enable", session=session)
        await self.call("Runtime.runIfWaitingForDebugger", session=session)


async def _evaluate_until(port: int, url: str, expression: str, done: Callable[[list[Any]], bool],
                          timeout: float, screenshot: Path | None) -> list[Any]:
    import aiohttp

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=10) as resp:
        browser_ws = json.load(resp)["webSocketDebuggerUrl"]
    async with aiohttp.ClientSession() as http, http.ws_connect(browser_ws, max_msg_size=0) as ws:
        s = _Session(ws)
        pump = asyncio.ensure_future(s.pump())
        target = (await s.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        page = (await s.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        await s.call("Runtime.enable", session=page)
        await s.call("Page.enable", session=page)
        await s.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False,
                                              "flatten": True}, session=page)
        await s.call("Page.navigate", {"url": url}, session=page)
        deadline, values = time.time() + timeout, []
        while time.time() < deadline:
            await asyncio.sleep(1.0)
            values = []
            for (session, ctx_id) in list(s.contexts):
                try:  # a frame still loading (or going away) on a loaded machine may not answer: next round
                    res = await s.call("Runtime.evaluate", {"expression": expression, "contextId": ctx_id,
                                                            "returnByValue": True}, session=session, timeout=10)
                except asyncio.TimeoutError:
                    continue
                value = res.get("result", {}).get("value")
                if value is not None:
                    values.append(value)
            if done(values):
                break
        if screenshot is not None:
            import base64

            try:
                shot = await s.call("Page.captureScreenshot", {"format": "png"}, session=page)
                screenshot.write_bytes(base64.b64decode(shot.get("data", "")))
            except asyncio.TimeoutError:
                pass  # a picture is a bonus; the values above are the check
        pump.cancel()
        return values


def evaluate_in_frames(url: str, expression: str, done: Callable[[list[Any]], bool], *, timeout: float = 90,
                       screenshot: Path | None = None) -> list[Any]:
    """Open ``url`` in headless Chromium; every second evaluate ``expression`` in every frame (non-null
    results collected) until ``done(results)`` or ``timeout``; returns the last results."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen(["chromium", *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(_evaluate_until(port, url, expression, done, timeout, screenshot))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


CHART_TRIALS_JS = """(() => { const g = document.querySelectorAll('#chart g.trial');
  if (!g.length) return null;
  return Array.from(g).map(e => { const b = e.getBoundingClientRect();
    return {trial: e.dataset.trial, name: (e.querySelector('text') || {}).textContent, visible: b.width > 0 && b.height > 0}; }); })()"""
PAGE_TEXT_JS = "document.body ? document.body.innerText : null"
