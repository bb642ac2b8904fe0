"""The prompt-enhancer service records what the enhancer did (rejected answers, the fallback) in the job's
`prompt_enhanced` event, so `mova jobs watch` shows why the rule-based rewrite was used."""

from __future__ import annotations

from enhance_helpers import chat_reply
from test_enhance_openai import INVALID, PROMPT, make_enhancer

from movakit.api.v1 import common_pb2, events_pb2
from movakit.cli.jobs import describe
from movakit.services.prompt_enhancer.servicer import EnhanceHandler


def test_fallback_and_rejections_reach_the_job_event(fake_openai):
    fake_openai.script(chat_reply(INVALID))  # invalid twice (the reply repeats): retried once, then rules
    handler = EnhanceHandler(make_enhancer(fake_openai), store=None)  # no image: the store is not touched
    task = events_pb2.EnhanceTask(job_id="job-1", params=common_pb2.GenerationParams(prompt=PROMPT, enhance_prompt=True))

    output = handler.run(task, ctx=None)
    assert output.backend == "rules" and output.fallback_reason
    assert len(output.notes) >= 2 and any("rejected" in n or "invalid" in n for n in output.notes), output.notes

    next_task, [event] = handler.follow_up(task, output, "prompt-enhancer")
    assert next_task.prompt == output.prompt
    assert list(event.prompt_enhanced.notes) == list(output.notes)
    shown = describe(event)
    assert all(f"enhancer: {n}" in shown for n in output.notes) and "kept the original" in shown
