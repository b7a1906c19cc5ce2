"""Each metric on inputs whose answer is known by hand; optional metrics record why they were skipped."""
import json
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from conftest import ROOT, write_jsonl
from xsumtune.score import scorer as scorer_module
from xsumtune.score.baselines import lead_1
from xsumtune.score.bertscore import load_bertscorer
from xsumtune.score.bleu import bleu_from_statistics, bleu_statistics
from xsumtune.score.bugs import bug_detectors, copied_from_article
from xsumtune.score.meteor import meteor_scores
from xsumtune.score.properties import novel_ngram_share, repeated_ngram_share, sentence_count, summary_properties
from xsumtune.score.scorer import Scorer, corpus_scores


def test_lead_1_is_the_first_sentence_of_the_first_paragraph():
    assert lead_1("\nFirst one here. Second one.\nNext paragraph.") == "First one here."
    assert lead_1("It cost £3.5m in 2016. Then more.") == "It cost £3.5m in 2016."
    assert lead_1("No full stop at all") == "No full stop at all"


def test_baseline_command_scores_lead_1_of_a_split(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [
        {"id": "1", "document": "A storm hit the coast. Trees fell.", "summary": "A storm hit the coast."},
        {"id": "2", "document": "Rain fell all day. Rivers rose.", "summary": "Rain fell all day."}])
    result = subprocess.run([sys.executable, "-m", "stages.baseline", "--source", str(tmp_path), "--split", "test"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["examples"] == 2 and printed["rouge1"] == pytest.approx(100)
    assert printed["ci95"]["rougeL"] == {"low": 100.0, "high": 100.0}


def test_bleu_identical_is_100_and_summed_statistics_equal_sacrebleu_corpus_bleu():
    same = bleu_statistics(["the cat sat on the mat"], ["the cat sat on the mat"]).sum(0)
    assert bleu_from_statistics(same) == pytest.approx(100)
    predictions = ["the cat sat on the mat", "a dog barked loudly today", "x", ""]
    references = ["the cat sat on a mat", "the dog barked today", "y z", "nothing here"]
    ours = bleu_from_statistics(bleu_statistics(predictions, references).sum(0))
    assert ours == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score, abs=1e-9)
    # by hand: the statistics of one pair are lengths, then matched and total n-grams for n = 1..4
    assert bleu_statistics(["a b c"], ["a b d"]).tolist() == [[3, 3, 2, 1, 0, 0, 3, 2, 1, 0]]


class NoSynonyms:
    """A WordNet stand-in with no synonyms: METEOR then matches exact words and stems only."""

    def synsets(self, word, *args, **kwargs):
        return []


def test_meteor_by_hand():
    # identical, 6 words in one chunk: Fmean 1, penalty 0.5 * (1/6)^3
    same = meteor_scores(["the cat sat on the mat"], ["the cat sat on the mat"], NoSynonyms())[0]
    assert same == pytest.approx(100 * (1 - 0.5 / 216))
    # 2 of 6 reference words: P 1, R 1/3, Fmean = PR / (0.9 P + 0.1 R); one chunk of 2: penalty 0.5 * (1/2)^3
    # (no repeated word in the reference: nltk may align a repeated one to its later copy, splitting the chunk)
    fmean = (1 / 3) / (0.9 + 0.1 / 3)
    part = meteor_scores(["the cat"], ["the cat sat on a mat"], NoSynonyms())[0]
    assert part == pytest.approx(100 * fmean * (1 - 0.0625))
    assert meteor_scores([""], ["the cat"], NoSynonyms()) == [0.0]


def test_summary_properties_by_hand():
    assert novel_ngram_share("The cat sat", "the cat ran", 1) == pytest.approx(1 / 3)
    assert novel_ngram_share("The cat sat", "the cat ran", 2) == pytest.approx(1 / 2)
    assert novel_ngram_share("one", "whatever", 2) is None
    assert repeated_ngram_share("a b c a b c") == pytest.approx(1 / 4)  # abc bca cab abc: one repeat of 4
    assert sentence_count("He left. She stayed.") == 2 and sentence_count(" . ") == 0
    properties = summary_properties(["one two", "three. Four five."], ["a b c d e f g h i j", "three four five six"])
    assert properties["compression_ratio"] == pytest.approx((10 / 2 + 4 / 3) / 2, abs=1e-4)
    assert properties["one_sentence_rate"] == 0.5
    assert properties["words"]["mean"] == 2.5


def test_bug_detectors_by_hand():
    documents = ["The council met on Monday. It voted.", "A storm hit.", "Rain fell.", "Snow."]
    predictions = ["the council met", "", "Rain fell. Then snow.", "."]
    detectors = bug_detectors(predictions, documents, [True, False, False, False], [None, "boom", None, None],
                              [False, False, True, True])
    assert detectors == {"failed": 0.25, "cut_by_cap": 0.25, "leading_newline": 0.5, "empty": 0.5,
                         "multi_sentence": 0.25, "copied_from_article": 0.25}
    assert copied_from_article("Council met", "the council met today")
    assert not copied_from_article("council today", "the council met today")  # both words, not contiguous
    assert set(bug_detectors(predictions, documents)) == {"empty", "multi_sentence", "copied_from_article"}


def test_corpus_scores_carry_an_interval_for_every_figure():
    scores = {"rouge1": np.array([10.0, 20.0, 30.0, 40.0]), "rouge2": np.array([0.0, 5.0, 5.0, 10.0])}
    stats = bleu_statistics(["the cat sat", "a b", "c d e f", "x"], ["the cat sat", "a c", "c d e g", "y"])
    result = corpus_scores(scores, stats, resamples=200, seed=0)
    assert result["rouge1"] == 25.0 and set(result["ci95"]) == {"rouge1", "rouge2", "bleu"}
    for key in ("rouge1", "rouge2", "bleu"):
        assert result["ci95"][key]["low"] <= result[key] <= result["ci95"][key]["high"]


class MissingWordNet:
    """What nltk's lazy WordNet loader does when the data isn't installed."""

    def ensure_loaded(self):
        raise LookupError("Resource wordnet not found")


def test_missing_wordnet_and_scoring_model_are_skipped_with_a_reason(monkeypatch, tmp_path):
    import nltk.corpus

    monkeypatch.setattr(nltk.corpus, "wordnet", MissingWordNet())
    scorer = Scorer(bertscore_model=None)
    assert "WordNet" in scorer.skipped["meteor"] and "score.bertscore_model" in scorer.skipped["bertscore"]
    assert set(scorer.per_example(["a b"], ["a b"])) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert "no such directory" in Scorer(bertscore_model=str(tmp_path / "absent")).skipped["bertscore"]
    (tmp_path / "empty").mkdir()
    assert "cannot load" in Scorer(bertscore_model=str(tmp_path / "empty")).skipped["bertscore"]


def test_meteor_runs_when_wordnet_is_there(monkeypatch):
    monkeypatch.setattr(scorer_module, "load_wordnet", lambda: (NoSynonyms(), None))
    scorer = Scorer()
    assert "meteor" not in scorer.skipped
    assert scorer.per_example(["the cat"], ["the cat sat on a mat"])["meteor"][0] == pytest.approx(33.4821, abs=1e-3)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 1-layer BERT with random weights and the Phi-2 tokenizer: enough to check the matching."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from conftest import TOKENIZER_DIR

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_bertscore_of_identical_text_is_100_and_empty_is_0(tiny_bert_dir):
    scorer, skipped = load_bertscorer(tiny_bert_dir, layer=1, batch_size=2)
    assert skipped is None
    result = scorer.score(["The council met on Monday.", "", "A storm hit the coast."],
                          ["The council met on Monday.", "A storm.", "Rain fell inland all day."])
    assert result["bertscore_f1"][0] == pytest.approx(100, abs=1e-3)
    assert result["bertscore_precision"][0] == pytest.approx(100, abs=1e-3)
    assert result["bertscore_f1"][1] == 0
    assert result["bertscore_f1"][2] < 100
    too_deep, reason = load_bertscorer(tiny_bert_dir, layer=3, batch_size=2)
    assert too_deep is None and "layer 3" in reason
