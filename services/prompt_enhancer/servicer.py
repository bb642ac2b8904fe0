"""Prompt-enhancer service: rewrites the job's prompt (when the job asked for it) and hands it to the encoder.

`EnhanceHandler.run` reads the optional first-frame image (sha256 verified) and calls
`movakit.stages.enhance.enhance`; with `params.enhance_prompt` false the stage returns the prompt verbatim.
The result (the prompt actually used, the backend, any fallback reason and the enhancer's notes) is recorded in jobs/<job>/enhance/result.pb
and announced with a `prompt_enhanced` event.
"""

from __future__ import annotations

import grpc

from movakit.api.v1 import common_pb2, events_pb2, prompt_enhancer_pb2, prompt_enhancer_pb2_grpc
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_ENCODE, TOPIC_ENHANCE
from movakit.runtime.worker import TaskContext, make_event, serve_direct
from movakit.stages.enhance import EnhanceRequest, enhance


class EnhanceHandler:
    stage = common_pb2.STAGE_ENHANCE
    stage_name = "enhance"
    inbox = TOPIC_ENHANCE
    next_topic = TOPIC_ENCODE
    task_type = events_pb2.EnhanceTask
    output_type = prompt_enhancer_pb2.EnhanceOutput

    def __init__(self, enhancer, store: ObjectStore) -> None:
        self.enhancer = enhancer
        self.store = store

    def run(self, task: events_pb2.EnhanceTask, ctx: TaskContext) -> prompt_enhancer_pb2.EnhanceOutput:  # noqa: ARG002
        if not task.job_id:
            raise ValueError("job_id: must not be empty")
        if not task.params.prompt.strip():
            raise ValueError("params.prompt: must not be empty")
        image = self.store.get_bytes(task.image) if task.HasField("image") and task.image.key else None
        result = enhance(self.enhancer, EnhanceRequest(prompt=task.params.prompt, image=image,
                                                      enabled=task.params.enhance_prompt))
        return prompt_enhancer_pb2.EnhanceOutput(prompt=result.prompt, original_prompt=result.original_prompt,
                                                 backend=result.backend,
                                                 fallback_reason=result.fallback_reason or "",
                                                 notes=list(result.events))

    def outputs_valid(self, store: ObjectStore, output) -> bool:  # noqa: ARG002 - the manifest is the output
        return bool(output.prompt)

    def follow_up(self, task, output, source):
        enhanced = events_pb2.PromptEnhanced(prompt=output.prompt, original_prompt=output.original_prompt,
                                             backend=output.backend, fallback_reason=output.fallback_reason,
                                             notes=output.notes)
        next_task = events_pb2.EncodeTask(job_id=task.job_id, params=task.params, prompt=output.prompt)
        if task.HasField("image"):
            next_task.image.CopyFrom(task.image)
        return next_task, [make_event(task.job_id, source, prompt_enhanced=enhanced)]


class PromptEnhancerServicer(prompt_enhancer_pb2_grpc.PromptEnhancerServicer):
    """The stage as a direct RPC: same handler; no Kafka."""

    def __init__(self, handler: EnhanceHandler) -> None:
        self.handler = handler

    def Enhance(self, request, context):  # noqa: N802 (gRPC method name)
        return serve_direct(self.handler, self.handler.store, request, context, "prompt-enhancer")


def add_servicers(handler: EnhanceHandler):
    def add(server: grpc.Server) -> list[str]:
        prompt_enhancer_pb2_grpc.add_PromptEnhancerServicer_to_server(PromptEnhancerServicer(handler), server)
        return [prompt_enhancer_pb2.DESCRIPTOR.services_by_name["PromptEnhancer"].full_name]
    return add
