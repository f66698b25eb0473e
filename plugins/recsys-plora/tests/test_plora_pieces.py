"""RecLoRA's small pieces on their own: answer head, prompter, frozen-state cache, CRM gate."""

import pytest
import torch
from recsys_plora.answer_head import (AnswerTokens, answer_token_ids, linear_answer_head, yes_no_direction,
                                      yes_no_logits)
from recsys_plora.crm import CRMGate, check_same_protocol
from recsys_plora.prompts import ReLLaPrompter, default_item_noun
from recsys_plora.state_cache import FrozenStateCache, cached_inputs, pad_entries
from torch import nn

import recsys

# ---- answer head ----------------------------------------------------------------------------


def test_yes_no_direction_reproduces_the_lm_heads_logit_difference():
    torch.manual_seed(0)
    lm_head = nn.Linear(6, 11).requires_grad_(False)  # d = 6, vocabulary 11, with a bias
    tokens = AnswerTokens(yes=7, no=2)
    direction, bias = yes_no_direction(lm_head, tokens)
    h = torch.randn(4, 6)  # (B, d)
    logits = lm_head(h)  # (B, V)
    torch.testing.assert_close(yes_no_logits(h, direction, torch.tensor(bias)), logits[:, 7] - logits[:, 2])
    assert not direction.requires_grad
    _, no_bias = yes_no_direction(nn.Linear(6, 11, bias=False), tokens)
    assert no_bias == 0.0


def test_linear_head_starts_from_the_direction_with_zero_bias():
    direction = torch.arange(5.0)
    head = linear_answer_head(5, direction)
    assert torch.equal(head.weight, direction[None]) and torch.equal(head.bias, torch.zeros(1))
    torch.manual_seed(0)
    random = linear_answer_head(5, None)
    assert random.weight.std() < 0.1 and torch.equal(random.bias, torch.zeros(1))


class _CharTokenizer:
    """One token per character (ids = code points): answers never merge into the prompt."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_answer_tokens_follow_the_wrapped_prompt():
    with pytest.raises(ValueError, match="same token"):  # " Yes" and " No" both start with a space here
        answer_token_ids(_CharTokenizer(), lambda t: t + "\nAnswer:", chat=False)
    assert answer_token_ids(_CharTokenizer(), lambda t: t + "<assistant>", chat=True) == AnswerTokens(ord("Y"), ord("N"))

# ---- prompter -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctr_data(ctr_tiny):
    dm = recsys.CTRDataModule(path=str(ctr_tiny), max_len=8, batch_size=4)
    dm.setup("fit")
    return dm


def test_item_noun_defaults_to_the_dataset_and_can_be_set(ctr_data):
    assert default_item_noun("ml-100k") == "movie" and default_item_noun("ctr-tiny") == "item"
    batch = next(iter(ctr_data.train_dataloader()))
    default = ReLLaPrompter(None, causal=False, chat_template=False, prompt_items=3, retrieval="recent")
    default.attach(ctr_data.data)
    books = ReLLaPrompter(None, causal=False, chat_template=False, prompt_items=3, retrieval="recent",
                          item_noun="book")
    books.attach(ctr_data.data)
    a, b = default(batch), books(batch)
    assert len(a) == len(b) == len(batch.item)  # one prompt per sample
    assert "like the item ***" in a[0] and "like the book ***" in b[0] and "book" not in a[0]


def test_prompter_wraps_by_backbone_kind_and_needs_attach():
    assert ReLLaPrompter(None, causal=True, chat_template=False).wrap("Q") == "Q\nAnswer:"
    assert ReLLaPrompter(None, causal=False).wrap("Q") == "Q"
    with pytest.raises(RuntimeError, match="attach"):
        ReLLaPrompter(None, causal=False)(None)

# ---- frozen-state cache ---------------------------------------------------------------------


def _encoder(calls, dim=3, states=True):
    """Encodes sample j of the batch as j + 1 tokens of id 10 + j, states filled with j."""
    def encode(rows):
        calls.append(list(rows))
        width = max(rows) + 1
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        st = torch.full((len(rows), width, dim), -1.0)
        for m, j in enumerate(rows):
            ids[m, :j + 1], mask[m, :j + 1], st[m, :j + 1] = 10 + j, 1, float(j)
        return ids, mask, st if states else None
    return encode


def test_cached_inputs_encode_each_sample_once_and_pad_right():
    calls, store = [], {}
    ids, mask, states = cached_inputs([5, 6], store, _encoder(calls), pad_id=0, dim=3)
    assert calls == [[0, 1]] and set(store) == {5, 6}
    assert ids.tolist() == [[10, 0], [11, 11]] and mask.tolist() == [[1, 0], [1, 1]]
    assert states[:, :, 0].tolist() == [[0.0, 0.0], [1.0, 1.0]]  # padding is zero, not the encoder's -1
    ids, mask, _ = cached_inputs([7, 5, 6], store, _encoder(calls), pad_id=0, dim=3)
    assert calls[-1] == [0]  # only the new sample (row 0) is encoded
    assert ids.tolist() == [[10, 0], [10, 0], [11, 11]] and mask.sum(1).tolist() == [1, 1, 2]
    calls.clear()
    cached_inputs([5], None, _encoder(calls, states=False), pad_id=0, dim=3)
    assert calls == [[0]]  # no store: always encoded


def test_pad_entries_without_states():
    ids, mask, states = pad_entries([(torch.tensor([4, 5, 6]), None), (torch.tensor([7]), None)], pad_id=9, dim=2)
    assert ids.tolist() == [[4, 5, 6], [7, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and states is None


def test_the_shared_cache_is_one_per_process_and_counts_samples():
    assert FrozenStateCache.shared() is FrozenStateCache.shared()
    cache = FrozenStateCache()
    cache.store("a")[1] = (torch.tensor([1]), None)
    cache.store("b").update({1: (torch.tensor([1]), None), 2: (torch.tensor([2]), None)})
    assert len(cache) == 3 and cache.store("a") is cache.stores["a"]


def test_a_model_handed_a_cache_reuses_another_models_states(plora_plugin, ctr_data):
    from recsys_plora import RecLoRA

    tiny = {"backbone": "tiny-llama", "adapter": "none", "adapted_layers": 1, "prompt_items": 3, "retrieval": "recent"}
    first = RecLoRA(num_items=30, **tiny)
    assert first.state_cache is FrozenStateCache.shared()
    cache = FrozenStateCache()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = RecLoRA(num_items=30, **tiny)
        model.state_cache = cache
        model.encoder.source["pretrained"] = True  # (tiny-llama is random: pretend its weights are reproducible)
        model.attach(ctr_data)
        models.append(model.eval())
    batch = next(iter(ctr_data.train_dataloader()))
    with torch.no_grad():
        a = models[0].logits(batch)
        assert len(cache) == len(batch.item)
        models[1]._encode = None  # the second model must not encode: the states are cached
        torch.testing.assert_close(models[1].logits(batch), a)

# ---- CRM gate -------------------------------------------------------------------------------


class _FakeCRM(nn.Module):
    representation_dim, agnostic_dim = 4, 6

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def user_representation(self, batch, target_aware=True):
        return self.w * torch.full((len(batch), self.representation_dim if target_aware else self.agnostic_dim), 1.0)


def test_crm_gate_reads_the_chosen_representation_without_gradients():
    crm = _FakeCRM()
    aware, agnostic = CRMGate(crm, "unused.ckpt"), CRMGate(crm, "unused.ckpt", target_aware=False)
    assert (aware.dim, agnostic.dim) == (4, 6)
    assert aware([0, 1, 2]).shape == (3, 4) and agnostic([0, 1]).shape == (2, 6)
    assert not aware([0]).requires_grad


def test_crm_protocol_check_names_the_differing_settings(tmp_path):
    path = tmp_path / "crm.ckpt"
    torch.save({"datamodule_hyper_parameters": {"path": "d", "threshold": 4.0, "user_fields": ("age",)}}, path)
    check_same_protocol(str(path), {"path": "d", "threshold": 4.0, "user_fields": ["age"], "batch_size": 8})
    with pytest.raises(ValueError, match="threshold"):
        check_same_protocol(str(path), {"path": "d", "threshold": 3.0})
    torch.save({}, path)
    check_same_protocol(str(path), {"threshold": 3.0})  # saved without data settings: accepted


def test_checkpoint_keys_of_the_head_stay_where_they_were(plora_plugin):
    """Saved RecLoRA checkpoints hold the head at the model's top level: `answer_direction`,
    `answer_bias` (yes-no) or `head.weight`, `head.bias` (linear)."""
    from recsys_plora import RecLoRA

    tiny = {"backbone": "tiny-llama", "adapter": "none", "adapted_layers": 1}
    yes_no = set(RecLoRA(num_items=30, **tiny).state_dict())
    linear = set(RecLoRA(num_items=30, head="linear", **tiny).state_dict())
    assert {"answer_direction", "answer_bias"} <= yes_no and not any(k.startswith("head.") for k in yes_no)
    assert {"head.weight", "head.bias"} <= linear and "answer_direction" not in linear
