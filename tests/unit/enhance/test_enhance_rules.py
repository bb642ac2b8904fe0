"""The rule-based rewrite obeys every caption rule on varied prompts, deterministically."""

import pytest

from movakit.enhance.rules import PromptTooLongError, rule_rewrite
from movakit.enhance.text import count_words, normalise_quotes, paragraphs, static_words
from movakit.enhance.validate import validate_caption

PROMPTS = {
    "english_speech": 'A woman in a red coat walks along a pier at dusk. She turns and says, "I will be back tomorrow." '
    "Waves crash against the posts.",
    "chinese_speech": "一个女孩在雨中奔跑，她大喊：“等等我！”然后停下来。远处传来雷声。",
    "japanese_speech": "少女が振り向いて「ありがとう、また明日ね」と言う。",
    "german_speech": "Ein Mann sagt „Guten Morgen“ zu seiner Nachbarin. Soft piano music plays in the background.",
    "french_guillemets": "Une femme ouvre la porte et dit « Entrez, je vous prie ». Audio: a creaking hinge.",
    "two_speakers": 'He asks, "Did you see that?" and she replies, "¿Qué dijiste?" They both laugh.',
    "no_speech": "A fox trots across a snowy field under a pale winter sun, leaving a line of prints behind it.",
    "no_speech_sound": "A drummer plays a fast rhythm on a rooftop. The sound echoes off nearby buildings.",
    "audio_label": "Indoor recruitment board scene: a man scans a board labeled \"RECRUITING TUES-FRI\"; two women "
    "approach. Audio: upbeat 1990s-style Euro-dance with roomy reverb, ending in a sudden buzz.",
    "static_words": "A static shot of a cat that sits perfectly still on a windowsill. The camera is motionless.",
    "only_sound": "Sound: distant church bells.",
    "bullets": "- a boy opens a gift box\n- he gasps and says “Wow,\n  a puppy!”\n* the puppy licks his face",
    "multiline": "A kite rises over the dunes\nas the wind picks up. Flapping fabric sounds fill the air.",
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_rewrite_obeys_every_rule(name):
    prompt = PROMPTS[name]
    out = rule_rewrite(prompt)
    assert validate_caption(out.text, prompt).ok, validate_caption(out.text, prompt).summary()
    paras = paragraphs(out.text)
    assert len(paras) >= 2
    assert paras[-1].startswith("The audio")
    assert count_words(out.text) <= 250
    assert static_words(out.text) == []
    # speech: every user quote appears verbatim in ASCII double quotes, and nothing else is quoted
    user_quotes = [q.content for q in normalise_quotes(prompt).quotes]
    out_quotes = [q.content for q in normalise_quotes(out.text).quotes]
    assert out_quotes == user_quotes
    for quote in user_quotes:
        assert f'"{quote}"' in out.text
    assert not any(mark in out.text for mark in "“”「」『』«»„")
    assert rule_rewrite(prompt) == out  # deterministic


def test_layout_opening_progression_audio():
    out = rule_rewrite(PROMPTS["english_speech"]).text
    assert paragraphs(out) == [
        "A woman in a red coat walks along a pier at dusk.",
        'She turns and says, "I will be back tomorrow." Waves crash against the posts.',
        "The audio carries the sounds of the action described above. "
        "Any speech is heard exactly as quoted, in its original language.",
    ]


def test_sound_sentences_and_audio_label_go_to_the_final_paragraph():
    out = paragraphs(rule_rewrite(PROMPTS["no_speech_sound"]).text)
    assert out[0] == "A drummer plays a fast rhythm on a rooftop."
    assert out[-1] == "The audio follows the description: The sound echoes off nearby buildings."
    out = paragraphs(rule_rewrite(PROMPTS["audio_label"]).text)
    assert out[-1].startswith(
        "The audio follows the description: upbeat 1990s-style Euro-dance with roomy reverb, ending in a sudden buzz."
    )
    assert "Audio:" not in out[0]


def test_no_sound_or_speech_requested_invents_none():
    out = paragraphs(rule_rewrite(PROMPTS["no_speech"]).text)
    no_sound = "The audio carries the natural sounds of the scene, with no speech and no music requested."
    assert out == [PROMPTS["no_speech"], no_sound]


def test_static_wording_is_removed_and_reported():
    out = rule_rewrite(PROMPTS["static_words"])
    assert static_words(out.text) == []
    assert "A shot of a cat that sits on a windowsill." in out.text
    assert "The camera holds its position." in out.text
    assert any("static-implying" in note for note in out.notes)


def test_first_frame_description_opens_the_caption_and_keeps_on_screen_text():
    visual = (
        "Style: warm cinematic realism.\nCamera: wide shot at eye level.\n"
        'Elements: stalls with lanterns; a sign reads "MERCADO".\nText: "MERCADO"'
    )
    out = rule_rewrite("A busy market at dusk. A vendor waves.", visual)
    first = paragraphs(out.text)[0]
    assert first.startswith("Warm cinematic realism. Wide shot at eye level.")
    assert first.count('"MERCADO"') == 1
    assert first.endswith("A busy market at dusk.")
    assert validate_caption(out.text, "A busy market at dusk. A vendor waves.", visual_description=visual).ok


def test_long_input_is_trimmed_to_250_words_without_touching_speech():
    speech = "Das ist der längste Tag meines Lebens, und ich bin so müde."
    prompt = " ".join(f"The hiker climbs past boulder number {i} and pauses." for i in range(60))
    prompt += f' At the top she says, "{speech}" ' + " ".join(f"Cloud {i} drifts by." for i in range(30))
    prompt += " Audio: wind gusts and a distant hawk cry."
    assert count_words(prompt) > 500
    out = rule_rewrite(prompt)
    assert count_words(out.text) <= 250
    assert f'"{speech}"' in out.text
    assert paragraphs(out.text)[0] == "The hiker climbs past boulder number 0 and pauses."
    assert paragraphs(out.text)[-1].startswith("The audio follows the description: wind gusts")
    assert any(note.startswith("trimmed description") for note in out.notes)
    assert validate_caption(out.text, prompt).ok


def test_a_single_overlong_sentence_is_cut_at_a_word_boundary():
    prompt = "A train crosses " + " and ".join(f"bridge {i}" for i in range(200)) + "."
    out = rule_rewrite(prompt)
    assert count_words(out.text) <= 250
    assert validate_caption(out.text, prompt).ok


def test_quotes_alone_over_the_limit_are_refused_clearly():
    speech = " ".join(["word"] * 260)
    with pytest.raises(PromptTooLongError, match=r"quoted speech alone is 260 words"):
        rule_rewrite(f'He says "{speech}"')


def test_long_chinese_speech_is_kept_and_description_trimmed():
    speech = "我们明天早上八点在火车站见面，不要迟到。"
    prompt = "一位老人坐在公园长椅上喂鸽子。" * 30 + f"他抬头说：“{speech}”"
    out = rule_rewrite(prompt)
    assert count_words(out.text) <= 250
    assert f'"{speech}"' in out.text


def test_empty_prompt_is_rejected():
    with pytest.raises(ValueError, match="prompt"):
        rule_rewrite("   ")


def test_quoted_lines_in_the_sound_section_survive_trimming():
    prompt = " ".join(f"Dancer {i} spins across the stage." for i in range(80))
    prompt += ' Audio: a crowd cheers. A singer belts "Encore, encore!" The bass drops.'
    out = rule_rewrite(prompt)
    assert count_words(out.text) <= 250
    assert '"Encore, encore!"' in paragraphs(out.text)[-1]
    assert validate_caption(out.text, prompt).ok


def test_bulleted_lines_become_sentences_and_line_breaks_in_speech_become_spaces():
    out = paragraphs(rule_rewrite(PROMPTS["bullets"]).text)
    assert out[0] == "A boy opens a gift box."
    assert out[1] == 'He gasps and says "Wow, a puppy!" the puppy licks his face.'


def test_a_sentence_emptied_by_static_removal_disappears():
    out = rule_rewrite("Static. A heron wades through the shallows.")
    assert paragraphs(out.text)[0] == "A heron wades through the shallows."
