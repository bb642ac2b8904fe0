"""The prompt-enhancer service draws a text-only job's first frame from a configured OpenAI-compatible image
endpoint (a real HTTP server on 127.0.0.1), stores it in S3 (real SeaweedFS) and hands it to the encoder."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from movakit.api.v1 import common_pb2, events_pb2
from movakit.enhance.settings import EnhancerSettings, FirstFrameSettings
from movakit.stages.enhance import build_enhancer
from movakit.services.prompt_enhancer.servicer import EnhanceHandler


@pytest.fixture
def image_endpoint():
    """Answers /v1/images/generations with `state["status"]` and a PNG; records each request body."""
    png = io.BytesIO()
    Image.new("RGB", (48, 32), (10, 200, 10)).save(png, format="PNG")
    state = {"status": 200, "png": png.getvalue(), "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            state["requests"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"data": [{"b64_json": base64.b64encode(state["png"]).decode()}]}
                              if state["status"] == 200 else {"error": "down"}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["base_url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def _handler(object_store, base_url: str) -> EnhanceHandler:
    settings = EnhancerSettings(first_frame=FirstFrameSettings(base_url=base_url, model="img", max_retries=0,
                                                               backoff_s=0.0))
    return EnhanceHandler(build_enhancer(settings), object_store, settings)


def _task(job_id: str) -> events_pb2.EnhanceTask:
    params = common_pb2.GenerationParams(prompt="A green lantern sways in the wind.", height=32, width=48,
                                         enhance_prompt=True)
    return events_pb2.EnhanceTask(job_id=job_id, params=params)


def test_text_only_job_gets_a_drawn_first_frame(object_store, image_endpoint):
    handler = _handler(object_store, image_endpoint["base_url"])
    task = _task("ff-job-1")
    output = handler.run(task, ctx=None)

    [request] = image_endpoint["requests"]
    assert request["size"] == "48x32" and request["prompt"] == output.prompt.split("\n\n")[0]
    assert output.first_frame.key == "jobs/ff-job-1/enhance/first_frame"
    assert object_store.get_bytes(output.first_frame) == image_endpoint["png"]
    assert handler.outputs_valid(object_store, output)

    next_task, _ = handler.follow_up(task, output, "prompt-enhancer")
    assert next_task.image == output.first_frame  # the encoder conditions on the drawn frame



def test_failing_endpoint_keeps_the_white_frame_and_says_why(object_store, image_endpoint):
    image_endpoint["status"] = 500
    handler = _handler(object_store, image_endpoint["base_url"])
    task = _task("ff-job-2")
    output = handler.run(task, ctx=None)
    assert not output.HasField("first_frame")
    assert any("using the default first frame" in note for note in output.notes), output.notes
    next_task, [event] = handler.follow_up(task, output, "prompt-enhancer")
    assert not next_task.HasField("image")
    assert list(event.prompt_enhanced.notes) == list(output.notes)


def test_a_job_with_its_own_image_never_calls_the_endpoint(object_store, image_endpoint):
    handler = _handler(object_store, image_endpoint["base_url"])
    task = _task("ff-job-3")
    task.image.CopyFrom(object_store.put_bytes("jobs/ff-job-3/input/image", image_endpoint["png"], "image/png"))
    output = handler.run(task, ctx=None)
    assert image_endpoint["requests"] == [] and not output.HasField("first_frame")
    next_task, _ = handler.follow_up(task, output, "prompt-enhancer")
    assert next_task.image == task.image


def test_a_local_text_to_image_folder_draws_the_first_frame(object_store, tmp_path):
    from movakit.enhance.first_frame import generate_first_frame
    from movakit.testing.tiny_text_to_image import write_tiny_text_to_image

    settings = EnhancerSettings(first_frame=FirstFrameSettings(model_path=str(write_tiny_text_to_image(tmp_path)),
                                                               steps=2))
    handler = EnhanceHandler(build_enhancer(settings), object_store, settings)
    task = _task("ff-job-local")
    task.params.seed = 21
    output = handler.run(task, ctx=None)
    assert output.first_frame.key == "jobs/ff-job-local/enhance/first_frame" and list(output.notes) == [], output.notes
    drawn = object_store.get_bytes(output.first_frame)
    assert Image.open(io.BytesIO(drawn)).size == (48, 32)
    assert drawn == generate_first_frame(settings, output.prompt, 32, 48, seed=21)  # the job's seed: redelivery-safe
    next_task, _ = handler.follow_up(task, output, "prompt-enhancer")
    assert next_task.image == output.first_frame
