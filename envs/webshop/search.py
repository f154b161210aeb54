"""BM25 search over a catalog with bm25s, in place of WebShop's Lucene (pyserini) index.

Like WebShop's engine, a search returns at most :data:`SEARCH_RETURN_N` (50) products, best first, and only
products that match at least one query term (Lucene never returns non-matching documents). The BM25
parameters are Lucene's defaults as pyserini sets them (k1=0.9, b=0.4); text is lower-cased, split into
words, stripped of English stop words and Snowball-stemmed (Lucene's English analyzer does the same with
Porter's stemmer). Ties are broken by catalog order, so a search is deterministic.

:class:`SearchIndex` builds once per catalog and saves to a cache folder (``bm25s``'s own format); a later
process loads it in a fraction of the build time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

#: WebShop's ``SEARCH_RETURN_N``: results a search returns (5 pages of 10).
SEARCH_RETURN_N = 50
INDEX_VERSION = 1
#: Memory allowed for dense score rows of frequent tokens (see :meth:`SearchIndex._prepare_dense_rows`).
DENSE_ROWS_BYTES = 64 * 2**20

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_STOPWORDS = frozenset(STOPWORDS_EN)


class Tokenizer:
    """Words of two or more characters, lower-cased, stop words removed, stemmed (memoised per word)."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._stems: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
        stems = self._stems
        unknown = [w for w in words if w not in stems]
        if unknown:
            for word, stem in zip(unknown, self._stemmer.stemWords(unknown), strict=True):
                stems[word] = stem
        return [stems[w] for w in words]


class SearchIndex:
    """A BM25 index of a catalog's documents; :meth:`search` returns catalog indices, best first."""

    def __init__(self, retriever: bm25s.BM25, num_docs: int) -> None:
        self.retriever = retriever
        self.num_docs = num_docs
        self.tokenize = Tokenizer()
        self._vocab = retriever.vocab_dict
        self._prepare_dense_rows()

    def _prepare_dense_rows(self) -> None:
        """Dense score rows for the most frequent tokens (within :data:`DENSE_ROWS_BYTES`).

        Scoring adds each query token's precomputed document scores; for a token in most documents (option
        names, common words) a dense row add is several times faster than scattering its postings, and adds
        the same values in the same order, so scores are bit-identical to bm25s's.
        """
        index = self.retriever.scores
        self._data, self._indices, self._indptr = index["data"], index["indices"], index["indptr"]
        df = np.diff(self._indptr)
        frequent = np.flatnonzero(df > self.num_docs / 16)
        max_rows = DENSE_ROWS_BYTES // (4 * max(self.num_docs, 1))
        frequent = frequent[np.argsort(-df[frequent], kind="stable")[:max_rows]]
        self._dense = np.zeros((len(frequent), self.num_docs), dtype=np.float32)
        for row, token in enumerate(frequent):
            start, end = self._indptr[token], self._indptr[token + 1]
            self._dense[row, self._indices[start:end]] = self._data[start:end]
        self._dense_row = {int(token): row for row, token in enumerate(frequent)}

    def scores(self, token_ids: list[int]) -> np.ndarray:
        """BM25 score of every document for the query's token ids (float32, bm25s's summation order)."""
        scores = np.zeros(self.num_docs, dtype=np.float32)
        for token in token_ids:
            row = self._dense_row.get(token)
            if row is not None:
                scores += self._dense[row]
            else:
                start, end = self._indptr[token], self._indptr[token + 1]
                np.add.at(scores, self._indices[start:end], self._data[start:end])
        return scores

    @classmethod
    def build(cls, documents: Iterable[str], k1: float = 0.9, b: float = 0.4) -> SearchIndex:
        tokenize = Tokenizer()
        corpus = [tokenize(doc) or ["_empty_"] for doc in documents]
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(corpus, show_progress=False)
        return cls(retriever, len(corpus))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(folder), show_progress=False)
        (folder / "hiergym.json").write_text(json.dumps({"num_docs": self.num_docs, "version": INDEX_VERSION}))

    @classmethod
    def load(cls, folder: Path) -> SearchIndex:
        meta = json.loads((folder / "hiergym.json").read_text())
        if meta.get("version") != INDEX_VERSION:
            raise ValueError(f"search index in {folder} has version {meta.get('version')}, not {INDEX_VERSION}")
        retriever = bm25s.BM25.load(str(folder), show_progress=False)
        return cls(retriever, int(meta["num_docs"]))

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / "hiergym.json").is_file()

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[int]:
        """Indices of the (at most ``k``) best-matching documents for ``query``, best first."""
        ids = [self._vocab[t] for t in self.tokenize(query) if t in self._vocab]
        if not ids:
            return []
        return top_k(self.scores(ids), k).tolist()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest positive scores, by score and, for equal scores, index.

    Only documents at or above the k-th best score (and above zero: documents matching a query word) are
    sorted, so the cost is one partition of the scores.
    """
    n = len(scores)
    kth = np.partition(scores, n - k)[n - k] if n > k else 0.0
    candidates = np.flatnonzero(scores >= kth) if kth > 0 else np.flatnonzero(scores > 0)
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return candidates[order]
