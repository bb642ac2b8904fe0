"""`mova submit` and `mova jobs ...` against a real in-process gateway (real Tansu + SeaweedFS); the test plays
the stage workers by publishing their events."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from PIL import Image
from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2
from movakit.cli import main
from movakit.runtime import kafka as mkafka
from movakit.runtime.object_store import job_key
from movakit.runtime.topics import TOPIC_EVENTS

pytestmark = pytest.mark.integration

SMALL = ["--height", "32", "--width", "48", "--num-frames", "5", "--steps", "2"]


@pytest.fixture(autouse=True)
def alice(monkeypatch, tenant_token):
    """Every command here runs as tenant alice, whose token comes from $MOVA_TOKEN."""
    monkeypatch.setenv("MOVA_TOKEN", tenant_token("alice"))


def publish(producer, job_id: str, **kind) -> None:
    ts = Timestamp()
    ts.GetCurrentTime()
    mkafka.publish(producer, TOPIC_EVENTS, job_id, events_pb2.JobEvent(job_id=job_id, time=ts, source="test", **kind))


def test_submit_detach_then_watch_get_list(gateway, producer, object_store, capsys):
    assert main(["submit", "--prompt", "a cli job", "--gateway", gateway.address, "--detach", *SMALL]) == 0
    job_id = capsys.readouterr().out.strip()
    assert gateway.store.get(job_id) is not None

    ref = object_store.put_bytes(job_key(job_id, "output", "video.mp4"), b"mp4 bytes", "video/mp4")
    publish(producer, job_id, stage_started=events_pb2.StageStarted(stage=common_pb2.STAGE_DENOISE, worker="w"))
    publish(producer, job_id, denoise_step=events_pb2.DenoiseStep(step=1, total=2, eta_s=1.0))
    publish(producer, job_id, denoise_step=events_pb2.DenoiseStep(step=2, total=2, eta_s=0.0))
    publish(producer, job_id, succeeded=events_pb2.Succeeded(artifacts=[common_pb2.Artifact(kind="video", ref=ref)]))

    assert main(["jobs", "watch", job_id, "--gateway", gateway.address]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"video: http://{object_store.endpoint}/")
    assert "denoise: step 2/2" in captured.err and "succeeded: 1 artifacts" in captured.err

    assert main(["jobs", "get", job_id, "--gateway", gateway.address]) == 0
    shown = capsys.readouterr().out
    assert f"job       {job_id}" in shown and "state     succeeded" in shown and "32x48, 5 frames" in shown

    assert main(["jobs", "list", "--gateway", gateway.address, "--page-size", "1", "--all", "--state", "succeeded"]) == 0
    assert job_id in capsys.readouterr().out


def test_submit_wait_exits_nonzero_when_the_job_fails(gateway, producer, capsys):
    prompt = f"doomed {uuid.uuid4().hex}"

    def fail_it() -> None:  # a "worker" that fails the job as soon as it is queued
        for _ in range(200):
            for job in gateway.store.listing("alice", None, common_pb2.JOB_STATE_QUEUED, 100):
                if job.params.prompt == prompt:
                    publish(producer, job.job_id, failed=events_pb2.Failed(reason="decode failed: disk full"))
                    return
            time.sleep(0.05)

    worker = threading.Thread(target=fail_it)
    worker.start()
    code = main(["submit", "--prompt", prompt, "--gateway", gateway.address, "--wait", *SMALL])
    worker.join()
    assert code == 1
    assert "FAILED: decode failed: disk full" in capsys.readouterr().err


def test_cancel_and_bad_options(gateway, capsys):
    assert main(["submit", "--prompt", "to cancel", "--gateway", gateway.address, "--detach", "--seed", "7", *SMALL]) == 0
    job_id = capsys.readouterr().out.strip()
    assert gateway.store.get(job_id).params.seed == 7
    assert main(["jobs", "cancel", job_id, "--gateway", gateway.address]) == 0
    assert "cancelling (cancel requested)" in capsys.readouterr().out
    assert gateway.store.get(job_id).state == common_pb2.JOB_STATE_CANCELLING

    assert main(["submit", "--prompt", "x", "--gateway", gateway.address, "--num-frames", "6"]) == 2
    assert "INVALID_ARGUMENT: params.num_frames" in capsys.readouterr().err
    assert main(["jobs", "get", "no-such-job", "--gateway", gateway.address]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", "--prompt", "x", "--gateway", gateway.address, "--image", "/no/such.png"])
    assert exit_info.value.code == 2
    assert "--image: no such file" in capsys.readouterr().err


def test_submit_sends_every_option(tmp_path):
    from movakit.cli import build_parser
    from movakit.cli.jobs import build_request

    image = tmp_path / "frame.png"
    Image.new("RGB", (8, 8)).save(image)
    args = build_parser().parse_args([
        "submit", "--prompt", "p", "--image", str(image), "--negative-prompt", "n", "--height", "352", "--width", "640",
        "--num-frames", "9", "--fps", "12", "--steps", "3", "--guidance-scale", "4.5", "--seed", "0",
        "--enhance", "--lora", "style-a", "--lora-scale", "0.5", "--priority", "4", "--idempotency-key", "k1",
    ])
    request = build_request(args)
    expected = gateway_pb2.SubmitRequest(
        params=common_pb2.GenerationParams(
            prompt="p", negative_prompt="n", height=352, width=640, num_frames=9, fps=12, num_inference_steps=3,
            guidance_scale=4.5, seed=0, enhance_prompt=True, lora=common_pb2.LoraAdapter(name="style-a", scale=0.5),
            priority=4,
        ),
        image=image.read_bytes(), idempotency_key="k1",
    )
    assert request == expected
    assert request.params.HasField("seed")  # seed 0 is sent, not "unset"


def test_submit_and_generate_refuse_a_bad_option_with_the_same_words(tmp_path, capsys):
    gif = tmp_path / "frame.gif"
    Image.new("RGB", (8, 8)).save(gif)
    for argv in (["--steps", "500"], ["--prompt", "\u200b\u200b"], ["--image", str(gif)], ["--lora-scale", "1"]):
        said = []
        for command in (["submit", "--gateway", "127.0.0.1:1"], ["generate"]):
            with pytest.raises(SystemExit) as exit_info:
                main([*command, "--prompt", "p", *argv])
            assert exit_info.value.code == 2
            said.append(capsys.readouterr().err.strip().splitlines()[-1])
        assert said[0] == said[1] and said[0].startswith(f"mova: error: {argv[0]}: "), said


def test_a_rule_of_the_checkpoint_gets_the_same_reason_from_the_gateway_and_generate(gateway, capsys):
    assert main(["submit", "--prompt", "p", "--gateway", gateway.address, "--num-frames", "6"]) == 2
    from_gateway = capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "p", "--num-frames", "6"])
    from_generate = capsys.readouterr().err.strip().splitlines()[-1]
    reason = "6 is not 4k+1 (e.g. 5)"
    assert from_gateway == f"mova: error: INVALID_ARGUMENT: params.num_frames: {reason}"
    assert from_generate == f"mova: error: --num-frames: {reason}"
