"""The gateway's HTTP API (/v1/videos) against the real local stack (`mova stack up` on private ports, the tiny
random-weight checkpoint), with a real HTTP client; the downloaded MP4 is played by headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from PIL import Image

from movakit.api.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.media import probe
from movakit.runtime import stack
from movakit.runtime.auth import with_token
from movakit.runtime.localstack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {"prompt": "A cat plays a tiny piano. The audio has soft piano notes.", "size": "32x32", "seconds": 0.5,
        "fps": 8, "num_inference_steps": 2, "guidance_scale": 2.0}


@pytest.fixture(scope="module")
def http_stack(tmp_path_factory):
    ports = set()
    while len(ports) < 8:
        ports.add(free_port())
    kafka, s3, gateway, http, *stages = ports
    cfg = stack.StackConfig(state_dir=tmp_path_factory.mktemp("http-stack"), kafka_port=kafka, s3_port=s3,
                            gateway_port=gateway, http_port=http, stage_ports=tuple(stages), trainer=False)
    addresses = stack.up(cfg, log=lambda *_: None)
    token = (cfg.state_dir / stack.TOKEN_FILE).read_text().strip()
    channel = with_token(grpc.insecure_channel(addresses["gateway"]), token)
    session = requests.Session()  # the HTTP client sends the same bearer token, which the gateway passes on
    session.headers["Authorization"] = f"Bearer {token}"
    yield addresses["http"], gateway_pb2_grpc.JobServiceStub(channel), session
    session.close()
    channel.close()
    stack.down(cfg.state_dir)


def _follow(http: requests.Session, base: str, video_id: str, timeout_s: float = 150.0) -> list[dict]:
    """Every distinct video object GET returned until the job finished."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video = http.get(f"{base}/v1/videos/{video_id}", timeout=10).json()
        if not seen or video != seen[-1]:
            seen.append(video)
        if video["status"] in ("completed", "failed", "cancelled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {video_id} did not finish: {seen[-1]}")


def _play_in_chromium(url: str, folder: Path) -> dict:
    """Loads a page in `folder` with a <video> of `url` (relative to the page) in headless Chromium; returns what
    the page saw (events, readyState, currentTime, error)."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (scripts/install.sh installs it)"
    page = folder / "play.html"
    page.write_text(f"""<!doctype html><html><body><video id="v" muted playsinline src="{url}"></video>
<pre id="out">{{}}</pre><script>
const v = document.getElementById('v'), seen = [];
function report() {{ document.getElementById('out').textContent = JSON.stringify({{seen, readyState: v.readyState,
  currentTime: v.currentTime, duration: v.duration, error: v.error && v.error.code}}); }}
['loadeddata', 'playing', 'timeupdate', 'ended', 'error'].forEach(
  e => v.addEventListener(e, () => {{ seen.push(e); report(); }}));
v.play().catch(e => {{ seen.push('play failed: ' + e.name); report(); }});
</script></body></html>""")
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={folder / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    start = dom.index('<pre id="out">') + len('<pre id="out">')
    return json.loads(dom[start:dom.index("</pre>", start)])


def test_create_follow_download_and_play(http_stack, tmp_path):
    base, _, http = http_stack
    created = http.post(f"{base}/v1/videos", json={**TINY, "seed": 5}, timeout=30)
    assert created.status_code == 201, created.text
    video = created.json()
    assert (video["object"], video["status"], video["progress"]) == ("video", "queued", 0)
    assert (video["size"], video["seconds"], video["num_frames"], video["seed"]) == ("32x32", "0.5", 5, 5)

    history = _follow(http, base, video["id"])
    final = history[-1]
    assert final["status"] == "completed" and final["progress"] == 100 and final["error"] is None
    progress = [v["progress"] for v in history]
    assert progress == sorted(progress)
    assert final["step"] == final["total_steps"] == 2
    listed = http.get(f"{base}/v1/videos", params={"limit": 100}, timeout=10).json()
    assert listed["object"] == "list" and video["id"] in [v["id"] for v in listed["data"]]

    mp4 = http.get(f"{base}/v1/videos/{video['id']}/content", timeout=30)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    (tmp_path / "video.mp4").write_bytes(mp4.content)
    info = probe(tmp_path / "video.mp4")
    assert (info.video_codec, info.audio_codec, info.sample_rate, info.width, info.height) == \
        ("h264", "aac", 48000, 32, 32)
    thumbnail = http.get(f"{base}/v1/videos/{video['id']}/content", params={"variant": "thumbnail"}, timeout=30)
    assert Image.open(io.BytesIO(thumbnail.content)).size == (32, 32)

    played = _play_in_chromium("video.mp4", tmp_path)  # the downloaded MP4, as a page that fetched it would play it
    assert played["error"] is None and "playing" in played["seen"], played
    assert played["readyState"] >= 2 and played["currentTime"] > 0, played


def test_multipart_image_idempotency_and_cancel(http_stack):
    base, _, http = http_stack
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(png, format="PNG")
    form = {k: str(v) for k, v in TINY.items()} | {"num_inference_steps": "100"}  # long enough to cancel
    form |= {"duration_s": "1", "shots": ["The cat bows.", "The cat leaves."]}  # a long video: 2 clips of 0.5 s
    files = {"input_reference": ("first.png", png.getvalue(), "image/png")}
    headers = {"Idempotency-Key": f"http-{time.time_ns()}"}
    first = http.post(f"{base}/v1/videos", data=form, files=files, headers=headers, timeout=30)
    assert first.status_code == 400 and first.json()["error"]["param"] == "shots"  # 2 segments: 1 shot at most
    form["shots"] = form["shots"][:1]
    first = http.post(f"{base}/v1/videos", data=form, files=files, headers=headers, timeout=30)
    assert first.status_code == 201, first.text
    video = first.json()
    assert (video["duration_s"], video["shots"], video["segment_count"], video["total_steps"]) == \
        (1.0, ["The cat bows."], 2, 200)
    again = http.post(f"{base}/v1/videos", data=form, files=files, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]

    video_id = first.json()["id"]
    cancelled = http.delete(f"{base}/v1/videos/{video_id}", timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancel_requested"] is True
    assert _follow(http, base, video_id)[-1]["status"] == "cancelled"
    not_ready = http.get(f"{base}/v1/videos/{video_id}/content", timeout=10)
    assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "not_ready"
    twice = http.delete(f"{base}/v1/videos/{video_id}", timeout=10)
    assert twice.status_code == 409 and "already finished" in twice.json()["error"]["message"]


@pytest.mark.parametrize(("change", "param", "grpc_params"), [
    ({"guidance_scale": 50}, "guidance_scale", {"guidance_scale": 50}),
    ({"size": "32x30"}, "size", {"width": 32, "height": 30}),
    ({"num_inference_steps": 0.5}, "num_inference_steps", None),
    ({"seconds": 0.3}, "seconds", None),
    ({"seconds": 0.75}, "seconds", {"num_frames": 7}),
    ({"seed": -1}, "seed", None),
    ({"prompt": " "}, "prompt", {"prompt": " "}),
    ({"shots": ["a shot"]}, "shots", {"shots": ["a shot"]}),  # one clip: no segment for a shot
    ({"colour": "red"}, "colour", None),
])
def test_bad_input_is_400_naming_the_field(http_stack, change, param, grpc_params):
    base, stub, http = http_stack
    response = http.post(f"{base}/v1/videos", json={**TINY, **change}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    if grpc_params is not None:  # the same validation as the gRPC API: the very same message
        params = {"prompt": TINY["prompt"], "height": 32, "width": 32, "num_frames": 5, "fps": 8.0,
                  "num_inference_steps": 2, "guidance_scale": 2.0} | grpc_params
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Submit(gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(**params)), timeout=30)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rpc.value.details() == error["message"]


def test_unknown_ids_and_bad_queries(http_stack):
    base, _, http = http_stack
    anonymous = requests.get(f"{base}/v1/videos", timeout=10)  # no bearer token: the gRPC API refuses it
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated", anonymous.text
    wrong = requests.get(f"{base}/v1/videos", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    missing = http.get(f"{base}/v1/videos/nope", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["param"] is None
    assert http.delete(f"{base}/v1/videos/nope", timeout=10).status_code == 404
    for query, param in (({"limit": 0}, "limit"), ({"limit": "many"}, "limit"), ({"limit": 101}, "limit"),
                         ({"status": "done"}, "status"), ({"page_token": "x"}, "page_token")):
        response = http.get(f"{base}/v1/videos", params=query, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    text = http.post(f"{base}/v1/videos", data="prompt", headers={"content-type": "text/plain"}, timeout=10)
    assert text.status_code == 400 and text.json()["error"]["param"] == "body"
