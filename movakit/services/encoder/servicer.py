"""Encoder service: text contexts + first-frame conditioning for a job, stored under jobs/<job>/encode/.

`EncodeHandler` is the stage as the Kafka worker and the direct RPC run it: read the optional first-frame image
from S3 (sha256 verified), run `movakit.stages.encode.encode`, store context / negative_context / y as one
safetensors file each, and hand the refs to the denoiser. A long video's segment k is encoded the same way from
the task's prompt and image (the decoder of segment k - 1 set both), under jobs/<job>/seg-<k>/encode/.
"""

from __future__ import annotations

from movakit.api.v1 import common_pb2, encoder_pb2, events_pb2
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_DENOISE, TOPIC_ENCODE
from movakit.runtime.tasks import TaskContext, stage_key, with_segment
from movakit.request import from_proto
from movakit.stages.encode import encode, encode_request
from movakit.stages.first_frame import open_first_frame

COMPONENTS = ("text_encoder", "video_vae")


class EncodeHandler:
    rpc_service = encoder_pb2.DESCRIPTOR.services_by_name["Encoder"]
    stage = common_pb2.STAGE_ENCODE
    stage_name = "encode"
    inbox = TOPIC_ENCODE
    next_topic = TOPIC_DENOISE
    task_type = events_pb2.EncodeTask
    output_type = encoder_pb2.EncodeOutput

    def __init__(self, models, store: ObjectStore) -> None:
        self.models = models
        self.store = store

    def run(self, task: events_pb2.EncodeTask, ctx: TaskContext) -> encoder_pb2.EncodeOutput:
        if not task.job_id:
            raise ValueError("job_id: must not be empty")
        if not task.prompt:
            raise ValueError("prompt: must not be empty (the enhancer's output or the original prompt)")
        image = None
        if task.HasField("image") and task.image.key:
            image = open_first_frame(self.store.get_bytes(task.image))
        result = encode(self.models, encode_request(from_proto(task.params), task.prompt, image))
        ctx.check_cancel()
        return encoder_pb2.EncodeOutput(
            context=self.store.put_tensors(stage_key(task, "encode", "context.safetensors"),
                                           {"context": result.context}),
            negative_context=self.store.put_tensors(stage_key(task, "encode", "negative_context.safetensors"),
                                                    {"negative_context": result.negative_context}),
            y=self.store.put_tensors(stage_key(task, "encode", "y.safetensors"), {"y": result.y}),
        )

    def outputs_valid(self, store: ObjectStore, output: encoder_pb2.EncodeOutput) -> bool:
        return all(store.exists(ref) for ref in (output.context, output.negative_context, output.y))

    def follow_up(self, task, output, source):  # noqa: ARG002
        return with_segment(events_pb2.DenoiseTask(job_id=task.job_id, params=task.params, context=output.context,
                                                   negative_context=output.negative_context, y=output.y,
                                                   tenant=task.tenant), task), []
