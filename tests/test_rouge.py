"""ROUGE reproduces published per-summary scores; `stages.score` uses the same code."""
import csv
import json
import subprocess
import sys

import pytest
from rouge_score import rouge_scorer

from conftest import ROOT
from xsumtune.score.rouge import score_corpus, score_pair, split_sentences

FIXTURES = ROOT / "tests" / "fixtures" / "rouge-known-answers"
SYSTEMS = {"bert_withckpt": "BERTS2S", "bert_nockpt": "TranS2S", "ptgen": "PtGen", "tconvs2s": "TConvS2S"}


def known_answers(system=None):
    """(prediction, gold reference, published R1/R2/RL) for each scored summary, of one system or all."""
    texts = {}
    with open(FIXTURES / "hallucination_annotations_xsum_summaries.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            texts.setdefault((row["bbcid"], row["system"]), row["summary"])  # one row per annotator
    with open(FIXTURES / "eval_scores_xsum_summaries.csv", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            name, bbcid = row["system_bbcid"].rsplit("_", 1)
            if system in (None, SYSTEMS[name]):
                yield texts[(bbcid, SYSTEMS[name])], texts[(bbcid, "Gold")], \
                    tuple(float(row[k]) for k in ("R1", "R2", "RL"))


def test_published_scores_are_reproduced():
    answers = list(known_answers())
    assert len(answers) == 1992
    matched = 0
    for prediction, reference, published in answers:
        ours = score_pair(prediction, reference)
        mine = (ours["rouge1"] / 100, ours["rouge2"] / 100, ours["rougeL"] / 100)
        matched += all(abs(a - b) <= 0.005 for a, b in zip(mine, published))
    # the rest differ by stemming: the published scores are ROUGE-1.5.5's, whose -m maps WordNet's irregular
    # forms (been -> be) before Porter; the rouge155 stemmer reproduces every one (test_rouge_perl.py)
    assert matched >= 1800


def test_equals_rouge_score_directly():
    """The porter stemmer is rouge-score's own, as Hugging Face evaluate scores."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for prediction, reference, _ in list(known_answers())[:200]:
        direct = scorer.score(reference, prediction)
        ours = score_pair(prediction, reference, "porter")
        for key in ("rouge1", "rouge2", "rougeL"):
            assert ours[key] == pytest.approx(direct[key].fmeasure * 100, abs=1e-9)


def test_rouge155_stems_as_perl_rouge_does():
    # WordNet's irregular forms (children -> child, were and been -> be, found -> find), then Porter (finding ->
    # find): the 3 words match 3 of the reference's 5, P = 1, R = 0.6, F1 = 75; rouge-score's Porter matches none.
    # test_rouge_perl.py checks rouge155 against the Perl itself.
    assert score_pair("children were found", "a child has been finding", "rouge155")["rouge1"] == pytest.approx(75.0)
    assert score_pair("children were found", "a child has been finding", "porter")["rouge1"] == 0.0
    assert score_pair("children were found", "a child has been finding")["rouge1"] == 0.0  # porter by default
    with pytest.raises(ValueError, match="unknown ROUGE stemmer 'snowball'; choose from"):
        score_pair("a", "a", "snowball")


def test_known_values_by_hand():
    assert score_pair("the cat sat", "the cat sat")["rouge1"] == pytest.approx(100.0)
    assert score_pair("", "the cat sat")["rouge1"] == 0.0
    # unigram overlap 2 of 3 both ways: P = R = F = 2/3; stemming makes "cats" match "cat"
    assert score_pair("the cats ran", "the cat sat")["rouge1"] == pytest.approx(200 / 3)
    means, per_example = score_corpus(["the cat sat", ""], ["the cat sat", "a dog"])
    assert means["rouge1"] == pytest.approx(50.0) and len(per_example) == 2


def test_sentence_split_for_rouge_lsum():
    assert split_sentences("He left. She stayed! Did it rain? Yes.") == "He left.\nShe stayed!\nDid it rain?\nYes."
    assert split_sentences("It cost £3.5m in 2016.") == "It cost £3.5m in 2016."


def run_score(predictions, references):
    return subprocess.run([sys.executable, "-m", "stages.score", "--predictions", str(predictions),
                           "--references", str(references)], cwd=ROOT, capture_output=True, text=True)


def test_score_command_reproduces_known_answers(tmp_path):
    answers = list(known_answers())[:300]
    (tmp_path / "pred.txt").write_text("".join(p + "\n" for p, _, _ in answers))
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for _, r, _ in answers))
    result = run_score(tmp_path / "pred.txt", tmp_path / "ref.txt")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected, _ = score_corpus([p for p, _, _ in answers], [r for _, r, _ in answers])
    assert printed == expected
    published_r1 = 100 * sum(s[0] for _, _, s in answers) / len(answers)
    assert printed["rouge1"] == pytest.approx(published_r1, abs=0.5)

    rows = [{"prediction": p, "reference": r} for p, r, _ in answers]
    (tmp_path / "both.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    from_jsonl = run_score(tmp_path / "both.jsonl", tmp_path / "both.jsonl")
    assert json.loads(from_jsonl.stdout) == printed


def test_score_command_stems_as_rouge155_when_asked(tmp_path):
    """--stemmer rouge155 gives the published known answers' mean: they are ROUGE-1.5.5's."""
    from click.testing import CliRunner

    from stages.score import main

    answers = list(known_answers())[:300]
    (tmp_path / "pred.txt").write_text("".join(p + "\n" for p, _, _ in answers))
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for _, r, _ in answers))
    # in this process: a second interpreter would spend longer importing than scoring
    result = CliRunner().invoke(main, ["--predictions", str(tmp_path / "pred.txt"), "--references",
                                       str(tmp_path / "ref.txt"), "--stemmer", "rouge155"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    for index, key in enumerate(("rouge1", "rouge2", "rougeL")):
        assert printed[key] == pytest.approx(100 * sum(s[index] for _, _, s in answers) / len(answers), abs=0.01)


def test_score_command_rejects_unpaired_files(tmp_path):
    (tmp_path / "pred.txt").write_text("a\nb\n")
    (tmp_path / "ref.txt").write_text("a\n")
    result = run_score(tmp_path / "pred.txt", tmp_path / "ref.txt")
    assert result.returncode != 0
    assert "2 predictions but 1 references" in result.stderr and "Traceback" not in result.stderr
