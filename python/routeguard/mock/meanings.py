"""The simulated upstream answering by meaning: one answer per cluster of questions that
mean the same, so a replay through a semantic cache can count its wrong hits.

A :class:`Meanings` maps a question (case and spacing folded) to the key of its cluster;
the mock then picks its answer's words from that key instead of from the text, so every
question of one cluster gets the same answer and questions of two clusters different ones
(questions it does not know keep their own, text-derived answer). Clusters come from
labelled pairs (``text_a``, ``text_b``, ``label``: label-1 pairs joined transitively, as in
Quora Question Pairs and GPTCache's benchmark file) or from explicit groups of texts.

:func:`load_meanings` reads a JSON file (plain, gzipped, or a tar.gz holding one JSON file)
of either form: a list of pair objects, or a list of lists of texts.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any


def fold(text: str) -> str:
    """The form questions are matched in: NFKC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


class Meanings:
    """Question -> cluster key (a cluster's smallest member, folded)."""

    def __init__(self, clusters: Mapping[str, str]) -> None:
        self.clusters = dict(clusters)

    def __len__(self) -> int:
        return len(self.clusters)

    def of(self, text: str) -> str | None:
        """The cluster key of ``text``, None for a question not in the data."""
        return self.clusters.get(fold(text))

    @classmethod
    def from_groups(cls, groups: Iterable[Sequence[str]]) -> Meanings:
        """Each group is one cluster (a text in two groups joins them)."""
        pairs = []
        for g in groups:
            pairs += [(g[0], other, 1) for other in g[1:]] or [(g[0], g[0], 1)]
        return cls.from_pairs(pairs)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str, int]]) -> Meanings:
        """Clusters of the label-1 pairs, joined transitively; label-0 texts stay alone."""
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b, label in pairs:
            ra, rb = find(fold(a)), find(fold(b))
            if label and ra != rb:
                lo, hi = sorted((ra, rb))
                parent[hi] = lo
        return cls({text: find(text) for text in list(parent)})


def load_meanings(path: str | PathLike[str]) -> Meanings:
    """Clusters from a JSON file of pairs (``text_a``/``text_b``/``label``) or of groups."""
    data = _read_json(Path(path))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of pairs or of groups of texts")
    if data and isinstance(data[0], list):
        return Meanings.from_groups([[str(t) for t in g] for g in data if g])
    pairs = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or "text_a" not in row or "text_b" not in row:
            raise ValueError(f"{path}: item {i} is not a text_a/text_b/label pair")
        pairs.append((str(row["text_a"]), str(row["text_b"]), int(row.get("label", 1))))
    return Meanings.from_pairs(pairs)


def _read_json(path: Path) -> Any:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) > 262 and raw[257:262] == b"ustar":  # a tar archive: its first JSON member
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(".json"):
                    f = tar.extractfile(member)
                    assert f is not None
                    return json.loads(f.read())
        raise ValueError(f"{path}: the archive holds no .json file")
    return json.loads(raw)
