"""Quote normalisation, word counting and sentence splitting shared by the rewrite and the validator."""

from movakit.enhance.text import count_words, normalise_quotes, split_sentences, static_words, truncate_words


def test_cjk_and_typographic_quotes_become_double_quotes_with_words_unchanged():
    text = "他说“你好，世界！”，她回答「また明日」。Elle dit « Bonjour ». Er sagt „Guten Tag“."
    norm = normalise_quotes(text)
    assert [q.content for q in norm.quotes] == ["你好，世界！", "また明日", "Bonjour", "Guten Tag"]
    assert norm.text == '他说"你好，世界！"，她回答"また明日"。Elle dit "Bonjour". Er sagt "Guten Tag".'
    for q in norm.quotes:
        assert norm.text[q.start : q.end] == f'"{q.content}"'
    assert norm.dropped_marks == ()


def test_unmatched_opening_mark_is_dropped_and_reported():
    norm = normalise_quotes('He shouts "wait for me and runs.')
    assert norm.text == "He shouts wait for me and runs."
    assert norm.quotes == ()
    assert norm.dropped_marks == ('"',)


def test_word_count_counts_each_cjk_character_and_skips_bare_punctuation():
    assert count_words("A man walks — slowly , home.") == 5
    assert count_words("你好世界") == 4
    assert count_words("She says \"こんにちは\" twice") == 2 + 5 + 1
    assert count_words("") == 0


def test_sentences_never_split_inside_quotes():
    norm = normalise_quotes('She says, "Stop. Now!" Then she leaves. Dr. Lee waves.')
    assert split_sentences(norm) == ['She says, "Stop. Now!"', "Then she leaves.", "Dr. Lee waves."]
    norm = normalise_quotes("她大喊：“等等我！”然后停下来。远处传来雷声。")
    assert split_sentences(norm) == ['她大喊："等等我！"', "然后停下来。", "远处传来雷声。"]


def test_static_words_ignore_quoted_speech():
    assert static_words('The lake is still. He says "hold still"') == ["still"]
    assert static_words("A Frozen pond, a steady wind") == ["frozen", "steady"]


def test_truncate_words_keeps_whole_words():
    assert truncate_words("one two three four five", 3) == "one two three."
    assert count_words(truncate_words("一二三四五六", 4)) == 4
