"""The validator rejects answers that break each rewrite rule, and accepts a good one."""

import pytest

from movakit.enhance.validate import clean_answer, validate_caption

PROMPT = 'A chef flips a pancake in a small kitchen and says, "Voilà, c\'est prêt!" Jazz plays on a radio.'
GOOD = (
    "A chef in a white jacket stands at the stove of a small kitchen, gripping a pan over the flame.\n\n"
    'He flicks his wrist, the pancake turns in the air and lands back in the pan, and he says, "Voilà, c\'est prêt!"\n\n'
    "The audio features jazz from a small radio, the sizzle of batter in the pan, and his voice close and clear."
)


def codes(answer, prompt=PROMPT, **kw):
    return [issue.code for issue in validate_caption(answer, prompt, **kw).issues]


def test_good_answer_passes():
    assert codes(GOOD) == []


def test_too_long():
    long_answer = GOOD.replace("small kitchen", "small kitchen " + "with tiles " * 120)
    assert codes(long_answer) == ["too_long"]


def test_missing_final_audio_paragraph():
    assert codes(GOOD.rsplit("\n\n", 1)[0]) == ["no_audio_paragraph"]
    assert codes(GOOD.replace("The audio features", "Audio:")) == ["no_audio_paragraph"]


def test_audio_paragraph_alone():
    assert codes('The audio features jazz and the words "Voilà, c\'est prêt!"') == ["no_visual_paragraph"]


def test_user_quote_translated_or_altered():
    assert codes(GOOD.replace("Voilà, c'est prêt!", "There you go, it's ready!")) == ["missing_quote", "invented_quote"]
    assert codes(GOOD.replace("Voilà, c'est prêt!", "Voila, c'est pret!")) == ["missing_quote", "invented_quote"]


def test_user_quote_dropped_from_quotes():
    assert codes(GOOD.replace('"Voilà, c\'est prêt!"', "that it is ready")) == ["missing_quote"]


def test_invented_speech():
    answer = GOOD.replace("and his voice", 'and a neighbour shouts "Smells great!" over his voice')
    assert codes(answer) == ["invented_quote"]


def test_quote_from_the_first_frame_description_is_allowed():
    answer = GOOD.replace("small kitchen,", 'small kitchen under a sign reading "CHEZ MOI",')
    assert codes(answer) == ["invented_quote"]
    assert codes(answer, visual_description='Text: "CHEZ MOI"') == []


def test_cjk_speech_must_stay_verbatim_and_curly_quotes_count():
    prompt = "她笑着说：「今天天气真好」。"
    good = "A woman smiles at a sunny window.\n\nShe says, “今天天气真好”.\n\nThe audio carries her voice."
    assert codes(good, prompt) == []
    assert codes(good.replace("今天天气真好", "The weather is nice today"), prompt) == ["missing_quote", "invented_quote"]


def test_unbalanced_quotes():
    assert "unbalanced_quotes" in codes(GOOD.replace('says, "Voilà', "says, \u201cVoilà"))


def test_static_words_the_user_did_not_use():
    assert codes(GOOD.replace("stands at the stove", "stands still at the stove")) == ["static_word"]
    assert codes(GOOD.replace("A chef", "In a static shot, a chef")) == ["static_word"]
    prompt = PROMPT.replace("A chef", "A chef stands still and")
    assert codes(GOOD.replace("stands at the stove", "stands still at the stove"), prompt) == []


@pytest.mark.parametrize("blank", ["", "   \n\n  ", "<think>let me see</think>"])
def test_empty(blank):
    assert codes(clean_answer(blank)) == ["empty"]


def test_clean_answer_strips_wrappers_but_not_words():
    raw = "<think>plan the caption</think>\n```text\nRewritten: " + GOOD + "\n```"
    assert clean_answer(raw) == GOOD
    assert clean_answer("  " + GOOD + "\n") == GOOD


def test_paragraphs_on_single_lines_are_accepted():
    assert codes(GOOD.replace("\n\n", "\n")) == []
