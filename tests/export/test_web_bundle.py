"""The web bundle (``export/target=web``): written, read back exactly, and run in headless Chromium.

The page's top-10 is compared with the Python :class:`Recommender` built over the web bundle's own parts:
the same encoder bytes and the same decoded (float16 or int8) item vectors, so both rank the same numbers and
the same order is expected. The one allowance is a tie: onnxruntime's WebAssembly and native int8 kernels may
round a query differently (seen: identical queries on the tiny runs, max abs diff 0.02 on an ML-1M SASRec),
so two items may trade places only when their scores under Python's query differ by at most twice the largest
score difference between the page and Python on that request (plus ``TIE``). The browser tests skip, with
the reason, where chromium, chromedriver, selenium or the vendored onnxruntime-web
(``python scripts/build_web.py``) is missing.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from rectorch.export.web import (
    RUNTIME_FILES,
    RUNTIME_RECORD,
    TargetSettings,
    WebBundle,
    quantize_vectors,
    read_web_bundle,
    runtime_files,
    write_web_bundle,
)
from rectorch.runs import load_run
from rectorch.serving import BundleError, Recommender, RecommendSettings
from rectorch.serving.bundle import flat_index, write_bundle
from tests.export.conftest import compose_config
from tests.export.test_export import export_cli
from tests.serving.conftest import build_bundle

TIE = 1e-5
K = 10
SHOWN = (  # until the history list shows args[0] items
    "(async () => { while (document.querySelectorAll('#history li').length < args[0])"
    " await new Promise(r => setTimeout(r, 20)); })()"
)
SCRIPT_RAN = (  # up to 10 s for the page's module script to define window.rectorch
    "(async () => { for (let i = 0; i < 500 && !window.rectorch; i++) await new Promise(r => setTimeout(r, 20));"
    " return [Boolean(window.rectorch), document.readyState]; })()"
)


def fake_runtime(where: Path) -> Path:
    """A stand-in vendor directory: the runtime's file names with placeholder bytes and a matching record."""
    where.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in RUNTIME_FILES:
        (where / name).write_bytes(name.encode())
        files[name] = hashlib.sha256(name.encode()).hexdigest()
    record = {"package": "onnxruntime-web", "version": "0.0.0", "license": "MIT", "tarball_sha256": "0" * 64}
    (where / RUNTIME_RECORD).write_text(json.dumps({**record, "integrity": "none", "files": files}))
    return where


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_vectors_decode_to_what_was_stored(dtype: str) -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32) * 3
    vectors[7] = 0.0  # a zero row keeps scale 1
    files, decoded = quantize_vectors(vectors, dtype)
    step = np.abs(vectors).max(axis=1, keepdims=True) / 127 / 2 if dtype == "int8" else np.abs(vectors) / 1024
    assert (np.abs(decoded - vectors) <= step + 1e-7).all()
    assert sum(len(data) for data in files.values()) == 50 * 16 * (2 if dtype == "float16" else 1) + (
        0 if dtype == "float16" else 50 * 4
    )


def test_float16_overflow_is_refused() -> None:
    with pytest.raises(ValueError, match="overflow float16"):
        quantize_vectors(np.full((2, 2), 1e5, np.float32), "float16")


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_round_trip_of_a_torch_free_bundle(tmp_path: Path, dtype: str) -> None:
    bundle = build_bundle(tmp_path / "bundle")
    settings = TargetSettings(kind="web", vectors=dtype, runtime_dir=str(fake_runtime(tmp_path / "vendor")))
    web = read_web_bundle(write_web_bundle(bundle, tmp_path / "web", settings))
    server = Recommender.from_bundle(bundle)
    exact = server.index.vectors(np.arange(server.index.size))
    assert web.vectors.shape == exact.shape
    assert np.abs(web.vectors - exact).max() == pytest.approx(web.manifest["vectors"]["max_abs_error"])
    assert web.catalog.ids == server.catalog.ids
    assert (web.catalog.available == server.catalog.available).all()
    assert web.encoder == (bundle / server.manifest.encoders[server.manifest.precision]).read_bytes()
    assert web.manifest["runtime"]["version"] == "0.0.0"
    assert web.manifest["source"]["manifest_sha256"] == (bundle / "manifest.sha256").read_text()[:64]


def test_tampered_or_unvendored_bundles_are_refused(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "bundle")
    with pytest.raises(ValueError, match=r"build_web\.py"):
        write_web_bundle(bundle, tmp_path / "web", TargetSettings(kind="web", runtime_dir=str(tmp_path / "none")))
    vendor = fake_runtime(tmp_path / "vendor")
    web = write_web_bundle(bundle, tmp_path / "web", TargetSettings(kind="web", runtime_dir=str(vendor)))
    (web / "items.json").write_bytes((web / "items.json").read_bytes().replace(b'"i1"', b'"i9"', 1))
    with pytest.raises(BundleError, match=r"items\.json"):
        read_web_bundle(web)
    (vendor / "ort.wasm.min.js").write_bytes(b"changed")
    with pytest.raises(BundleError, match=r"ort\.wasm\.min\.js"):
        runtime_files(str(vendor))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle"):
        write_web_bundle(bundle, tmp_path / "other", TargetSettings(kind="web", runtime_dir=str(tmp_path / "vendor")))


def test_target_group_composes() -> None:
    from hydra.utils import instantiate

    default = instantiate(compose_config("export", []).export.target)
    web = instantiate(compose_config("export", ["export/target=web", "export.target.vectors=int8"]).export.target)
    assert (default.kind, web.kind, web.vectors) == ("server", "web", "int8")
    with pytest.raises(ValueError, match=r"export\.target\.vectors"):
        TargetSettings(kind="web", vectors="bf16")


# ---- in the browser ----


def browser_tools() -> tuple[str, str]:
    """Paths of chromium and chromedriver; skips (with the reason) where a tool or the runtime is missing."""
    chromium = os.environ.get("RECTORCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("RECTORCH_CHROMEDRIVER") or shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("headless Chromium needs Debian's chromium and chromium-driver (apt-get install chromium-driver)")
    pytest.importorskip("selenium", reason="the browser tests need selenium (pip install -e '.[dev]')")
    try:
        runtime_files(None)
    except ValueError as error:
        pytest.skip(str(error))
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium (Selenium) recording the performance log, i.e. every request a page makes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_tools()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument("--disable-background-networking")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def static_server(directory: Path, log: Path) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 (a free port) serving ``directory``; its request log goes to ``log``."""
    with log.open("w") as errors:
        server = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
            assert "port" in line, line
            yield f"http://127.0.0.1:{int(line.split('port ')[1].split()[0])}"
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)


def call(driver, expression: str, *args):
    """Await ``expression`` (JavaScript over ``args``) in the page; a rejection fails the test with its message."""
    script = (
        "const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
        f"Promise.resolve().then(() => {expression}).then(v => done({{ok: v}}), e => done({{error: String(e)}}));"
    )
    result = driver.execute_async_script(script, *args)
    assert "error" not in result, result["error"]
    return result["ok"]


def page_requests(driver) -> list[str]:
    """URLs the page requested since the last call (Chromium's performance log)."""
    messages = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]


def reference(web: WebBundle, where: Path) -> Recommender:
    """The Python recommender over the web bundle's own encoder and decoded vectors, ranking the whole catalog."""
    manifest = web.manifest
    precision = manifest["encoder"]["precision"]
    write_bundle(
        where,
        family=manifest["family"],
        encoders={precision: web.encoder},
        inputs=web.inputs,
        index=flat_index(web.vectors),
        catalog=web.catalog,
        metric=manifest["metric"],
        precision=precision,
    )
    return Recommender.from_bundle(where, settings=RecommendSettings(candidates=manifest["num_items"]))


def compare(driver, web: WebBundle, python: Recommender, histories: list[list[str]]) -> dict[str, float]:
    """Page vs Python top-10 for each history (only ties may swap, see above); returns agreement figures."""
    exact, query_diff = 0, 0.0
    vectors = web.vectors.astype(np.float64)
    for history in histories:
        page = call(driver, "window.rectorch.recommend(args[0], args[1])", history, K)
        expected = python.recommend(history, k=K)
        assert page["unknown"] == expected.unknown_items
        assert page["fallback"] == expected.fallback
        assert len(page["items"]) == len(expected.items) == len(set(page["items"]))
        if expected.fallback is None:
            rows, _ = python.catalog.rows(history)
            query = python.encoder.encode([rows + web.manifest["id_offset"]], [None])[0]
            query_diff = max(query_diff, float(np.abs(np.asarray(page["query"]) - query).max()))
            scores = dict(zip(python.catalog.ids, vectors @ query.astype(np.float64), strict=True))
            # how far the two runtimes' queries move these scores: the width of a tie for this request
            noise = max(abs(s - scores[item]) for item, s in zip(page["items"], page["scores"], strict=True))
            for position, (got, want) in enumerate(zip(page["items"], expected.items, strict=True)):
                gap = abs(scores[got] - scores[want])
                assert got == want or gap <= 2 * noise + TIE, f"history {history[-5:]}: at {position} {got} != {want}"
        else:
            assert page["items"] == expected.items
        exact += page["items"] == expected.items
    return {"exact": exact / len(histories), "max_query_diff": query_diff}


def latency(driver, histories: list[list[str]], repeats: int) -> dict[str, float]:
    """In-page milliseconds of one recommendation (performance.now() around encoding and ranking): the first
    call of the page, then ``repeats`` rounds over ``histories`` after one warm-up round."""
    timings = call(
        driver,
        "(async () => { const ms = []; for (let r = 0; r <= args[1]; r++) for (const h of args[0]) "
        "ms.push((await window.rectorch.recommend(h, 10)).ms); return ms; })()",
        histories,
        repeats,
    )
    warm = np.asarray(timings[len(histories) :])
    return {
        "first_ms": timings[0],
        "median_ms": float(np.median(warm)),
        "p95_ms": float(np.percentile(warm, 95)),
        "max_ms": float(warm.max()),
    }


def open_page(driver, url: str, web_dir: Path) -> dict:
    """Load the page served at ``url``; it must define ``window.rectorch`` and request only its bundle's files."""
    page_requests(driver)  # drop what earlier pages requested
    driver.get(f"{url}/index.html")
    waited = call(driver, SCRIPT_RAN)
    assert waited[0], f"the page's script did not run (document {waited[1]}): {driver.get_log('browser')}"
    info = call(driver, "window.rectorch.ready")
    requests = page_requests(driver)
    allowed = {f"{url}/{name}" for name in [*read_web_bundle(web_dir).manifest["files"], "manifest.json"]}
    allowed.add(f"{url}/manifest.sha256")
    outside = [u for u in requests if u not in allowed and not u.startswith("data:")]
    assert not outside, f"the page requested files outside its bundle: {outside}"
    return info


def served_paths(log: Path) -> list[str]:
    """Paths the static server answered (its request log lines: ``"GET /path HTTP/1.1" 200``)."""
    return [line.split('"')[1].split()[1] for line in log.read_text().splitlines() if '"GET ' in line]


def test_tiny_bundle_in_chromium(browser, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A torch-free fixed-length encoder with an unavailable item, int8 item vectors."""
    bundle = build_bundle(tmp_path / "bundle")
    web_dir = write_web_bundle(bundle, tmp_path / "web", TargetSettings(kind="web", vectors="int8"))
    web = read_web_bundle(web_dir)
    with static_server(web_dir, tmp_path / "server.log") as url:
        info = open_page(browser, url, web_dir)
        assert (info["numItems"], info["vectors"], info["precision"]) == (60, "int8", "fp32")
        rng = np.random.default_rng(0)
        histories = [[f"i{r}" for r in rng.choice(60, size=n, replace=False)] for n in (1, 2, 5, 9) for _ in range(3)]
        histories += [[], ["i4", "nope", "i6"], ["i5"]]  # empty: popularity; unknown ids; the unavailable item
        figures = compare(browser, web, reference(web, tmp_path / "reference"), histories)
        for history in histories:
            assert "i5" not in call(browser, "window.rectorch.recommend(args[0], 59)", history)["items"]
    files = set(web.manifest["files"]) | {"manifest.json", "manifest.sha256"}
    assert {path.lstrip("/") for path in served_paths(tmp_path / "server.log")} <= files
    with capsys.disabled():
        print(f"\nweb bundle (tiny, int8 vectors): {figures}")


@pytest.fixture(scope="module")
def sasrec_web(train_run: Callable[..., Path]) -> tuple[Path, Path]:
    """A tiny trained SASRec run and its web bundle, written through ``rectorch-export ... export/target=web``."""
    browser_tools()
    run_dir = train_run("sasrec")
    bundle = export_cli(run_dir, run_dir.parent / "web-bundle", "quality_users=100", "export/target=web")
    return run_dir, bundle / "web"


def test_sasrec_page_matches_python(
    browser, sasrec_web: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, web_dir = sasrec_web
    web = read_web_bundle(web_dir)
    assert web.manifest["encoder"]["precision"] == "int8" and web.manifest["vectors"]["dtype"] == "float16"
    run = load_run(run_dir)
    ids = run.catalog.item_ids
    histories = []
    for batch in run.datamodule().test_dataloader():
        histories += [[str(ids[m]) for m in row[row > 0].tolist()] for row in batch["query"]["history"]]
    histories = [*histories[:40], [], [str(ids[1]), "not-an-item"]]
    with static_server(web_dir, tmp_path / "server.log") as url:
        open_page(browser, url, web_dir)
        figures = compare(browser, web, reference(web, tmp_path / "reference"), histories)
        figures.update(latency(browser, histories[:10], 5))
        assert not [u for u in page_requests(browser) if not u.startswith(url)]
    assert set(served_paths(tmp_path / "server.log")) <= {f"/{name}" for name in web.manifest["files"]} | {
        "/manifest.json",
        "/manifest.sha256",
    }
    with capsys.disabled():
        print(f"\nweb bundle (SASRec, int8 encoder, float16 vectors): {figures}, bytes {web.manifest['bytes']}")


def test_history_persists_in_local_storage(browser, sasrec_web: tuple[Path, Path], tmp_path: Path) -> None:
    """Items added through the page's form survive a reload, and the page shows their recommendations."""
    from selenium.webdriver.common.by import By

    _, web_dir = sasrec_web
    ids = read_web_bundle(web_dir).catalog.ids
    with static_server(web_dir, tmp_path / "server.log") as url:
        open_page(browser, url, web_dir)
        call(browser, "window.rectorch.setHistory([])")
        for count, item in enumerate(ids[3:6], 1):
            browser.find_element(By.ID, "item").send_keys(item)
            browser.find_element(By.ID, "add-button").click()
            call(browser, SHOWN, count)
        browser.refresh()
        call(browser, "window.rectorch.ready")  # resolves once the stored history and its answer are shown
        assert call(browser, "window.rectorch.history()") == ids[3:6]
        assert [span.text for span in browser.find_elements(By.CSS_SELECTOR, "#history .item")] == ids[3:6]
        expected = call(browser, "window.rectorch.recommend(args[0], 10)", ids[3:6])["items"]
        listed = json.loads(browser.find_element(By.ID, "recommended").get_attribute("data-items"))
        assert listed == expected and not set(listed) & set(ids[3:6])
        call(browser, "window.rectorch.setHistory([])")


@pytest.fixture(scope="module")
def ml1m_sized(train_run: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web bundle of a SASRec shaped like the ML-1M recipe (d=64, 2 blocks, 200 positions) over a synthetic
    catalog a little larger than ML-1M's 3,416 items (3,632 appear of 3,800 generated); with a stand-in runtime
    where onnxruntime-web is not vendored (the size bar leaves the runtime out)."""
    shape = ["data.source.num_items=3800", "data.source.num_users=2000", "model.view.max_len=200"]
    run_dir = train_run("sasrec", "none", *shape)
    overrides = ["quality_users=100", "export/target=web"]
    try:
        runtime_files(None)
    except ValueError:
        overrides.append(f"export.target.runtime_dir={fake_runtime(tmp_path_factory.mktemp('vendor'))}")
    return export_cli(run_dir, run_dir.parent / "web-bundle", *overrides) / "web"


def test_ml1m_sized_web_bundle_is_under_2mb(ml1m_sized: Path, capsys: pytest.CaptureFixture) -> None:
    web = read_web_bundle(ml1m_sized)
    assert web.manifest["num_items"] >= 3416 and web.manifest["inputs"][0]["max_len"] == 200
    sizes = web.manifest["bytes"]
    total = sizes["model"] + sizes["page"] + len((ml1m_sized / "manifest.json").read_bytes())
    assert total <= 2_000_000, sizes
    assert web.manifest["vectors"]["top10_agreement"] >= 0.99
    with capsys.disabled():
        print(f"\nML-1M-sized web bundle: {total} bytes without the runtime ({sizes}), {web.manifest['vectors']}")


def test_ml1m_sized_latency_in_chromium(browser, ml1m_sized: Path, tmp_path: Path, capsys) -> None:
    """In-page milliseconds of one recommendation for 200-item histories (reported; CI timing is not asserted)."""
    ids = read_web_bundle(ml1m_sized).catalog.ids
    rng = np.random.default_rng(0)
    histories = [[ids[r] for r in rng.choice(len(ids), size=200, replace=False)] for _ in range(10)]
    with static_server(ml1m_sized, tmp_path / "server.log") as url:
        open_page(browser, url, ml1m_sized)
        figures = latency(browser, histories, 5)
    with capsys.disabled():
        print(f"\nML-1M-sized web bundle in headless Chromium, 200-item histories: {figures}")
