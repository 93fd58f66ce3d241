"""The names nearest a mistyped one, for "did you mean" in error messages (a backbone, a config
key, an albumentations transform).

difflib's ratio treats every differing character alike, so `tf_efficientnet_liteO` (a capital O
for the zero) lands as far from `tf_efficientnet_lite0` as from `tf_efficientnet_lite4`, and a long
list of models buries the intended name. Here a change of case or a look-alike character (O and 0,
l and 1, S and 5, _ and -) costs a fraction of a real edit, and swapping two neighbours costs one
edit, so a one-character slip puts the intended name first. Torch-free: Make reads configs.
"""

from __future__ import annotations

from collections.abc import Iterable

LOOK_ALIKE = ("O0o", "l1Ii|", "S5s", "B8", "Z2z", "G6", "_-. ")
CASE = 0.1  # a, A
SIMILAR = 0.3  # O, 0


def _substitution(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a.lower() == b.lower():
        return CASE
    if any(a in group and b in group for group in LOOK_ALIKE):
        return SIMILAR
    return 1.0


def distance(a: str, b: str) -> float:
    """Edits from a to b (insert, delete, substitute, swap two neighbours), with a case change or a
    look-alike substitution at a fraction of one (optimal string alignment)."""
    prev2: list[float] = []
    prev = [float(j) for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        row = [float(i)] + [0.0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + _substitution(a[i - 1], b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def nearest(word: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to n names within reach of word (about one edit in three characters), nearest first; ties by
    length closest to word's, then alphabetically."""
    reach = max(1.5, len(word) / 3)
    scored = []
    for name in set(names):
        if abs(len(name) - len(word)) > reach:
            continue  # cheaper than the alignment; could not be within reach anyway
        d = distance(word, name)
        if d <= reach:
            scored.append((d, abs(len(name) - len(word)), name))
    return [name for *_, name in sorted(scored)[:n]]


def did_you_mean(word: str, names: Iterable[str], n: int = 3) -> str:
    """'; did you mean a, b?' for an error message, or '' when nothing is near."""
    near = nearest(word, names, n)
    return f"; did you mean {', '.join(near)}?" if near else ""
