"""Training examples: BIGRec's prompt, and labels that cover exactly the response."""

import pytest

from recsys_grounding.data import sample_indices
from recsys_grounding.prompts import IGNORE, collate_examples, encode_example, render_prompt


@pytest.fixture(scope="module")
def tokenizer():
    import recsys

    return recsys.load_backbone("tiny-llama").tokenizer


def test_prompt_is_bigrecs_alpaca_template():
    prompt = render_prompt(['"A (1990)"', '"B (1991)"'])
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")
    assert "### Instruction:\nGiven a list of movies the user has watched before, please recommend a new movie " \
           "that the user likes to the user.\n\n" in prompt
    assert 'The user has watched the following movies before:"A (1990)", "B (1991)"\n \n\n### Response:\n' in prompt
    assert prompt.endswith("### Response:\n")
    assert "played the following video games" in render_prompt(['"G"'], domain="game")
    with pytest.raises(ValueError, match="domain"):
        render_prompt([], domain="books")


def test_response_only_labels_token_by_token(tokenizer):
    prompt, response = render_prompt(['"Toy Story (1995)"']), '"Heat (1995)"'
    ids, labels = encode_example(tokenizer, prompt, response)
    head = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    tail = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ids == head + tail
    assert labels == [IGNORE] * len(head) + tail
    # What the loss learns decodes to the response and EOS, nothing of the prompt.
    learned = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(learned[:-1]) == response and learned[-1] == tokenizer.eos_token_id


def test_labels_do_not_assume_the_prompt_tokenises_as_a_prefix(tokenizer):
    # "abc" + "def" tokenised jointly merges across the boundary in BPE; separately it cannot.
    prompt, response = "### Response:\nab", "cdef"
    ids, labels = encode_example(tokenizer, prompt, response)
    n_prompt = len(tokenizer(prompt)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:-1]) == response


def test_train_on_inputs_learns_every_token(tokenizer):
    ids, labels = encode_example(tokenizer, render_prompt(['"A"']), '"B"', train_on_inputs=True)
    assert labels == ids


def test_long_examples_lose_the_oldest_prompt_tokens(tokenizer):
    prompt = render_prompt([f'"Movie number {i} (1990)"' for i in range(40)])
    ids, labels = encode_example(tokenizer, prompt, '"Heat (1995)"', max_length=64)
    assert len(ids) == 64
    assert tokenizer.decode([t for t in labels if t != IGNORE][:-1]) == '"Heat (1995)"'
    n_prompt = labels.index(next(t for t in labels if t != IGNORE))
    assert tokenizer.decode(ids[:n_prompt]).endswith("### Response:\n")  # the end of the prompt is kept
    assert "Below is an instruction" not in tokenizer.decode(ids)  # its beginning is what was cut


def test_collate_right_pads_with_ignored_labels():
    batch = collate_examples([([5, 6, 7], [IGNORE, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_few_shot_sample_is_seeded_and_distinct():
    a, b, c = sample_indices(100, 10, 0), sample_indices(100, 10, 0), sample_indices(100, 10, 1)
    assert list(a) == list(b) and list(a) != list(c) and len(set(a)) == 10
    assert list(sample_indices(5, 10, 0)) == list(range(5)) and list(sample_indices(5, None, 0)) == list(range(5))
