"""The documentation site: it builds strictly, renders in a browser, covers the public API,
and every tutorial runs (in its quick mode).

`.ci/run` installs what these need (`pip install -e ".[docs]"`, Debian's `chromium`); the
build and browser tests skip, saying why, only where those are missing.
"""

from __future__ import annotations

import ast
import functools
import http.server
import inspect
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import qtrain

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


def _env() -> dict:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg")
    env.setdefault("OMP_NUM_THREADS", "1")  # on a shared 2-core runner, 2 threads per process thrash (16 s vs 0.3 s)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


# --- every public name: documented, with an example, in the API reference -----------------------


def _attribute_docstring(name: str) -> str | None:
    """The docstring written under a module-level ``name = ...`` in qtrain's sources."""
    for path in sorted((ROOT / "src" / "qtrain").rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, after in zip(body, body[1:]):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                    return after.value.value
    return None


def _docstring(name: str) -> str | None:
    obj = getattr(qtrain, name)
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
        return inspect.getdoc(obj)
    return _attribute_docstring(name)  # data (e.g. __version__): its attribute docstring


@pytest.mark.parametrize("name", qtrain.__all__)
def test_every_public_name_has_a_docstring_with_an_example(name):
    doc = _docstring(name)
    assert doc, f"qtrain.{name} has no docstring"
    assert ">>>" in doc or "```" in doc, f"the docstring of qtrain.{name} has no example (>>> or a code block)"


def test_every_public_name_appears_in_the_api_reference():
    text = (DOCS / "api" / "qtrain.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: qtrain\.(\w+)\s*$", text, flags=re.M))
    missing = sorted(set(qtrain.__all__) - documented)
    assert not missing, f"add `::: qtrain.<name>` to docs/api/qtrain.md for: {missing}"


def test_every_tutorial_has_a_page_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for script in TUTORIALS:
        pages = [p for p in (DOCS / "tutorials").glob("*.md") if f'--8<-- "docs/tutorials/{script.name}"' in p.read_text()]
        assert pages, f"no docs/tutorials/*.md page includes {script.name}"
        assert f"tutorials/{pages[0].name}" in nav, f"tutorials/{pages[0].name} is not in the mkdocs.yml nav"


# --- the site builds with `mkdocs build --strict` -------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' (.ci/run does)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out


def test_mkdocs_build_strict_succeeds(site):
    assert (site / "index.html").is_file() and (site / "api" / "qtrain.html").is_file()
    # the Results and Benchmarks pages are REPRODUCTION.md and benchmarks/RESULTS.md, with their plots
    results = (site / "results.html").read_text(encoding="utf-8")
    for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "REPRODUCTION.md").read_text(encoding="utf-8")):
        assert f'src="{image}"' in results and (site / image).is_file(), image
    first = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
    assert first.split()[0] in (site / "benchmarks.html").read_text(encoding="utf-8")


def test_the_built_api_reference_has_every_public_name(site):
    html = (site / "api" / "qtrain.html").read_text(encoding="utf-8")
    missing = [n for n in qtrain.__all__ if f'id="qtrain.{n}"' not in html]
    assert not missing, f"not rendered in api/qtrain.html: {missing}"


# --- headless Chromium renders the pages with no console errors -----------------------------------


class _Chromium:
    """Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``
    (fd 3: commands in, fd 4: replies out, each message JSON ending in a NUL byte)."""

    def __init__(self, exe: str) -> None:
        self.profile = tempfile.TemporaryDirectory()
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def at_3_and_4() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}", "about:blank"],
            pass_fds=(3, 4, to_child, from_child), preexec_fn=at_3_and_4,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_child)
        os.close(from_child)
        self._buf, self._id, self.events = b"", 0, []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_for(self, event: str, session: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self.events):
            self.events.append(self._message(deadline))

    def visit(self, url: str) -> tuple[list[str], list[str]]:
        """Open ``url``; return (the visible h1/h2 headings, the console errors)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        time.sleep(1.0)  # let the theme's scripts (search index, navigation) run
        expr = ("JSON.stringify(Array.from(document.querySelectorAll('article h1, article h2'))"
                ".filter(h => h.offsetHeight > 0).map(h => h.innerText.replace('¶', '').trim()))")
        value = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
        errors = []
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            kind, p = e.get("method"), e.get("params", {})
            if kind == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif kind == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif kind == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        self.send("Target.closeTarget", {"targetId": target})
        return json.loads(value["result"]["value"]), errors

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001  (already gone)
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self.profile.cleanup()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_home_and_api_pages_render_in_headless_chromium_without_console_errors(site):
    exe = _chromium()
    if exe is None:
        pytest.skip("Debian's `chromium` is not installed (apt-get install chromium; .ci/run does)")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # served: file:// blocks the search worker
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _Chromium(exe)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        headings, errors = browser.visit(f"{base}/index.html")
        assert not errors, f"console errors on the home page: {errors}"
        assert headings[:1] == ["qtrain"], headings
        headings, errors = browser.visit(f"{base}/api/qtrain.html")
        assert not errors, f"console errors on the API page: {errors}"
        assert headings[0] == "qtrain", headings
        for name in ("qtrain.QuantumTrain", "qtrain.QTConfig", "qtrain.QNN"):
            assert any(h.split()[0] == name for h in headings), (name, headings)
    finally:
        browser.close()
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# --- every tutorial runs end to end in its quick mode -----------------------------------------


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_quick_mode_and_writes_its_figures(script, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script.name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    # the figures its page shows are the ones this run writes
    pages = [p for p in (DOCS / "tutorials").glob("*.md") if f'"docs/tutorials/{script.name}"' in p.read_text()]
    figures = {f for p in pages for f in re.findall(r"\]\(figures/([^)]+)\)", p.read_text())}
    missing = sorted(f for f in figures if not (tmp_path / f).is_file())
    assert not missing, f"{script.name} --quick did not write {missing}"
    assert time.perf_counter() - t0 < 240, f"{script.name} --quick took {time.perf_counter() - t0:.0f} s"
