"""Decoder service: latents -> frames + waveform -> MP4 (H.264 + AAC 48 kHz), WAV and preview PNG in S3.

`DecodeHandler.run` reads video_latents / audio_latents (sha256 verified), runs `movakit.stages.decode.decode`,
muxes with `movakit.media.write_outputs` in a temporary folder and uploads jobs/<job>/output/video.mp4,
audio.wav and preview.png. It is the last stage: its follow-up is the job's `succeeded` event.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


from movakit.api.v1 import common_pb2, decoder_pb2, events_pb2
from movakit.media import write_outputs
from movakit.runtime.object_store import ObjectStore, job_key
from movakit.runtime.topics import TOPIC_DECODE
from movakit.runtime.tasks import TaskContext, make_event
from movakit.request import from_proto
from movakit.stages.decode import decode, decode_request

COMPONENTS = ("video_vae", "audio_vae")
_OUTPUTS = (("video", "video.mp4", "video/mp4"), ("audio", "audio.wav", "audio/wav"),
            ("preview", "preview.png", "image/png"))


class DecodeHandler:
    rpc_service = decoder_pb2.DESCRIPTOR.services_by_name["Decoder"]
    stage = common_pb2.STAGE_DECODE
    stage_name = "decode"
    inbox = TOPIC_DECODE
    next_topic = None
    task_type = events_pb2.DecodeTask
    output_type = decoder_pb2.DecodeOutput

    def __init__(self, models, store: ObjectStore) -> None:
        self.models = models
        self.store = store

    def run(self, task: events_pb2.DecodeTask, ctx: TaskContext) -> decoder_pb2.DecodeOutput:
        if not task.job_id:
            raise ValueError("job_id: must not be empty")
        req = from_proto(task.params).require_resolved()
        video = self.store.get_tensors(task.video_latents)["video_latents"]
        audio = self.store.get_tensors(task.audio_latents)["audio_latents"]
        result = decode(self.models, decode_request(req, video, audio))
        ctx.check_cancel()
        with tempfile.TemporaryDirectory(prefix="mova-decode-") as tmp:
            paths = write_outputs(result, Path(tmp) / "video.mp4")
            artifacts = []
            for (kind, name, content_type), path in zip(_OUTPUTS, paths, strict=True):
                ref = self.store.put_bytes(job_key(task.job_id, "output", name), Path(path).read_bytes(), content_type)
                artifacts.append(common_pb2.Artifact(kind=kind, ref=ref))
        return decoder_pb2.DecodeOutput(artifacts=artifacts)

    def outputs_valid(self, store: ObjectStore, output: decoder_pb2.DecodeOutput) -> bool:
        return len(output.artifacts) == len(_OUTPUTS) and all(store.exists(a.ref) for a in output.artifacts)

    def follow_up(self, task, output, source):
        return None, [make_event(task.job_id, source, succeeded=events_pb2.Succeeded(artifacts=output.artifacts))]
