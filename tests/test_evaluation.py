"""The generate and score stages' logic: decoding params reach `generate`, predictions stay with their article,
lead-1 is scored."""
import random

import pytest

from conftest import ROOT, tiny
from xsumtune.data.sources import Report, load_split
from xsumtune.generate.records import Generated
from xsumtune.generate.systems import decoding_options
from xsumtune.score.systems import score_systems


@pytest.fixture(scope="module")
def rows():
    return load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:30]


def test_decoding_options_pass_only_what_the_mode_uses():
    assert decoding_options(tiny("generate")) == {"num_beams": 1, "do_sample": False, "min_new_tokens": 1}
    assert decoding_options(tiny("generate", min_new_tokens=0)) == {"num_beams": 1, "do_sample": False}
    beams = tiny("generate", num_beams=4, length_penalty=0.8, no_repeat_ngram_size=3, min_new_tokens=0)
    assert decoding_options(beams) == {"num_beams": 4, "do_sample": False, "length_penalty": 0.8,
                                       "no_repeat_ngram_size": 3}
    sampling = tiny("generate", do_sample=True, temperature=0.7, top_p=0.9, min_new_tokens=0)
    assert decoding_options(sampling) == {"num_beams": 1, "do_sample": True, "temperature": 0.7, "top_p": 0.9}


def test_generations_in_any_order_stay_with_their_article(rows):
    """Each article's own reference as the fine-tuned prediction: any mix-up would lower ROUGE below 100."""
    generated = [Generated(row["id"], row["summary"], 20, False) for row in rows]
    random.Random(0).shuffle(generated)
    metrics, records = score_systems(tiny("score", bootstrap_resamples=50), rows, {"fine_tuned": generated})
    assert metrics["rouge1"] == pytest.approx(100) and metrics["ci95"]["rouge1"] == {"low": 100.0, "high": 100.0}
    assert [r["id"] for r in records] == [row["id"] for row in rows]
    assert all(r["prediction"] == r["reference"] for r in records)
    with pytest.raises(RuntimeError, match="different set of ids"):
        score_systems(tiny("score"), rows, {"fine_tuned": generated[1:]})


def test_every_system_gets_the_same_figures_and_gains_over_each_baseline(rows):
    fine_tuned = [Generated(r["id"], r["summary"], 20, False) for r in rows]
    zero_shot = [Generated(r["id"], r["document"][:200], 60, True, leading_newline=i % 2 == 0)
                 for i, r in enumerate(rows)]
    metrics, records = score_systems(tiny("score", bootstrap_resamples=100), rows,
                                        {"fine_tuned": fine_tuned, "zero_shot": zero_shot})
    for system in (metrics, metrics["zero_shot"], metrics["lead_1"]):
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "ci95", "summary", "bugs"} <= set(system)
        assert system["ci95"]["rougeL"]["low"] <= system["rougeL"] <= system["ci95"]["rougeL"]["high"]
    assert metrics["zero_shot"]["bugs"]["cut_by_cap"] == 1.0 and "cut_by_cap" not in metrics["lead_1"]["bugs"]
    assert metrics["zero_shot"]["bugs"]["leading_newline"] == 0.5 and metrics["bugs"]["leading_newline"] == 0.0
    assert "leading_newline" not in metrics["lead_1"]["bugs"]
    assert metrics["lead_1"]["bugs"]["copied_from_article"] == 1.0
    for baseline in ("zero_shot", "lead_1"):
        gain = metrics[f"gain_over_{baseline}"]["rouge1"]
        assert gain["abs"] == pytest.approx(metrics["rouge1"] - metrics[baseline]["rouge1"], abs=1e-3)
        assert gain["low"] > 0 and gain["p_value"] < 0.05 and gain["wins"] == len(rows)
    assert {"meteor", "bertscore"} <= set(metrics["skipped"]) or "meteor" in metrics
    assert records[0]["lead_1_prediction"] and records[0]["zero_shot_prediction"] == zero_shot[0].prediction


def test_rouge_stemmer_reaches_every_score():
    """score.rouge_stemmer: rouge155 matches WordNet's irregular forms (children -> child, were, been -> be)."""
    rows = [{"id": str(i), "document": "Nothing in common.", "summary": "A child has been finding it."} for i in range(3)]
    generated = [Generated(row["id"], "Children were found.", 5, False) for row in rows]
    metrics, records = score_systems(tiny("score", bootstrap_resamples=10, rouge_stemmer="rouge155"), rows,
                                        {"fine_tuned": generated})
    # 3 of 3 predicted words match 3 of the reference's 6; rouge-score's Porter would match none
    assert metrics["rouge1"] == records[0]["rouge1"] == pytest.approx(200 / 3)
    assert metrics["gain_over_lead_1"]["rouge1"]["abs"] == pytest.approx(200 / 3)


@pytest.fixture(scope="module")
def tiny_model():
    from conftest import tiny_random_model

    return tiny_random_model(seed=0)


@pytest.mark.parametrize("config", [
    tiny("generate", num_beams=3, length_penalty=0.5, no_repeat_ngram_size=2),
    tiny("generate", do_sample=True, temperature=0.7, top_p=0.9, sample_seed=1),
], ids=["beams", "sampling"])
def test_decoding_options_generate_and_sampling_is_seeded(config, rows, tokenizer, tiny_model):
    from xsumtune.generate.generation import generate_summaries
    from xsumtune.data.tokenization import PromptEncoder

    model = tiny_model
    encoder = PromptEncoder(tokenizer, "direct")
    prompts = [{"id": r["id"], "prompt_ids": encoder.encode_prompt(r["document"], 40)[0]} for r in rows[:3]]

    def generate():
        return generate_summaries(model, tokenizer, prompts, batch_size=3, max_new_tokens=6,
                                  seed=config.sample_seed, **decoding_options(config))

    first = generate()
    assert all(g.error is None for g in first) and [g.id for g in first] == [p["id"] for p in prompts]
    assert generate() == first
