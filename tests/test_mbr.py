"""Minimum Bayes risk: agreement is rouge-score's own ROUGE-1/2/L F1, and the pick is the consensus candidate."""
import random

import pytest
from rouge_score import rouge_scorer

from conftest import ROOT
from xsumtune.data.sources import Report, load_split
from xsumtune.generate.generation import decode_new_tokens, generate_batch, generate_summaries, plan_batches
from xsumtune.generate.mbr import agreement, select


def test_agreement_is_rouge_scores_mean_f1_either_way_round():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:40]
    texts = [row["summary"] for row in rows] + ["", "The", "the the the cats ran", "cat running the"]
    pairs = random.Random(0).sample([(a, b) for a in texts for b in texts], 300) + [(texts[0], texts[0])]
    for a, b in pairs:
        scores = scorer.score(a, b)
        expected = sum(scores[key].fmeasure for key in ("rouge1", "rouge2", "rougeL")) / 3
        assert agreement(a, b) == pytest.approx(expected, abs=1e-12)
        assert agreement(b, a) == pytest.approx(expected, abs=1e-12)


def test_select_keeps_the_candidate_the_others_agree_with_most():
    middle = "police have charged a man after a fire at a school in leeds"
    candidates = ["a man was charged after a fire at a leeds school",
                  "nothing at all like the rest of them",
                  middle,
                  "police charged a man over a fire at a school"]
    assert select(candidates) == 2
    assert select(["same words here", "other text", "same words here"]) == 0  # a tie: the first
    assert select(["only one"]) == 0
    with pytest.raises(ValueError):
        select([])


@pytest.fixture(scope="module")
def model():
    from conftest import tiny_random_model

    return tiny_random_model(seed=5)


def test_each_article_gets_one_of_its_own_candidates(model, tokenizer):
    """Batched MBR over 4 beams: each article's pick is one of the 4 beams that article alone returns, and
    the pick is the one select() makes among them: candidates never cross from one article to another."""
    from xsumtune.data.tokenization import PromptEncoder

    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:6]
    encoder = PromptEncoder(tokenizer, "direct")
    prompts = [{"id": r["id"], "prompt_ids": encoder.encode_prompt(r["document"], 20 + 15 * i)[0]}
               for i, r in enumerate(rows)]
    options = dict(num_beams=4, do_sample=False)
    picked = generate_summaries(model, tokenizer, prompts, batch_size=12, max_new_tokens=8, candidates=4, **options)
    assert [g.id for g in picked] == [p["id"] for p in prompts]
    for prompt, chosen in zip(prompts, picked):
        alone = generate_batch(model, tokenizer, [prompt["prompt_ids"]], max_new_tokens=8,
                               num_return_sequences=4, **options)
        assert len(alone) == 4 and chosen.error is None
        decoded = [decode_new_tokens(tokenizer, out, tokenizer.eos_token_id, 8) for out in alone]
        pick = select([d.prediction for d in decoded])
        assert chosen.prediction == decoded[pick].prediction
        assert list(chosen.token_ids) == alone[pick][:decoded[pick].tokens]


def test_candidates_count_against_the_rows_and_the_token_budget():
    lengths = [100, 90, 80, 70, 60, 50]
    plan = plan_batches(lengths, batch_size=8, token_budget=None, max_new_tokens=10, sort_by_length=True, copies=4)
    assert [len(b) for b in plan] == [2, 2, 2]
    plan = plan_batches(lengths, batch_size=64, token_budget=1000, max_new_tokens=10, sort_by_length=True, copies=4)
    assert all(len(b) * 4 * (max(lengths[i] for i in b) + 10) <= 1000 for b in plan)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert plan_batches(lengths, batch_size=2, token_budget=None, max_new_tokens=10, sort_by_length=True, copies=4) \
        == [[i] for i in range(6)]  # more candidates than rows: one article a batch, never none
