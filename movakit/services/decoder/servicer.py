"""Decoder service: latents -> frames + waveform -> MP4 (H.264 + AAC 48 kHz), WAV and preview PNG in S3.

`DecodeHandler.run` reads video_latents / audio_latents (sha256 verified), runs `movakit.stages.decode.decode`,
muxes with `movakit.media.write_outputs` in a temporary folder and uploads jobs/<job>/output/video.mp4,
audio.wav and preview.png. It is the last stage: its follow-up is the job's `succeeded` event (a long video's
segment before the last: the next segment's EncodeTask, below).

A long video (docs/stack.md#long-videos): the decode of a segment before the last stores the decoded clip and its
last frame (a lossless PNG, movakit.long_video.frame_png) under jobs/<job>/seg-<k>/decode/, and its follow-up is
the next segment's EncodeTask with that frame as the first-frame image. The decode of the last segment reads the
earlier clips back (through their stage manifests, sha256 verified), joins them with movakit.long_video.join_segments
(the code `mova generate --duration` joins with) and writes the job's outputs as above.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from movakit.api.v1 import common_pb2, decoder_pb2, events_pb2
from movakit.long_video import frame_png, join_segments, segment_plan, segment_prompt
from movakit.media import write_outputs
from movakit.runtime.object_store import ObjectStore, job_key
from movakit.runtime.topics import TOPIC_DECODE, TOPIC_ENCODE
from movakit.runtime.tasks import TaskContext, make_event, read_manifest, stage_key
from movakit.request import from_proto
from movakit.stages.decode import DecodeResult, decode, decode_request

COMPONENTS = ("video_vae", "audio_vae")
_OUTPUTS = (("video", "video.mp4", "video/mp4"), ("audio", "audio.wav", "audio/wav"),
            ("preview", "preview.png", "image/png"))


class DecodeHandler:
    rpc_service = decoder_pb2.DESCRIPTOR.services_by_name["Decoder"]
    stage = common_pb2.STAGE_DECODE
    stage_name = "decode"
    inbox = TOPIC_DECODE
    next_topic = TOPIC_ENCODE  # only a long video's segment before the last has a follow-up task: the next segment's
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
        if not task.HasField("segment"):
            return decoder_pb2.DecodeOutput(artifacts=self._write(task.job_id, result))
        segment = task.segment
        if segment.index + 1 < segment.count:  # kept for the join; its last frame starts the next segment
            clip = {"frames": torch.from_numpy(result.frames.copy()), "audio": torch.from_numpy(result.audio.copy())}
            return decoder_pb2.DecodeOutput(
                clip=self.store.put_tensors(stage_key(task, "decode", "clip.safetensors"), clip),
                last_frame=self.store.put_bytes(stage_key(task, "decode", "last_frame.png"),
                                                frame_png(result.frames[-1]), "image/png"))
        plan = segment_plan(req)
        if plan is None or plan.count != segment.count:
            raise ValueError(f"segment.count: {segment.count}, but params.duration_s {req.duration_s:g} makes "
                             f"{plan.count if plan else 1} segments")
        clips = [self._earlier_clip(task, k, result) for k in range(segment.index)] + [result]
        return decoder_pb2.DecodeOutput(artifacts=self._write(task.job_id, join_segments(plan, clips)))

    def _earlier_clip(self, task: events_pb2.DecodeTask, k: int, last: DecodeResult) -> DecodeResult:
        """Segment k's decoded clip, as its decode stored it (the manifest names the file and its sha256)."""
        earlier = events_pb2.DecodeTask(job_id=task.job_id,
                                        segment=events_pb2.Segment(index=k, count=task.segment.count))
        output = read_manifest(self.store, earlier, self.stage_name, self.output_type)
        if output is None or not output.HasField("clip"):
            raise ValueError(f"segment {k} of job {task.job_id} has no decoded clip "
                             f"({stage_key(earlier, self.stage_name, 'result.pb')} is missing or unreadable)")
        tensors = self.store.get_tensors(output.clip)
        return DecodeResult(frames=tensors["frames"].numpy(), audio=tensors["audio"].numpy(),
                            sample_rate=last.sample_rate, fps=last.fps)

    def _write(self, job_id: str, result: DecodeResult) -> list[common_pb2.Artifact]:
        """The MP4, WAV and PNG of `result` under jobs/<job>/output/."""
        with tempfile.TemporaryDirectory(prefix="mova-decode-") as tmp:
            paths = write_outputs(result, Path(tmp) / "video.mp4")
            artifacts = []
            for (kind, name, content_type), path in zip(_OUTPUTS, paths, strict=True):
                ref = self.store.put_bytes(job_key(job_id, "output", name), Path(path).read_bytes(), content_type)
                artifacts.append(common_pb2.Artifact(kind=kind, ref=ref))
        return artifacts

    def outputs_valid(self, store: ObjectStore, output: decoder_pb2.DecodeOutput) -> bool:
        if output.HasField("clip"):
            return store.exists(output.clip) and store.exists(output.last_frame)
        return len(output.artifacts) == len(_OUTPUTS) and all(store.exists(a.ref) for a in output.artifacts)

    def follow_up(self, task, output, source):
        if output.HasField("clip"):  # the next segment of a long video, from this one's last frame
            segment = task.segment
            req = from_proto(task.params)
            following = events_pb2.Segment(index=segment.index + 1, count=segment.count,
                                           first_prompt=segment.first_prompt)
            return events_pb2.EncodeTask(job_id=task.job_id, params=task.params, image=output.last_frame,
                                         prompt=segment_prompt(req, following.index, segment.first_prompt),
                                         tenant=task.tenant, segment=following), []
        return None, [make_event(task.job_id, source, succeeded=events_pb2.Succeeded(artifacts=output.artifacts))]
