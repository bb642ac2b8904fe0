"""Instructions sent to LLM backends: the caption rewrite and the first-frame visual-element extraction.

Written for this project from the rules in docs/prompt-enhancement.md; the answer is checked by
`validate.validate_caption`.
"""

from __future__ import annotations

from movakit.enhance.backends.base import Feedback
from movakit.enhance.text import MAX_WORDS, normalise_quotes

REWRITE_INSTRUCTION = f"""You turn a short user request into the kind of caption a joint video-and-audio \
generator was trained on. Reply with the caption only: no title, no notes, no markdown.

Layout, in plain paragraphs separated by one blank line:
1. Opening paragraph. Start from what the first frame shows (when a first-frame description is given) and \
weave it into the narration with action verbs: who or what is in view, where, the light, the framing. \
Do not write an inventory ("there is ..., there are ..."). Copy any on-screen text exactly.
2. One or more paragraphs that tell what happens, in the order it happens. Mention camera movement only when \
the user asked for it; mention a cut only when the user's viewpoint changes.
3. Last paragraph, about sound only, beginning with the words "The audio". Cover what the user asked for: \
music (style, instruments, tempo), ambience, sound effects, room acoustics, when sounds happen ("about three \
seconds in") and how the sound ends.

Hard rules:
- At most {MAX_WORDS} words in total.
- Speech goes in straight double quotes, copied character for character from the user's request and kept in \
its original language. Never translate it, romanise it, explain it or shorten it.
- Never add speech, sounds, camera moves, people, objects or story events that the user did not ask for.
- Never use words that suggest a frozen picture: static, still, frozen, motionless, stationary, fixed, steady, \
freeze, unmoving, immobile.
- Keep the look of the first frame (style, colours, lighting) the whole way through, and assume real-world \
physics and acoustics unless the user says otherwise.

Example.
User request: A barista pours latte art in a busy cafe and smiles at the customer: "Enjoy!" Soft jazz plays.
Caption:
A barista stands behind the counter of a busy cafe, tilting a milk pitcher over a cup of coffee while \
customers move about behind her.

She pours the milk in a thin stream, drawing a pattern on the coffee's surface, then slides the cup across \
the counter, looks up at the customer and smiles as she says, "Enjoy!"

The audio features soft jazz playing over the murmur of the busy cafe, with her voice close and clear as \
she speaks."""

REWRITE_USER_TEMPLATE = """First-frame description:
{visual}

User request:
{prompt}

{speech}"""

NO_FIRST_FRAME = "(none given: describe only what the user asks for)"

EXTRACT_INSTRUCTION = """Describe this image as the first frame of a video, in English, using exactly four \
lines:
Style: the visual style (photographic or illustrated, colour palette, mood, lighting quality).
Camera: shot size, camera angle, framing and depth of field.
Elements: the people (appearance, clothing, pose, expression), animals, objects, the setting, the light \
sources and where things are relative to each other.
Text: every piece of readable text in the image, copied exactly inside double quotes; or "none".
Describe only what is visible. Do not guess at events before or after this moment."""


def rewrite_messages(
    prompt: str, visual_description: str | None, feedback: Feedback | None = None
) -> list[dict[str, str]]:
    """Chat messages for the caption rewrite; the user's quoted spans are listed again so they are copied exactly.
    With `feedback` (a rejected answer), that answer and a request to correct it follow."""
    quotes = normalise_quotes(prompt).quotes
    if quotes:
        speech = "Quoted words to copy exactly, in straight double quotes: " + ", ".join(f'"{q.content}"' for q in quotes)
    else:
        speech = "The request contains no quoted speech: the caption must contain no dialogue."
    user = REWRITE_USER_TEMPLATE.format(visual=visual_description or NO_FIRST_FRAME, prompt=prompt, speech=speech)
    messages = [{"role": "system", "content": REWRITE_INSTRUCTION}, {"role": "user", "content": user}]
    if feedback is not None:
        messages.append({"role": "assistant", "content": feedback.previous_answer})
        messages.append({"role": "user", "content": retry_message(feedback.problems)})
    return messages


def retry_message(problems: str) -> str:
    """The follow-up user message that asks for a corrected caption after a rejected one."""
    return f"That caption breaks these rules: {problems}. Write it again, following every rule."
