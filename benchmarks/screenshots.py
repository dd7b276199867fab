"""Screenshots, in a real headless Chromium, of what a new user sees after the DAG ran.

Four PNGs, written to OUT_DIR (default benchmarks/screenshots/):

  mlflow_charts.png  MLflow UI, the report's runs in the chart view, one metric's chart
                     (--chart-metric, default val_maxboxacc_v2) opened full screen, so its legend
                     lists every run in its colour (tag mlflow.runColor).
  mlflow_runs.png    MLflow UI, the runs table with the headline test metrics as columns, sorted by
                     test_maxboxacc_v2, and the experiment's description (tag mlflow.note.content)
                     expanded at the top.
Both open the experiment's newest saved view (tag mlflow.sharedViewState.<id>, "Views" menu; --view
picks one by name), which the report stage writes (pipeline/report/experiment_page.py).
  dvc_plots.png      `dvc plots show`'s HTML page, once Vega has drawn every chart.
  report.png         report/<dataset>/report.md rendered to HTML with its figures, full page.

Run from the project root, after `dvc repro`:

    . .venv/bin/activate && python benchmarks/screenshots.py [OUT_DIR]

Prerequisites (Debian/Ubuntu; nothing is downloaded by Playwright itself):

    sudo apt-get install -y chromium                  # or pass --chromium /path/to/chrome
    . .venv/bin/activate && pip install -e ".[screenshots]"   # playwright, markdown
    # no `playwright install`: the script drives the system Chromium

`dvc plots show` writes a page that loads Vega from cdn.jsdelivr.net. Without internet access, put
the three scripts in a folder once (npm only talks to its registry) and pass it with --vega-dir
(default ~/.cache/wsol-screenshots/vega, used when it exists):

    mkdir -p ~/.cache/wsol-screenshots/vega && cd ~/.cache/wsol-screenshots/vega && \\
      npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 && \\
      for t in *.tgz; do n=${t%-*}; tar xzf $t --strip-components=2 package/build/$n.min.js; done

The MLflow UI is served by `mlflow server` started here, on a free 127.0.0.1 port, from the project
root (runs record their artifact folder relative to it), on a COPY of mlflow.db in a temporary
folder: a server may migrate its store's schema, and a click in the UI writes to it; the user's
store is only read. The server is stopped at the end. With --mlflow-url the shots are taken of a
running server instead. Screens are 1400x900 CSS pixels at scale 1 (the runs table 1600 wide, the
report 1200); a PNG over --max-kb is re-encoded with a 256-colour palette (when Pillow is
installed); the report's stays above 400 KB, its own figures being that large.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1400, "height": 900}
WIDTH = {"mlflow_runs": 1600, "report": 1200}  # room for five metric columns; a readable text column
HEADLINE_COLUMN = "test_maxboxacc_v2"  # the column the runs table must show before its shot
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
VEGA_CDN = "https://cdn.jsdelivr.net/npm/"
NO_ASSISTANT = (  # a fresh MLflow 3 UI opens its assistant panel over a third of the page
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
)


def fail(message: str) -> NoReturn:
    sys.exit(f"screenshots.py: {message}")


def find_chromium(given: str | None) -> str:
    found = given or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found or not Path(found).exists():
        fail(f"no Chromium found ({given or ', '.join(CHROMIUM_NAMES)}): install it with "
             "`sudo apt-get install -y chromium`, or pass --chromium /path/to/chrome")
    return found


def import_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        fail("the Python driver is missing: `. .venv/bin/activate && pip install -e \".[screenshots]\"` "
             "(no `playwright install` needed: the system Chromium is used)")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def mlflow_server(db: Path, workdir: Path) -> Iterator[str]:
    """`mlflow server` on a copy of ``db``, run from the project root; yields its URL."""
    if not db.exists():
        fail(f"{db} does not exist: run the DAG first (`dvc repro`)")
    copy = workdir / "mlflow.db"
    with (contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as source,
          contextlib.closing(sqlite3.connect(copy)) as target):
        source.backup(target)  # consistent even while a stage writes the store
    port = free_port()
    log = (workdir / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{copy}",
         "--default-artifact-root", "./mlartifacts", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                fail(f"mlflow server exited ({server.returncode}):\n{log_tail(workdir)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as health:
                if health.status == 200:
                    break
            if time.monotonic() > deadline:
                fail(f"mlflow server did not answer at {url} within 180 s:\n{log_tail(workdir)}")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def log_tail(workdir: Path) -> str:
    return "\n".join((workdir / "mlflow-server.log").read_text().splitlines()[-20:])


def experiment(url: str, name: str) -> dict:
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        return get_json(f"{url}/ajax-api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"]
    except urllib.error.HTTPError:
        fail(f"no experiment {name!r} in the store (--experiment)")


def saved_view(tags: list[dict], name: str | None) -> str | None:
    """The id of the saved view named ``name``, else of the newest; None when there is none."""
    prefix, views = "mlflow.sharedViewState.", []
    for tag in tags:
        if tag["key"].startswith(prefix):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                envelope = json.loads(tag["value"])
                views.append((envelope["createdAt"], envelope["name"], tag["key"][len(prefix):]))
    if name is not None:
        views = [view for view in views if view[1] == name]
        if not views:
            fail(f"the experiment has no saved view named {name!r} (--view)")
    return max(views)[2] if views else None


def shrink(path: Path, max_kb: int) -> None:
    if path.stat().st_size <= max_kb * 1024:
        return
    with contextlib.suppress(ImportError):
        from PIL import Image
        with Image.open(path) as image:
            image.convert("RGB").quantize(256).save(path, optimize=True)


def shot_mlflow_charts(context, url: str, experiment_id: str, view: str, metric: str, path: Path) -> None:
    page = context.new_page()
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
              f"&viewStateShareKey={view}&compareRunsMode=CHART")
    page.get_by_placeholder("Search metric charts").fill(metric)
    title = page.locator(f"h4[title='{metric}']")
    try:
        title.wait_for(timeout=60_000)
    except Exception:
        fail(f"the chart view shows no chart of {metric!r} (--chart-metric)")
    card = title.locator("xpath=ancestor::div[.//button[@data-component-id="
                         "'fullscreen_button_chartcard']][1]")
    card.locator("button[data-component-id='fullscreen_button_chartcard']").click()
    page.locator("[role=dialog] svg.main-svg").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # plotly's transition
    page.screenshot(path=path)
    page.close()


def shot_mlflow_runs(context, url: str, experiment_id: str, view: str, path: Path) -> None:
    page = context.new_page()
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view}")
    page.get_by_role("columnheader", name=HEADLINE_COLUMN).first.wait_for(timeout=60_000)
    expand = page.locator("button[data-component-id='mlflow.experiment.metadata_editor.expand_button']")
    if expand.count():  # the description shows its first line only until expanded
        expand.first.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=path)
    page.close()


def shot_dvc_plots(context, workdir: Path, vega_dir: Path | None, path: Path) -> None:
    out = workdir / "dvc-plots"
    dvc = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if dvc is None:
        fail("dvc is not installed (activate .venv)")
    done = subprocess.run([dvc, "plots", "show", "-o", str(out)], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        fail(f"`dvc plots show` failed:\n{done.stdout}{done.stderr}")
    page = context.new_page()
    if vega_dir is not None:  # https://cdn.jsdelivr.net/npm/vega-lite@5.2.0 -> vega-lite.min.js
        def local_vega(route):
            name = route.request.url[len(VEGA_CDN):].split("@")[0]
            script = vega_dir / f"{name}.min.js"
            if script.exists():
                route.fulfill(path=script, content_type="application/javascript")
            else:
                route.continue_()
        page.route(f"{VEGA_CDN}**", local_vega)
    page.goto((out / "index.html").as_uri())
    drawn = """() => { const boxes = [...document.querySelectorAll('body div[id]')];
        return boxes.length > 0 && boxes.every(b => b.querySelector('svg, canvas')); }"""
    try:
        page.wait_for_function(drawn, timeout=60_000)
    except Exception:
        fail("the Vega charts of `dvc plots show` were not drawn: the page loads Vega from "
             "cdn.jsdelivr.net; offline, fetch it with npm into --vega-dir (see this file's docstring)")
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    page.close()


REPORT_CSS = """
body { font: 15px/1.5 -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1150px; margin: 24px auto; padding: 0 24px; }
th, td { white-space: nowrap; }
h1, h2 { border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #d1d9e0; padding: 4px 10px; }
tr:nth-child(2n) { background: #f6f8fa; }
img { max-width: 100%; }
code { background: #eff1f3; padding: .1em .3em; border-radius: 4px; }
"""


def shot_report(context, report: Path, workdir: Path, path: Path) -> None:
    try:
        import markdown
    except ImportError:
        fail("the Python package markdown is missing: `. .venv/bin/activate && pip install -e \".[screenshots]\"`")
    if not report.exists():
        fail(f"{report} does not exist: run the DAG first (`dvc repro`)")
    body = markdown.markdown(report.read_text(), extensions=["tables", "fenced_code"])
    html = workdir / "report.html"
    html.write_text(f'<!doctype html><html><head><meta charset="utf-8"><base href="'
                    f'{report.parent.resolve().as_uri()}/"><style>{REPORT_CSS}</style></head>'
                    f"<body>{body}</body></html>")
    page = context.new_page()
    page.goto(html.as_uri(), wait_until="load")
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    page.screenshot(path=path, full_page=True)
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=ROOT / "benchmarks" / "screenshots")
    parser.add_argument("--dataset", help="default: `dataset` in params.yaml")
    parser.add_argument("--experiment", help="default: wsol-<dataset>")
    parser.add_argument("--report", type=Path, help="default: report/<dataset>/report.md")
    parser.add_argument("--chart-metric", default="val_maxboxacc_v2")
    parser.add_argument("--view", help="the saved view (by name) of the MLflow shots; default the newest")
    parser.add_argument("--mlflow-url", help="screenshot this running server instead of starting one")
    parser.add_argument("--chromium", help="the browser's executable; default the first of "
                                           + ", ".join(CHROMIUM_NAMES) + " on PATH")
    parser.add_argument("--vega-dir", type=Path,
                        default=Path.home() / ".cache" / "wsol-screenshots" / "vega")
    parser.add_argument("--max-kb", type=int, default=400)
    args = parser.parse_args()

    chromium = find_chromium(args.chromium)
    sync_playwright = import_playwright()
    if args.dataset is None:
        import yaml
        args.dataset = yaml.safe_load((ROOT / "params.yaml").read_text())["dataset"]
    name = args.experiment or f"wsol-{args.dataset}"
    report = args.report or ROOT / "report" / args.dataset / "report.md"
    vega_dir = args.vega_dir if args.vega_dir.is_dir() else None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    shots = {shot: args.out_dir / f"{shot}.png"
             for shot in ("mlflow_charts", "mlflow_runs", "dvc_plots", "report")}

    with tempfile.TemporaryDirectory(prefix="wsol-screenshots-") as tmp, sync_playwright() as pw:
        workdir = Path(tmp)
        browser = pw.chromium.launch(executable_path=chromium, headless=True)

        def fresh(shot: str):
            viewport = {**VIEWPORT, "width": WIDTH.get(shot, VIEWPORT["width"])}
            return browser.new_context(viewport=viewport, device_scale_factor=1)

        with (contextlib.nullcontext(args.mlflow_url.rstrip("/")) if args.mlflow_url
              else mlflow_server(ROOT / "mlflow.db", workdir)) as url:
            found = experiment(url, name)
            view = saved_view(found.get("tags", []), args.view)
            if view is None:
                fail(f"the experiment {name} has no saved view: the report stage writes it (`dvc repro`)")
            for shot in ("mlflow_charts", "mlflow_runs"):
                context = fresh(shot)  # a new user: nothing in localStorage but the closed assistant
                context.add_init_script(NO_ASSISTANT)
                if shot == "mlflow_charts":
                    shot_mlflow_charts(context, url, found["experiment_id"], view, args.chart_metric, shots[shot])
                else:
                    shot_mlflow_runs(context, url, found["experiment_id"], view, shots[shot])
                context.close()
        shot_dvc_plots(fresh("dvc_plots"), workdir, vega_dir, shots["dvc_plots"])
        shot_report(fresh("report"), report, workdir, shots["report"])
        browser.close()
    for path in shots.values():
        shrink(path, args.max_kb)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
