"""Tokenize stage + tokens.parquet cache: one row per clip, plain-pyarrow readable, tokenizer-checked."""

from __future__ import annotations

import pytest

from arvid_ray.tokens import TokenizerMismatch, _check_meta, token_cache_meta


class _FakeIdentity:
    """Only the identity attributes of a tokenizer, for the metadata check (no encoding involved)."""

    def __init__(self, id_: str, sha: str):
        self.id, self.sha256, self.vocab_size = id_, sha, 1000


def test_metadata_check_names_both_tokenizers():
    a, b = _FakeIdentity("fsq-a", "1" * 64), _FakeIdentity("fsq-b", "2" * 64)
    _check_meta("x.parquet", token_cache_meta(a), a)
    with pytest.raises(TokenizerMismatch, match=r"different tokenizer: id=fsq-a.*configured tokenizer is id=fsq-b"):
        _check_meta("x.parquet", token_cache_meta(a), b)
    with pytest.raises(TokenizerMismatch, match="no tokenizer metadata"):
        _check_meta("x.parquet", {}, a)
