"""The generators pass the contract every model plugin runs (recsys.testing), on codes of the
tiny dataset written to a temporary file."""

import tempfile
from pathlib import Path
from typing import ClassVar

import pytest

import recsys
import recsys.testing
import recsys_semantic_ids.plugin
from recsys_semantic_ids import CodeTable, random_codes
from recsys_semantic_ids.generator import TIGER, SemanticIDGenerator


def _codes_file() -> str:
    item_ids = list(recsys.SeqDataModule(str(recsys.testing.tiny_dataset())).catalog.vocab.tokens[1:])
    table = CodeTable(item_ids, random_codes(len(item_ids), [3, 3, 2], seed=0), [3, 3, 2])
    return str(table.write(Path(tempfile.mkdtemp(prefix="semantic-ids-contract-")) / "codes.json"))


CODES = _codes_file()
SMALL = {"codes_path": CODES, "num_beams": 5, "ks": [5, 10], "metrics": ["hit", "ndcg"], "decoder_layers": 1,
         "decoder_hidden": 32, "decoder_heads": 2, "decoder_intermediate": 64}


class TestTIGER(recsys.testing.ModelContract):
    model = TIGER
    plugin = recsys_semantic_ids.plugin
    init_args: ClassVar[dict] = SMALL


@pytest.mark.slow  # exact ranking is also checked against brute force in test_semantic_ids_generator.py
class TestTIGERExactRanking(recsys.testing.ModelContract):
    model = TIGER
    plugin = recsys_semantic_ids.plugin
    init_args: ClassVar[dict] = {**SMALL, "ranking": "exact"}


@pytest.mark.slow
class TestSemanticIDGenerator(recsys.testing.ModelContract):
    model = SemanticIDGenerator
    plugin = recsys_semantic_ids.plugin
    init_args: ClassVar[dict] = {**SMALL, "backbone": "tiny-llama", "tasks": ["seqrec", "item2index", "index2item", "fusion"],
                                 "align_samples": 2}
