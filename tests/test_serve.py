"""nmt-serve: the HTTP contract, its errors, dynamic batching under concurrency, fuzzing from the
OpenAPI schema, and the web page in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fastapi  # noqa: E402,F401  (the test extra installs the serve extra: missing is a failure, not a skip)
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from nmt import Translator  # noqa: E402
from nmt.serve import DynamicBatcher, ServeOptions, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZH = ["你好。", "我爱你。", "谢谢你。", "他是老师。", "今天很冷。", "我们走吧。", "这是我的书。", "她喜欢猫。"]
EN = ["Hello.", "I love you.", "Thank you.", "He is a teacher.", "It is cold today.", "Let's go.",
      "This is my book.", "She likes cats."]


@pytest.fixture(scope="module")
def zh_en_ckpt(tmp_path_factory) -> Path:
    """A tiny zh->en model that has learnt eight sentences by heart (trained here, ~20 s)."""
    from nmt.config import load_config
    from nmt.training.run import train

    data = tmp_path_factory.mktemp("zh_en_data")
    for split in ("train", "valid"):
        (data / f"{split}.zh").write_text("".join(z + "\n" for z in ZH * 4), encoding="utf-8")
        (data / f"{split}.en").write_text("".join(e + "\n" for e in EN * 4), encoding="utf-8")
    cfg = load_config(ROOT / "configs" / "toy_reverse.yaml", [
        "data.source=text", "data.src_lang=zh", "data.tgt_lang=en", f"data.train={data / 'train'}",
        f"data.valid={data / 'valid'}", "data.test=null", "tokenizer.type=unigram", "tokenizer.vocab_size=60",
        "trainer.max_steps=250", "trainer.val_check_interval=250", "trainer.val_bleu_sentences=0",
        "optim.warmup_steps=50", "decoding.max_len_a=2.0", "decoding.max_len_b=8"])
    return train(cfg, tmp_path_factory.mktemp("zh_en") / "run", test=False).run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def translator(zh_en_ckpt) -> Translator:
    return Translator.from_checkpoint(zh_en_ckpt)


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread of this process."""

    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(translator):
    with LiveServer(create_app(translator, ServeOptions(max_lines=8, max_chars=200, max_beam_size=8,
                                                        batch_wait_ms=100), name="tiny.ckpt")) as live:
        yield live


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/translate", json=body, timeout=60, **kwargs)


# --- the contract ---------------------------------------------------------------------------------

def test_translate_returns_what_the_python_api_returns(server, translator):
    response = post(server, {"text": ["谢谢你。", "", "她喜欢猫。"], "beam_size": 4, "n_best": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = translator.translate(["谢谢你。", "", "她喜欢猫。"], beam_size=4, n_best=2)
    assert [t["text"] for t in body["translations"]] == [e.text for e in expected] == ["Thank you.", "", "She likes cats."]
    for got, want in zip(body["translations"], expected):
        assert got["source"] == want.source
        assert [h["text"] for h in got["hypotheses"]] == [h.text for h in want.hypotheses]
        assert got["score"] == pytest.approx(want.hypotheses[0].score, abs=1e-4)
        assert got["attention"] is None and got["truncated"] is False
    assert len(body["translations"][0]["hypotheses"]) == 2
    timings = body["timings"]
    assert timings["total_ms"] >= timings["decode_ms"] > 0 and timings["queue_ms"] >= 0
    assert timings["batch_lines"] >= 3 and timings["batch_requests"] >= 1


def test_greedy_scores_are_null_and_attention_rows_sum_to_one(server):
    greedy = post(server, {"text": ["我爱你。"], "beam_size": 1}).json()["translations"][0]
    assert greedy["text"] == "I love you." and greedy["score"] is None and greedy["hypotheses"][0]["score"] is None
    t = post(server, {"text": ["我爱你。"], "beam_size": 3, "attention": True}).json()["translations"][0]
    assert t["text"] == "I love you." and t["score"] < 0
    att = t["attention"]
    assert att["source_tokens"][-1] == att["target_tokens"][-1] == "</s>"
    assert len(att["weights"]) == len(att["target_tokens"])
    assert all(len(row) == len(att["source_tokens"]) and math.isclose(sum(row), 1, abs_tol=1e-2)
               for row in att["weights"])


def test_documents_are_split_translated_and_joined_over_http_and_on_the_command_line(server, zh_en_ckpt, tmp_path):
    """The toy model knows its eight sentences one by one; a paragraph of them is an input it never
    saw, which document mode turns back into sentences it knows."""
    paragraph = "这是我的书。她喜欢猫。\n\n谢谢你。"
    body = post(server, {"text": [paragraph, ""], "document": True}).json()
    doc = body["translations"][0]
    assert doc["text"] == "This is my book. She likes cats.\n\nThank you."
    assert [s["source"] for s in doc["sentences"]] == ["这是我的书。", "她喜欢猫。", "谢谢你。"] and doc["split"] == 0
    assert body["translations"][1]["text"] == "" and body["translations"][1]["sentences"] == []
    refused = post(server, {"text": [paragraph], "document": True, "beam_size": 4, "n_best": 2})
    assert refused.status_code == 422 and "n_best must be 1" in refused.text

    src = tmp_path / "in.zh"
    src.write_text("这是我的书。她喜欢猫。\n\n谢谢你。我爱你。\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "nmt.cli.translate", "--checkpoint", str(zh_en_ckpt), "--src", "zh", "--tgt", "en",
           "-i", str(src)]
    out = subprocess.run(cmd + ["--document"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["This is my book. She likes cats.", "", "Thank you. I love you."]
    jsonl = subprocess.run(cmd + ["--document", "--output-format", "jsonl", "--document-max-tokens", "3"],
                           capture_output=True, text=True, timeout=120)
    assert jsonl.returncode == 0, jsonl.stderr
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3] and rows[0]["split"] == 2
    assert "line 1: 2 sentence(s) longer than 3 tokens" in jsonl.stderr.replace(f"{src}:", "line ")


def test_glossary_terms_and_constraints_over_http(server, translator):
    body = post(server, {"text": ["她喜欢猫。", "谢谢你。"], "glossary": {"猫": "teacher"}}).json()
    cat, thanks = body["translations"]
    assert cat["constraints"] == ["teacher"] and cat["constraints_met"] is True and "teacher" in cat["text"]
    assert cat["text"] == translator.translate(["她喜欢猫。"], constraints=[["teacher"]])[0].text
    assert thanks["text"] == "Thank you." and thanks["constraints"] is None
    given = post(server, {"text": ["谢谢你。"], "constraints": [["cold"]]}).json()["translations"][0]
    assert "cold" in given["text"] and given["constraints_met"] is True
    long = post(server, {"text": ["谢谢你。", "你好。"], "constraints": [[], ["cold " * 20]]})
    assert long.status_code == 422 and "text[1]: its constraints need" in long.json()["detail"]
    for bad, words in (({"text": ["a", "b"], "constraints": [["x"]]}, "one list per text item"),
                       ({"text": ["a"], "constraints": [[" "]]}, "should match pattern"),
                       ({"text": ["a"], "glossary": {"猫": ""}}, "at least 1 character"),
                       ({"text": ["a"], "document": True, "constraints": [["x"]]}, "give the terms as a glossary"),
                       ({"text": ["a"], "sampling": True, "constraints": [["cold"]]}, "need beam search")):
        response = post(server, bad)
        assert response.status_code == 422 and words in response.text, (bad, response.text)


def test_health_page_and_schema(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and (health["src_lang"], health["tgt_lang"]) == ("zh", "en")
    assert health["model"] == "tiny.ckpt" and health["engine"] == "torch" and health["max_lines"] == 8
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="translate"' in page.text and 'id="source"' in page.text
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert set(schema["paths"]) == {"/translate", "/health"}
    assert {"413", "422"} <= set(schema["paths"]["/translate"]["post"]["responses"])


# --- errors: clear, 4xx, and the server stays up --------------------------------------------------

@pytest.mark.parametrize("body, status, words", [
    ({"text": ["你好。"] * 9}, 413, "at most 8"),
    ({"text": ["你" * 201]}, 413, "at most 200"),
    ({"text": "你好。"}, 422, "list"),
    ({"text": []}, 422, "at least 1"),
    ({"text": [1, 2]}, 422, "string"),
    ({"text": ["你好。"], "beam_size": 0}, 422, "greater than or equal"),
    ({"text": ["你好。"], "beam_size": 9}, 422, "less than or equal to 8"),
    ({"text": ["你好。"], "beam_size": 2, "n_best": 3}, 422, "cannot exceed"),
    ({"text": ["你好。"], "checkpoint": "/etc/passwd"}, 422, "extra"),
    ({"text": ["你好。"], "src_lang": "de"}, 422, "'zh'"),
    ({"text": ["你好。"], "tgt_lang": "fr"}, 422, "'en'"),
    ({"text": ["你好。"], "alpha": -1}, 422, "greater than or equal"),
])
def test_bad_requests_get_clear_4xx_errors(server, body, status, words):
    response = post(server, body)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()["detail"])


def test_malformed_json_and_lone_surrogates_are_422(server):
    for raw in (b"{not json", b'{"text": ["\\ud800"]}', b"\xff\xfe", b""):
        response = httpx.post(f"{server.url}/translate", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
    assert post(server, {"text": ["你好。"]}).json()["translations"][0]["text"] == "Hello."  # still serving


# --- dynamic batching -----------------------------------------------------------------------------

def test_the_batcher_groups_equal_options_in_arrival_order_and_splits_results():
    """A fake decoder records its batches: with everything queued at once, jobs of the same options
    share a batch (up to max_lines), others wait for a batch of their own, and every caller gets
    exactly its own lines back."""
    calls = []

    def decode(texts, key, constraints):
        calls.append((key, list(texts)))
        return [f"{key}:{t}" for t in texts]

    async def scenario():
        batcher = DynamicBatcher(decode, wait_ms=50, max_lines=5)
        jobs = [(["a", "b"], 1), (["c"], 2), (["d", "e"], 1), (["f"], 1), (["g"], 2), (["h"], 1)]
        tasks = [asyncio.create_task(batcher.submit(texts, key)) for texts, key in jobs]
        await asyncio.sleep(0)  # all six are queued before the batcher starts
        batcher.start()
        results = await asyncio.gather(*tasks)
        await batcher.stop()
        return jobs, results, batcher

    jobs, results, batcher = asyncio.run(scenario())
    for (texts, key), (translations, timings) in zip(jobs, results):
        assert translations == [f"{key}:{t}" for t in texts]
    # key 1 has 6 lines in all and max_lines is 5: a, b, d, e, f first; then c, g; then h
    assert calls == [(1, ["a", "b", "d", "e", "f"]), (2, ["c", "g"]), (1, ["h"])]
    assert results[0][1]["batch_requests"] == 3 and results[0][1]["batch_lines"] == 5
    assert (batcher.batches, batcher.lines) == (3, 8)


def test_without_batching_every_request_is_decoded_alone():
    calls = []

    async def scenario():
        batcher = DynamicBatcher(lambda texts, key, constraints: calls.append(texts) or texts, wait_ms=50, max_lines=64,
                                 enabled=False)
        batcher.start()
        out = await asyncio.gather(*(batcher.submit([str(i)], 0) for i in range(5)))
        await batcher.stop()
        return out

    assert [r[0] for r in asyncio.run(scenario())] == [[str(i)] for i in range(5)]
    assert calls == [[str(i)] for i in range(5)]


def test_a_failing_batch_fails_only_its_callers():
    async def scenario():
        def decode(texts, key, constraints):
            if "bad" in texts:
                raise RuntimeError("decoder broke")
            return texts

        batcher = DynamicBatcher(decode, wait_ms=0, max_lines=64, enabled=False)
        batcher.start()
        bad = await asyncio.gather(batcher.submit(["bad"], 0), return_exceptions=True)
        good = await batcher.submit(["fine"], 0)
        await batcher.stop()
        return bad, good

    bad, good = asyncio.run(scenario())
    assert isinstance(bad[0], RuntimeError) and good[0] == ["fine"]


def test_many_simultaneous_requests_each_get_their_own_translations(server, translator):
    """40 clients at once, each with a different mix of the sentences: every response is the
    Python API's translation of that request's lines, in order, and requests shared batches."""
    before = httpx.get(f"{server.url}/health").json()["batches"]
    requests = [[ZH[(i + j) % 8] for j in range(1 + i % 3)] for i in range(40)]
    barrier = threading.Barrier(len(requests))

    def client(lines):
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            return http.post(f"{server.url}/translate", json={"text": lines, "beam_size": 2})

    with ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(client, requests))
    expected = {z: t.text for z, t in zip(ZH, translator.translate(ZH, beam_size=2))}
    assert expected == dict(zip(ZH, EN))
    for lines, response in zip(requests, responses):
        assert response.status_code == 200, response.text
        assert [t["text"] for t in response.json()["translations"]] == [expected[z] for z in lines]
    batches = httpx.get(f"{server.url}/health").json()["batches"] - before
    assert batches < len(requests)  # with a 100 ms gathering window, requests shared batches
    assert max(r.json()["timings"]["batch_requests"] for r in responses) > 1


# --- fuzzing from the OpenAPI schema --------------------------------------------------------------

# What a body valid by the schema may still be refused for (rules across fields the schema cannot state)
TERMS_422 = ("cannot exceed", "one list per text item", "its constraints need", "the target vocabulary lacks",
             "need beam search", "give the terms as a glossary", "a source term must be non-empty",
             "one translation per document", "package: pip install")

def test_fuzzing_the_http_api_from_its_schema_finds_no_server_error(server):
    """schemathesis generates requests from the OpenAPI schema: bodies that follow it (positive) and
    bodies that break it (negative: wrong types, missing or extra fields, out-of-range numbers).
    No response may be a 5xx, and a body that follows the schema must not be refused with 422."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    seen: dict[tuple[str, str], list[int]] = {}

    def fuzz(operation, mode) -> None:
        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            response = case.call(timeout=60)
            seen.setdefault((operation.label, mode.value), []).append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])
            if mode is GenerationMode.POSITIVE and operation.label == "POST /translate":
                # valid by the schema: only the size limits (413), n_best > beam_size (or > 1 in
                # document mode), a missing splitter package and terms that do not fit their sentence
                # (what the schema cannot say) may refuse it
                assert response.status_code in (200, 413) or any(words in response.text for words in TERMS_422), \
                    response.text

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz(operation, GenerationMode.POSITIVE)
        if operation.method.upper() == "POST":  # GET /health takes no input that could be invalid
            fuzz(operation, GenerationMode.NEGATIVE)
    assert {("POST /translate", "positive"), ("POST /translate", "negative"), ("GET /health", "positive")} <= set(seen)
    codes = {c for statuses in seen.values() for c in statuses}
    assert 200 in codes and 422 in codes and max(codes) < 500


# --- the command line ---------------------------------------------------------------------------

def test_nmt_serve_starts_serves_and_refuses_bad_flags(zh_en_ckpt, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nmt.cli.serve", "--checkpoint", str(zh_en_ckpt), "--port", str(port),
                             "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                body = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": ["今天很冷。"]}).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.2)
        assert body["translations"][0]["text"] == "It is cold today."
        taken = subprocess.run([sys.executable, "-m", "nmt.cli.serve", "--checkpoint", str(zh_en_ckpt), "--port",
                                str(port)], capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and "Traceback" not in taken.stderr
        assert f"nmt-serve: error: cannot listen on 127.0.0.1:{port}" in taken.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    bad = subprocess.run([sys.executable, "-m", "nmt.cli.serve", "--checkpoint", str(tmp_path / "bad.ckpt"), "--port",
                          "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "bad.ckpt" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# --- the page in a real browser -----------------------------------------------------------------

def test_the_page_translates_in_headless_chromium(server):
    """Type Chinese, click Translate, see English and the attention heatmap (Debian's chromium and
    chromium-driver, driven by Selenium)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"{server.url}/")
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "pair").text == "zh → en")
        browser.find_element(By.ID, "source").send_keys("这是我的书。\n她喜欢猫。")
        browser.find_element(By.ID, "translate").click()
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "output").text.strip())
        assert browser.find_element(By.ID, "output").text.splitlines() == ["This is my book.", "She likes cats."]
        tables = browser.find_elements(By.CSS_SELECTOR, "#heatmaps table.heatmap")
        assert len(tables) == 2
        header = [th.text for th in tables[0].find_elements(By.CSS_SELECTOR, "thead th")][1:]
        assert header[-1] == "</s>" and "".join(header[:-1]).replace("▁", "") == "这是我的书。"
        browser.find_element(By.ID, "document").click()  # the paragraph box
        browser.find_element(By.ID, "source").clear()
        browser.find_element(By.ID, "source").send_keys("这是我的书。她喜欢猫。\n\n谢谢你。")
        browser.find_element(By.ID, "translate").click()
        WebDriverWait(browser, 60).until(lambda b: "Thank" in b.find_element(By.ID, "output").text)
        assert browser.find_element(By.ID, "output").text.splitlines() == \
            ["This is my book. She likes cats.", "", "Thank you."]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmaps table.heatmap")) == 3  # one per sentence
        browser.find_element(By.ID, "document").click()  # back to lines, now with a glossary term
        browser.find_element(By.ID, "source").clear()
        browser.find_element(By.ID, "source").send_keys("她喜欢猫。")
        browser.find_element(By.CSS_SELECTOR, "details summary").click()
        browser.find_element(By.ID, "glossary").send_keys("猫 = teacher")
        browser.find_element(By.ID, "translate").click()
        WebDriverWait(browser, 60).until(lambda b: "teacher" in b.find_element(By.ID, "output").text)
        browser.find_element(By.ID, "glossary").clear()
        browser.find_element(By.ID, "source").clear()
        browser.find_element(By.ID, "translate").click()
        assert "Type a sentence" in browser.find_element(By.ID, "status").text
    finally:
        browser.quit()
