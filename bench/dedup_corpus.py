"""A synthetic task corpus for bench_dedup.py: question lengths, vocabulary overlap within a
server, skewed block sizes and near-duplicates shaped like generated TOUCAN tasks.

- Lengths: log-normal, median 50 words (~280 characters), 3-240 words (the paper's questions
  run from 16 to 1,420 characters).
- Words: 45% from 100 English function words (Zipf), 35% from the first server's own
  150-word topic vocabulary (Zipf: every question of a server reuses its terms), 17% from a
  20,000-word vocabulary (Zipf), 3% numbers. The content words are pseudo-words of English-
  like syllables: what matters to the method is how often words recur, not what they mean.
- Blocks: 1,699 servers. 70% single-server tasks over servers drawn Zipf(`skew`); 30%
  multi-server tasks over 20,000 sets of 2-3 servers drawn Zipf(1).
- Near-duplicates: a `dup_share` of tasks rewrite an earlier task of the same block: 20% are
  exact copies (up to case and punctuation), the rest take 1 to 20% of the words' count in
  edits (substitute, insert or delete a word, or add/drop a plural s), so their ratio to the
  original spans both sides of a 0.9 threshold.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

FUNCTION_WORDS = [
    "the",
    "to",
    "and",
    "a",
    "of",
    "for",
    "i",
    "my",
    "in",
    "is",
    "can",
    "you",
    "on",
    "with",
    "me",
    "what",
    "this",
    "that",
    "it",
    "be",
    "from",
    "at",
    "all",
    "how",
    "are",
    "need",
    "please",
    "find",
    "check",
    "also",
    "if",
    "which",
    "then",
    "by",
    "any",
    "get",
    "show",
    "each",
    "our",
    "their",
    "about",
    "after",
    "before",
    "into",
    "would",
    "like",
    "could",
    "should",
    "will",
    "do",
    "want",
    "help",
    "list",
    "give",
    "tell",
    "make",
    "sure",
    "latest",
    "current",
    "next",
    "last",
    "new",
    "best",
    "top",
    "one",
    "two",
    "three",
    "more",
    "most",
    "other",
    "some",
    "your",
    "its",
    "an",
    "or",
    "as",
    "up",
    "so",
    "out",
    "when",
    "where",
    "who",
    "why",
    "there",
    "them",
    "they",
    "we",
    "us",
]
SYLLABLES = [
    "ba",
    "be",
    "bi",
    "bo",
    "bu",
    "ca",
    "ce",
    "co",
    "da",
    "de",
    "di",
    "do",
    "fa",
    "fe",
    "fi",
    "ga",
    "ge",
    "go",
    "ha",
    "he",
    "hi",
    "ja",
    "ka",
    "ke",
    "ki",
    "la",
    "le",
    "li",
    "lo",
    "lu",
    "ma",
    "me",
    "mi",
    "mo",
    "mu",
    "na",
    "ne",
    "ni",
    "no",
    "pa",
    "pe",
    "pi",
    "po",
    "ra",
    "re",
    "ri",
    "ro",
    "ru",
    "sa",
    "se",
    "si",
    "so",
    "ta",
    "te",
    "ti",
    "to",
    "tu",
    "va",
    "ve",
    "vi",
    "wa",
    "we",
    "za",
    "ze",
    "ing",
    "tion",
    "er",
    "ly",
    "st",
    "nt",
    "rk",
    "sh",
    "ch",
    "th",
]
SERVERS = 1699
TOPIC_WORDS = 150
VOCABULARY = 20_000
SERVER_SETS = 20_000


class Corpus(NamedTuple):
    questions: list[str]
    blocks: list[tuple[str, ...]]  # server ids of each task


def zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return np.cumsum(weights / weights.sum())


def draw(rng: np.random.Generator, cdf: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)


def make_vocabulary(rng: np.random.Generator) -> np.ndarray:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES, size=rng.integers(1, 5))))
    vocabulary = np.array(sorted(words), dtype=object)
    rng.shuffle(vocabulary)
    return vocabulary


def make_blocks(rng: np.random.Generator, count: int, skew: float) -> list[tuple[int, ...]]:
    sizes = rng.integers(2, 4, SERVER_SETS)
    server_sets = [tuple(sorted(set(rng.choice(SERVERS, size=k).tolist()))) for k in sizes]
    single = rng.random(count) < 0.7
    servers = draw(rng, zipf_cdf(SERVERS, skew), count)
    sets = draw(rng, zipf_cdf(SERVER_SETS, 1.0), count)
    return [(int(servers[i]),) if single[i] else server_sets[sets[i]] for i in range(count)]


def make_words(rng: np.random.Generator, topic_of: np.ndarray) -> list[list[str]]:
    """Word lists, one per task, vectorized over the whole corpus."""
    vocabulary = make_vocabulary(rng)
    vocabulary_cdf = zipf_cdf(VOCABULARY, 1.0)
    topics = draw(rng, vocabulary_cdf, (SERVERS, TOPIC_WORDS))
    lengths = np.clip(rng.lognormal(np.log(50), 0.6, len(topic_of)), 3, 240).astype(int)
    owner = np.repeat(topic_of, lengths)
    kind = rng.random(len(owner))
    words = np.empty(len(owner), dtype=object)
    pick = kind < 0.45
    words[pick] = np.array(FUNCTION_WORDS, dtype=object)[
        draw(rng, zipf_cdf(len(FUNCTION_WORDS), 1.0), int(pick.sum()))
    ]
    pick = (kind >= 0.45) & (kind < 0.8)
    topic_rank = draw(rng, zipf_cdf(TOPIC_WORDS, 1.0), int(pick.sum()))
    words[pick] = vocabulary[topics[owner[pick], topic_rank]]
    pick = (kind >= 0.8) & (kind < 0.97)
    words[pick] = vocabulary[draw(rng, vocabulary_cdf, int(pick.sum()))]
    pick = kind >= 0.97
    words[pick] = rng.integers(1, 5000, int(pick.sum())).astype(str).astype(object)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [words[bounds[i] : bounds[i + 1]].tolist() for i in range(len(topic_of))]


def rewrite(rng: np.random.Generator, words: list[str], pool: list[str]) -> list[str]:
    """A near-duplicate of `words`: an exact copy, or 1-20% of its length in word edits."""
    out = list(words)
    if rng.random() < 0.2:
        return out
    for _ in range(max(1, round(rng.uniform(0, 0.2) * len(out)))):
        edit, at = rng.integers(4), int(rng.integers(len(out)))
        if edit == 0:
            out[at] = pool[rng.integers(len(pool))]
        elif edit == 1:
            out.insert(at, pool[rng.integers(len(pool))])
        elif edit == 2 and len(out) > 2:
            del out[at]
        elif edit == 3:
            out[at] = out[at][:-1] if out[at].endswith("s") else out[at] + "s"
    return out


def make_corpus(count: int, seed: int = 0, dup_share: float = 0.1, skew: float = 0.7) -> Corpus:
    """`count` tasks in plan order (see the module docstring for the shape)."""
    rng = np.random.default_rng(seed)
    blocks = make_blocks(rng, count, skew)
    words = make_words(rng, np.array([block[0] for block in blocks]))
    pool = [word for task in words[:1000] for word in task]
    earlier: dict[tuple[int, ...], list[int]] = {}
    rewritten = rng.random(count) < dup_share
    for index, block in enumerate(blocks):
        same_block = earlier.setdefault(block, [])
        if rewritten[index] and same_block:
            base = words[same_block[int(rng.integers(len(same_block)))]]
            words[index] = rewrite(rng, base, pool)
        same_block.append(index)
    questions = [" ".join(task).capitalize() + "?" for task in words]
    server_ids = [tuple(f"server-{number:04d}" for number in block) for block in blocks]
    return Corpus(questions, server_ids)
