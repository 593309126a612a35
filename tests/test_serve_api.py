"""The HTTP API through the ASGI test client, on a tiny real bundle (real ONNX Runtime sessions)."""

from __future__ import annotations

import base64
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bundle_factory import tiny_bundle, tone, tone_wavs, write_wav  # noqa: F401 - fixtures
from serve_support import pixels, require_serve_extra, serving

require_serve_extra()

from s2i_runtime.audio import load_audio  # noqa: E402
from s2i_runtime.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_bundle):  # noqa: F811
    with serving(tiny_bundle) as client:
        yield client


@pytest.fixture(scope="module")
def expected(tiny_bundle):  # noqa: F811
    """The Python API's images for the same input and seed: the service must give the same pixels."""
    from s2i_runtime import Pipeline

    pipe = Pipeline.load(tiny_bundle, device="cpu", threads=1)
    yield lambda path, seed=0, k=1: [np.asarray(im) for im in pipe.generate([str(path)], seed=seed, num_images=k)[0]]
    pipe.close()


def post(client, body, params="", **headers):
    return client.post(f"/v1/images{params}", content=body, headers=headers)


def test_raw_wav_body_gives_the_python_apis_png(client, expected, tone_wavs):  # noqa: F811
    response = post(client, tone_wavs[1].read_bytes(), "?seed=3", **{"Content-Type": "audio/wav"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(response.content), expected(tone_wavs[1], seed=3)[0])
    stages = [part.split(";")[0] for part in response.headers["server-timing"].split(", ")]
    assert {"load_audio", "front_end", "encoder", "generator", "encode_png", "total"} <= set(stages)


def test_json_answer_has_k_images_and_timings(client, expected, tone_wavs):  # noqa: F811
    response = post(client, tone_wavs[2].read_bytes(), "?format=json&num_images=3&seed=5")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["num_images"] == 3 and answer["seed"] == 5 and answer["image_size"] == [16, 16]
    assert answer["input"] == {"name": "upload", "seconds": 2.0}
    assert {"load_audio", "front_end", "encoder", "generator", "encode_png", "total"} <= set(answer["timings_s"])
    want = expected(tone_wavs[2], seed=5, k=3)
    got = [pixels(base64.b64decode(png)) for png in answer["images"]]
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_accept_header_picks_json_and_png_with_k_images_is_a_grid(client, tone_wavs):  # noqa: F811
    body = tone_wavs[0].read_bytes()
    assert post(client, body, Accept="application/json").headers["content-type"] == "application/json"
    grid = post(client, body, "?num_images=3")
    assert grid.status_code == 200 and pixels(grid.content).shape == (16, 3 * 16 + 2 * 2, 3)


def test_multipart_upload_takes_the_file_part_and_names_errors_after_it(client, expected, tone_wavs):  # noqa: F811
    files = {"audio": ("my clip.wav", tone_wavs[3].read_bytes(), "audio/wav")}
    response = client.post("/v1/images?format=json", files=files, data={"note": "ignored"})
    assert response.status_code == 200, response.text
    assert response.json()["input"]["name"] == "my clip.wav"
    assert np.array_equal(pixels(base64.b64decode(response.json()["images"][0])), expected(tone_wavs[3])[0])

    bad = client.post("/v1/images", files={"recording": ("../../etc/x.wav", b"not audio", "audio/wav")})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("x.wav: ")
    # httpx sends form fields as multipart only next to a file; an empty file named "" is a part without one
    no_file = client.post("/v1/images", data={"note": "text"}, files={"other": (None, b"x")})
    assert no_file.status_code == 400 and "no file part" in no_file.json()["error"]


def _runtime_message(data: bytes, max_seconds: float) -> str:
    try:
        load_audio(data, max_seconds=max_seconds, name="upload")
    except InputError as exc:
        return str(exc)
    raise AssertionError("the runtime accepted it")


def _float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    payload = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(payload)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload)


def _bad_audio(tmp_path) -> dict[str, bytes]:
    good = write_wav(tmp_path / "good.wav", tone(0.5, 440.0)).read_bytes()
    return {
        "empty": b"",
        "text": b"hello, I am not a sound",
        "truncated": good[:60],
        "riff without wave": b"RIFF\x10\x00\x00\x00JUNKjunkjunk",
        "nan samples": _float_wav(np.array([0.1, np.nan, 0.2] * 400, np.float32)),
        "too long": write_wav(tmp_path / "long.wav", tone(31.0, 300.0)).read_bytes(),
        "zero rate": good[:24] + b"\x00\x00\x00\x00" + good[28:],
    }


def test_bad_audio_is_400_with_the_runtimes_one_line_message(client, tmp_path):
    for case, data in _bad_audio(tmp_path).items():
        response = post(client, data)
        assert response.status_code == 400, (case, response.status_code, response.text)
        assert response.json() == {"error": _runtime_message(data, client.service.max_seconds)}, case
        assert "\n" not in response.json()["error"]


@pytest.mark.parametrize("params, message", [
    ("?seed=-1", "seed must be between"),
    ("?seed=abc", "seed must be an integer"),
    ("?num_images=0", "num_images must be between 1 and 8"),
    ("?num_images=9", "num_images must be between 1 and 8"),
    ("?format=gif", "format must be json or png"),
])
def test_bad_parameters_are_400(client, tone_wavs, params, message):  # noqa: F811
    response = post(client, tone_wavs[0].read_bytes(), params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_concurrent_clients_share_model_batches_and_get_their_own_pixels(client, expected, tone_wavs):  # noqa: F811
    jobs = [(tone_wavs[i % len(tone_wavs)], i) for i in range(16)]

    def one(job):
        path, seed = job
        return post(client, path.read_bytes(), f"?seed={seed}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(one, jobs))
    assert [r.status_code for r in responses] == [200] * 16
    for (path, seed), response in zip(jobs, responses, strict=True):
        assert np.array_equal(pixels(response.content), expected(path, seed=seed)[0])
    assert max(client.service.pipe.batcher.batch_sizes) > 1  # requests from different clients shared a batch


def test_upload_limit_is_413_whether_declared_or_streamed(tiny_bundle, tone_wavs):  # noqa: F811
    with serving(tiny_bundle, max_upload_bytes=16 * 1024) as client:
        big = tone_wavs[1].read_bytes()  # 32 KB
        declared = post(client, big)
        assert declared.status_code == 413 and "larger than the limit of 16384 bytes" in declared.json()["error"]
        streamed = client.post("/v1/images", content=(big[i : i + 4096] for i in range(0, len(big), 4096)))
        assert streamed.status_code == 413
        assert post(client, tone_wavs[0].read_bytes()).status_code == 200  # 9.6 KB still fits
        assert client.service.in_flight == 0


def test_full_queue_is_429_with_retry_after(tiny_bundle, tone_wavs):  # noqa: F811
    with serving(tiny_bundle, max_queue=1, retry_after_s=2) as client:
        held = client.service.admit()  # someone else's request occupies the only place
        refused = post(client, tone_wavs[0].read_bytes())
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert "busy" in refused.json()["error"]
        held.release()
        assert post(client, tone_wavs[0].read_bytes()).status_code == 200


def test_slow_request_is_504_and_its_place_is_freed_when_the_work_ends(tiny_bundle, tone_wavs):  # noqa: F811
    # The batcher waits 1.5 s for company, longer than the request may take.
    with serving(tiny_bundle, max_wait_ms=1500.0, timeout_s=0.3) as client:
        started = time.monotonic()
        response = post(client, tone_wavs[0].read_bytes())
        assert response.status_code == 504 and "no result within 0.3 s" in response.json()["error"]
        assert time.monotonic() - started < 1.4
        deadline = time.monotonic() + 10
        while client.service.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.service.in_flight == 0


def test_health_info_vocabulary_limits(client, tiny_bundle):  # noqa: F811
    import json

    from s2i_runtime.info import gather

    assert client.get("/healthz").json() == {"status": "ok", "in_flight": 0}
    assert client.get("/v1/info").json() == json.loads(json.dumps(gather(tiny_bundle)))  # = s2i-run info --json
    assert client.get("/v1/vocabulary").json() == {"dataset": "test-tones", "vocabulary": ["tone"]}
    limits = client.get("/v1/limits").json()
    assert limits["max_images"] == 8 and limits["max_audio_seconds"] == pytest.approx(30.0, abs=0.01)


def test_metrics_count_requests_errors_batches_and_latency(tiny_bundle, tone_wavs):  # noqa: F811
    with serving(tiny_bundle) as client:
        post(client, tone_wavs[0].read_bytes(), "?num_images=2")
        post(client, b"junk")
        client.get("/nowhere")
        text = client.get("/metrics").text
    lines = set(text.splitlines())
    assert 's2i_http_requests_total{method="POST",route="/v1/images",status="200"} 1' in lines
    assert 's2i_http_requests_total{method="POST",route="/v1/images",status="400"} 1' in lines
    assert 's2i_http_requests_total{method="GET",route="other",status="404"} 1' in lines
    assert 's2i_errors_total{kind="bad_input"} 1' in lines
    assert "s2i_images_total 2" in lines
    assert "s2i_request_duration_seconds_count 1" in lines
    assert 's2i_request_duration_seconds_bucket{le="+Inf"} 1' in lines
    # the warm-up batch and the request's own: two batches of one input
    assert 's2i_batch_size_bucket{le="1"} 2' in lines and "s2i_batch_size_count 2" in lines
    assert "s2i_requests_in_flight 0" in lines and "s2i_queue_limit 256" in lines
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_page_and_its_files_come_from_the_package_only(client):
    import re

    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    referenced = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text))
    assert {"/static/app.js", "/static/style.css"} <= referenced
    scripts = client.get("/static/app.js").text
    referenced |= set(re.findall(r'"(/static/[^"]+\.js)"', scripts))
    assert "/static/recorder-worklet.js" in referenced and "/static/wav.js" in referenced
    for path in referenced:
        response = client.get(path)
        assert response.status_code == 200, path
        assert not re.search(r"https?://", response.text), f"{path} loads something from elsewhere"


def test_a_slot_released_twice_frees_one_place(client):
    """Both the worker's done callback and an error path may release a slot; only the first counts."""
    first, second = client.service.admit(), client.service.admit()
    first.release()
    first.release()
    assert client.service.in_flight == 1
    second.release()
    assert client.service.in_flight == 0


def test_raw_body_and_multipart_file_give_the_same_image(client, tone_wavs):  # noqa: F811
    body = tone_wavs[4].read_bytes()
    raw = post(client, body, "?seed=9")
    form = client.post("/v1/images?seed=9", files={"audio": ("t.wav", body, "audio/wav")})
    assert np.array_equal(pixels(raw.content), pixels(form.content))
