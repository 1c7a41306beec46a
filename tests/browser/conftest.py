"""Browser test harness: JupyterLab on 127.0.0.1 driven by Playwright in Debian's Chromium.

`lab` starts `jupyter lab` in a temporary root with a random port and token, settings
that keep prompts and windowing out of the way, and a fresh workspace; `page` is a
headless Chromium page; `Lab` helpers open a notebook, run it, find widgets by the CSS
classes lmlab's widgets set, click, read text and save screenshots.

`lab` serves at the root (`/`) unless a test asks for a base URL, as Binder and JupyterHub
serve JupyterLab (`/user/<name>/`): `@pytest.mark.parametrize("lab", [BASE_URL],
indirect=True, ids=["user-base-url"])`; `LabServer.url` and `notebook_url` then include it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _needs import need, unavailable

CHROMIUM = Path(os.environ.get("LMLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
BASE_URL = "/user/lmlab-test/"  # as JupyterHub and Binder serve a user's server

USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path():
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} not found: install Debian's chromium "
                   "(apt-get install chromium) or set LMLAB_CHROMIUM")
        unavailable(message)
    need("playwright", "pip install '.[dev]'")
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen, log: Path,
                 base_url: str = "/"):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log
        self.base_url = base_url  # "/" or e.g. "/user/lmlab-test/"
        self.url = f"http://127.0.0.1:{port}{base_url.rstrip('/')}"  # no trailing slash

    def notebook_url(self, name: str, frontend: str = "lab") -> str:
        """`lab`: JupyterLab 4; `notebook`: Notebook 7 (same server)."""
        if frontend == "notebook":
            return f"{self.url}/notebooks/{name}?token={self.token}"
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"


def _base_url(value: str | None) -> str:
    """`None` or "/" is the root; else "/user/x" -> "/user/x/"."""
    if not value or value == "/":
        return "/"
    return "/" + value.strip("/") + "/"


@pytest.fixture
def lab(tmp_path, chromium_path, data_dir, request):
    """A JupyterLab server on 127.0.0.1, its root a temporary folder; stopped and removed
    after the test. At the root URL, or under the base URL given by indirect
    parametrization (`@pytest.mark.parametrize("lab", [BASE_URL], indirect=True)`)."""
    base_url = _base_url(getattr(request, "param", None))
    root = tmp_path / "root"
    root.mkdir()
    settings = tmp_path / "settings"
    for name, value in USER_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
           f"--JupyterNotebookApp.user_settings_dir={settings}",
           f"--JupyterNotebookApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--JupyterNotebookApp.expose_app_in_browser=True"]
    if base_url != "/":
        cmd.append(f"--ServerApp.base_url={base_url}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "LMLAB_DATA_DIR": str(data_dir)}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=root)
    server = LabServer(root, port, token, proc, log, base_url)
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
    yield server
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def page(chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS,
                                    headless=True)
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


class Lab:
    """What a test does with a notebook open in JupyterLab."""

    def __init__(self, page, server: LabServer, test_name: str, frontend: str = "lab"):
        self.page, self.server, self.frontend = page, server, frontend
        self.shots = SCREENSHOTS / test_name
        self.shots.mkdir(parents=True, exist_ok=True)

    def open(self, name: str):
        self.page.goto(self.server.notebook_url(name, self.frontend))
        self.page.wait_for_function(
            "() => window.jupyterapp && jupyterapp.shell.currentWidget"
            " && jupyterapp.shell.currentWidget.sessionContext"
            " && jupyterapp.shell.currentWidget.sessionContext.session", timeout=90_000)
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = 90_000):
        self.page.wait_for_function(
            "() => { const w = jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k && k.status === 'idle' && k.connectionStatus === 'connected'; }",
            timeout=timeout)

    def run_all(self):
        self.page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")

    def wait_for(self, selector: str, timeout: float = 120_000):
        """Wait until `selector` is visible; fail at once if a cell shows an error."""
        errors = "[data-mime-type='application/vnd.jupyter.error']"
        try:
            self.page.wait_for_function(
                "([sel, err]) => document.querySelector(err) || [...document.querySelectorAll(sel)]"
                ".some(e => e.offsetParent !== null)", arg=[selector, errors], timeout=timeout)
        except Exception:
            shot = self.screenshot("timeout")
            raise AssertionError(f"{selector} did not appear; screenshot {shot}") from None
        if self.cell_errors():
            shot = self.screenshot("error")
            raise AssertionError(f"a cell failed (screenshot {shot}):\n"
                                 + "\n".join(e[-1500:] for e in self.cell_errors()))
        return self.page.locator(selector).first

    def click(self, selector: str):
        self.page.click(selector)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def fill(self, selector: str, value: str):
        box = self.page.locator(selector)
        box.fill(value)
        box.press("Enter")

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def element_screenshot(self, selector: str, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.locator(selector).first.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def cell_errors(self) -> list[str]:
        return self.page.locator("[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()


@pytest.fixture(params=["lab", "notebook"], ids=["jupyterlab4", "notebook7"])
def frontend(request):
    if request.param == "notebook":
        need("notebook", "Notebook 7: pip install '.[dev]'")
    return request.param


@pytest.fixture
def jlab(page, lab, request, frontend):
    return Lab(page, lab, request.node.name, frontend)


@pytest.fixture
def jlab_only(page, lab, request):
    """A `Lab` on JupyterLab alone (for what only JupyterLab has, e.g. its file browser)."""
    return Lab(page, lab, request.node.name, "lab")
