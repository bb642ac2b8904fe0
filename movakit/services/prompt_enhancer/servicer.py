"""Prompt-enhancer service: rewrites the job's prompt (when the job asked for it) and hands it to the encoder.

`EnhanceHandler.run` reads the optional first-frame image (sha256 verified) and calls
`movakit.stages.enhance.enhance`; with `params.enhance_prompt` false the stage returns the prompt verbatim.
The result (the prompt actually used, the backend, any fallback reason and the enhancer's notes) is recorded in jobs/<job>/enhance/result.pb
and announced with a `prompt_enhanced` event. For a text-only job, when MOVA_FIRST_FRAME_* names an image-generation
endpoint, the first frame is drawn from the enhanced prompt here and handed to the encoder as the job's image.
The enhancer runs once per job: for a long video its EncodeTask starts segment 0, whose prompt (the one this stage
returns) the later segments without a shot reuse.
"""

from __future__ import annotations


from movakit.api.v1 import common_pb2, events_pb2, prompt_enhancer_pb2
from movakit.runtime.object_store import ObjectStore, job_key
from movakit.runtime.topics import TOPIC_ENCODE, TOPIC_ENHANCE
from movakit.runtime.tasks import TaskContext, make_event
from movakit.enhance.first_frame import draw_first_frame_or_none
from movakit.long_video import segment_plan
from movakit.request import from_proto
from movakit.stages.enhance import EnhanceRequest, EnhancerSettings, enhance


class EnhanceHandler:
    rpc_service = prompt_enhancer_pb2.DESCRIPTOR.services_by_name["PromptEnhancer"]
    stage = common_pb2.STAGE_ENHANCE
    stage_name = "enhance"
    inbox = TOPIC_ENHANCE
    next_topic = TOPIC_ENCODE
    task_type = events_pb2.EnhanceTask
    output_type = prompt_enhancer_pb2.EnhanceOutput

    def __init__(self, enhancer, store: ObjectStore, settings: EnhancerSettings | None = None) -> None:
        """settings: where the text-only first frame comes from (MOVA_FIRST_FRAME_*); None = never drawn here."""
        self.enhancer = enhancer
        self.store = store
        self.settings = settings

    def run(self, task: events_pb2.EnhanceTask, ctx: TaskContext) -> prompt_enhancer_pb2.EnhanceOutput:  # noqa: ARG002
        if not task.job_id:
            raise ValueError("job_id: must not be empty")
        if not task.params.prompt.strip():
            raise ValueError("params.prompt: must not be empty")
        image = self.store.get_bytes(task.image) if task.HasField("image") and task.image.key else None
        result = enhance(self.enhancer, EnhanceRequest(prompt=task.params.prompt, image=image,
                                                      enabled=task.params.enhance_prompt))
        output = prompt_enhancer_pb2.EnhanceOutput(prompt=result.prompt, original_prompt=result.original_prompt,
                                                   backend=result.backend,
                                                   fallback_reason=result.fallback_reason or "",
                                                   notes=list(result.events))
        if image is None and self.settings is not None and self.settings.first_frame.configured:
            self._draw_first_frame(task, output)
        return output

    def _draw_first_frame(self, task: events_pb2.EnhanceTask, output: prompt_enhancer_pb2.EnhanceOutput) -> None:
        """Ask the image endpoint or local model for the first frame of a text-only job (seeded with the job's
        seed); on failure the notes say why and the encoder keeps the model's white-frame fallback."""
        notes: list[str] = []
        data = draw_first_frame_or_none(self.settings, output.prompt, task.params.height, task.params.width, notes,
                                        seed=task.params.seed)
        output.notes.extend(notes)
        if data is not None:
            output.first_frame.CopyFrom(self.store.put_bytes(job_key(task.job_id, "enhance", "first_frame"), data))

    def outputs_valid(self, store: ObjectStore, output) -> bool:
        if output.HasField("first_frame") and not store.exists(output.first_frame):
            return False
        return bool(output.prompt)

    def follow_up(self, task, output, source):
        enhanced = events_pb2.PromptEnhanced(prompt=output.prompt, original_prompt=output.original_prompt,
                                             backend=output.backend, fallback_reason=output.fallback_reason,
                                             notes=output.notes)
        next_task = events_pb2.EncodeTask(job_id=task.job_id, params=task.params, prompt=output.prompt,
                                          tenant=task.tenant)
        if task.HasField("image"):
            next_task.image.CopyFrom(task.image)
        elif output.HasField("first_frame"):
            next_task.image.CopyFrom(output.first_frame)
        plan = segment_plan(from_proto(task.params))
        if plan is not None:  # a long video: segment 0 starts
            next_task.segment.CopyFrom(events_pb2.Segment(index=0, count=plan.count, first_prompt=output.prompt))
        return next_task, [make_event(task.job_id, source, prompt_enhanced=enhanced)]
