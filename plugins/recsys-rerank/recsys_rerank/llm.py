"""What every LLM reranker shares: a frozen causal LM loaded on first use, prompts built from item
text and the user's recent items, next-token log-probabilities of a batch of prompts, and the
counts a cost table needs (prompts, prompt tokens, generated tokens)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

import recsys
import recsys.llm


class LLMReranker(recsys.Reranker):
    """Base of the rerankers that ask a causal LM.

    Args:
        backbone: any name ``recsys.llm.load_backbone`` takes (``smollm2-135m-instruct`` offline; a hub id).
        template: the item template writing each item's text (``recsys.llm.render_items``).
        history_items: the user's most recent items shown in the prompt.
        chat: wrap each prompt in the tokenizer's chat template (instruction-tuned backbones); the
            answer then starts the assistant's turn. Ignored when the tokenizer has none.
        chunk: prompts per forward pass.
        recency: LLMRank's recency-focused prompt: after the history, a line naming its most recent
            item again ("Note that the most recent one is: ..."), which LLMRank found makes the LLM
            weigh the order of the history.

    The LM is frozen and kept out of ``state_dict`` (the backbone name is the hyper-parameter).
    ``counts`` adds up ``rows`` (candidate lists, each once however many bootstrap orders),
    ``prompts``, ``prompt_tokens``, ``generated_tokens`` and ``forward_passes`` over every call, for
    cost tables; ``counts.clear()`` resets them.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 chat: bool = True, chunk: int = 16, recency: bool = False):
        super().__init__()
        if history_items < 1 or chunk < 1:
            raise ValueError(f"history_items and chunk must be >= 1, got {history_items} and {chunk}")
        self.backbone, self.template, self.history_items, self.chat, self.chunk, self.recency = (
            backbone, template, history_items, chat, chunk, recency)
        self._loaded: dict[str, Any] = {}  # a dict, so the LM is not a registered submodule (not saved)
        self._answers: dict[tuple[str, str], int] = {}
        self.counts: Counter[str] = Counter()

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        super().on_catalog(catalog)
        self.texts = recsys.llm.render_items(catalog, self.template)

    # ---- prompts ---------------------------------------------------------------------------------

    def recent(self, history: list[int]) -> str:
        """The last ``history_items`` items of a (0-padded) history, oldest first, one per line
        (then, with ``recency``, the note naming the newest of them)."""
        items = [i for i in history if i > 0][-self.history_items:]
        text = "\n".join(self.texts[i] for i in items)
        if self.recency and items:
            text += f"\nNote that the most recent one is: {self.texts[items[-1]]}"
        return text

    @property
    def uses_chat(self) -> bool:
        """Prompts are wrapped in the chat template (``chat`` and the tokenizer has one); the answer
        then opens the assistant's turn, else it follows the prompt's text."""
        return self.chat and bool(getattr(self.lm()[1], "chat_template", None))

    def as_prompt(self, text: str, answer: str = "") -> str:
        """``text`` as the user's turn (chat template) or as is, followed by the start of the answer."""
        tokenizer = self.lm()[1]
        if self.uses_chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return text + answer

    # ---- the LM ----------------------------------------------------------------------------------

    def lm(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded once; the tokenizer pads on the left so that the last
        position of every row is where its answer starts."""
        if not self._loaded:
            backbone = recsys.llm.load_backbone(self.backbone, head="causal-lm")
            backbone.tokenizer.padding_side = "left"
            self._loaded.update(model=backbone.model.eval().requires_grad_(False), tokenizer=backbone.tokenizer)
        return self._loaded["model"], self._loaded["tokenizer"]

    def answer_token(self, prompt: str, word: str) -> int:
        """The one token ``word`` is when it follows ``prompt`` (checked: a word the tokenizer would
        split or merge with the prompt's end cannot be scored by one next-token probability).
        Prompts ending alike share the answer, so it is looked up once per ending."""
        key = (prompt[-64:], word)
        if key not in self._answers:
            tokenizer = self.lm()[1]
            before = tokenizer(key[0], add_special_tokens=False).input_ids
            after = tokenizer(key[0] + word, add_special_tokens=False).input_ids
            if after[:len(before)] != before or len(after) != len(before) + 1:
                raise ValueError(f"{self.backbone}: {word!r} is not one token after {prompt[-20:]!r}; choose another "
                                 "answer word or identifier")
            self._answers[key] = after[-1]
        return self._answers[key]

    def encode(self, prompts: list[str]) -> dict[str, Tensor]:
        """Left-padded ids and mask on the LM's device, counted for the cost table."""
        model, tokenizer = self.lm()
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        self.counts["prompts"] += len(prompts)
        self.counts["prompt_tokens"] += int(encoded["attention_mask"].sum())
        device = next(model.parameters()).device
        return {key: value.to(device) for key, value in encoded.items()}

    @torch.no_grad()
    def next_token_logprobs(self, prompts: list[str]) -> Tensor:
        """(P, V) log-probabilities of the token after each prompt, ``chunk`` prompts per pass."""
        return torch.cat([self.answer_logits(prompts[start:start + self.chunk]).float().log_softmax(dim=-1)
                          for start in range(0, len(prompts), self.chunk)])

    def answer_logits(self, prompts: list[str]) -> Tensor:
        """(P, V) logits of the token after each prompt, in one pass (with gradients when training)."""
        model = self.lm()[0]
        encoded = self.encode(prompts)
        # positions count real tokens only, so a left-padded prompt reads as if it stood alone
        positions = (encoded["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        self.counts["forward_passes"] += 1
        return model(**encoded, position_ids=positions, logits_to_keep=1).logits[:, -1]

    def end_tokens(self) -> set[int]:
        """The ids that end a generation: the LM's end-of-sequence token(s) and the padding token."""
        model, tokenizer = self.lm()
        eos = model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        return ids | {tokenizer.pad_token_id} - {None}

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of ``prompts`` (decoded, special tokens dropped)."""
        model, tokenizer = self.lm()
        texts = []
        stops = torch.tensor(sorted(self.end_tokens()))
        for start in range(0, len(prompts), self.chunk):
            encoded = self.encode(prompts[start:start + self.chunk])
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            new = output[:, encoded["input_ids"].shape[1]:]
            # one forward pass per new position (shared by the chunk); a row's tokens run up to and
            # including its first end token (the padding after it is not generated)
            self.counts["forward_passes"] += new.shape[1]
            ends = torch.isin(new, stops.to(new.device))
            self.counts["generated_tokens"] += int(((ends.cumsum(dim=1) - ends.long()) == 0).sum())
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts
