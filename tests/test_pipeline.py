"""The default profile end to end: `dvc repro` in a temporary copy of the repository, then `dvc exp show`."""
import json
import os
import sys

import pytest
import yaml

from repo_copy import copy_tree, dvc, run

pytestmark = pytest.mark.slow  # dvc in a copy of the repository


@pytest.fixture(scope="module")
def repo(tmp_path_factory, reproduced_tiny):
    """A copy of the committed tree (plus working changes) as its own git repository, after `dvc repro`
    of the shrunk tiny profile (conftest's reproduced_tiny)."""
    return copy_tree(reproduced_tiny, tmp_path_factory.mktemp("pipeline") / "repo")


def test_default_profile_repro_writes_metrics(repo):
    metrics = json.loads((repo / "metrics" / "score.json").read_text())
    test_size = yaml.safe_load((repo / "params.yaml").read_text())["data"]["test_size"]
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(metrics)
    assert metrics["generation"]["failed"] == 0
    assert metrics["generation"]["total"] == test_size
    for system in (metrics, metrics["zero_shot"], metrics["lead_1"]):
        assert {"rouge1", "rougeL", "bleu", "ci95", "summary", "bugs"} <= set(system)
        assert system["ci95"]["rougeL"]["low"] <= system["rougeL"] <= system["ci95"]["rougeL"]["high"]
    assert metrics["lead_1"]["rouge1"] > 10  # the first sentence shares words with any XSum reference
    for baseline in ("zero_shot", "lead_1"):
        assert {"abs", "rel_pct", "low", "high", "p_value", "wins"} <= set(metrics[f"gain_over_{baseline}"]["rouge1"])
    for optional in ("meteor", "bertscore"):  # scored, or the reason it wasn't
        assert optional in metrics["skipped"] or any(key.startswith(optional) for key in metrics)
    predictions = [json.loads(line) for line in (repo / "metrics" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == test_size and len({p["id"] for p in predictions}) == test_size
    assert {"id", "reference", "prediction", "rouge1", "rougeL", "lead_1_prediction"} <= set(predictions[0])
    report = (repo / "reports" / "evaluation.md").read_text()
    assert "| lead-1 |" in report and "## Worst examples" in report
    sheet = (repo / "reports" / "human_eval.csv").read_text().splitlines()[0]
    assert sheet == "id,document,prediction,rater,relevance,fluency,factuality,conciseness"
    stats = json.loads((repo / "metrics" / "preprocess.json").read_text())
    assert stats["test"]["examples"] == test_size and "dropped" in stats
    train = json.loads((repo / "metrics" / "train" / "metrics.json").read_text())
    assert {"train_loss", "eval_loss", "eval_perplexity"} <= set(train)
    assert (repo / "models" / "adapter" / "adapter_model.safetensors").exists()
    generations = sorted(p.name for p in (repo / "metrics" / "generations").iterdir())
    assert generations == ["fine_tuned.jsonl", "zero_shot.jsonl"]  # text and counts only: no score in them
    assert not {"rouge1", "reference"} & set(json.loads((repo / "metrics" / "generations" / generations[0])
                                                        .read_text().splitlines()[0]))

    # a second repro has nothing to do
    assert "Stage 'score' didn't change" in dvc("repro", cwd=repo).stdout
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    workspace = shown[0]["rev"] == "workspace" and shown[0]["data"]["metrics"]
    headline = workspace["metrics/headline.json"]["data"]
    assert headline["fine_tuned"]["rougeL"] == round(metrics["rougeL"], 2)
    assert headline["gain_over_lead_1"]["p"] == round(metrics["gain_over_lead_1"]["rougeL"]["p_value"], 4)
    assert headline["loss"] == {"train": round(train["train_loss"], 4), "eval": round(train["eval_loss"], 4)}
    assert set(workspace) == {"metrics/headline.json"}  # the long tail is plain JSON beside it
    table = dvc("exp", "show", "--no-pager", "--md", cwd=repo).stdout
    for column in ("fine_tuned.rouge1", "zero_shot.rouge2", "lead_1.rougeL", "gain_over_lead_1.p",
                   "fine_tuned.failed", "fine_tuned.empty", "loss.eval", "generate.num_beams",
                   "score.bootstrap_resamples"):
        assert column in table
    # the headline is one small row, and no declared metrics file is missing
    shown = dvc("metrics", "show", cwd=repo)
    assert "failed to load" not in shown.stdout + shown.stderr
    assert [line.split()[0] for line in shown.stdout.splitlines()] == ["Path", "metrics/headline.json"]
    assert len(shown.stdout.split()) == 2 * (1 + sum(map(len, headline.values()))), shown.stdout
    # at a 120-column terminal the fine-tuned model's figures read in full, after the documented --keep
    narrow = dvc("exp", "show", "--no-pager", "--drop", ".*", "--keep", "Experiment|fine_tuned", cwd=repo,
                 env={**os.environ, "COLUMNS": "120"}).stdout
    assert max(map(len, narrow.splitlines())) <= 120 and "fine_tuned.rougeL" in narrow, narrow
    assert f"{headline['fine_tuned']['rougeL']:g}" in narrow, narrow
    plots = json.loads(dvc("plots", "show", "--json", cwd=repo).stdout)
    assert {"ROUGE-L by system", "Summary length (words, bins of 5)", "Loss"} <= set(plots["data"])
    assert "errors" not in plots

    # decoding is generate's alone: changing any of it reruns generate (then score and report), never
    # preprocess or train; scoring is score's alone: changing any of it reruns score (then report), never
    # generate. `dvc status` lists the stage whose params changed; what follows reruns when its inputs change.
    from dvc.repo import Repo  # in-process: one `dvc status` per key costs no interpreter start

    params = (repo / "params.yaml").read_text()
    for section, key, value in [("generate", "num_beams", 2), ("generate", "no_repeat_ngram_size", 3),
                                ("generate", "length_penalty", 0.5), ("generate", "max_new_tokens", 30),
                                ("generate", "do_sample", True), ("generate", "sample_seed", 7),
                                ("score", "bootstrap_resamples", 200), ("score", "bootstrap_seed", 1),
                                ("score", "rouge_stemmer", "rouge155"), ("score", "bertscore_layer", 3),
                                ("score", "bertscore_batch_size", 8)]:
        edited = yaml.safe_load(params)
        edited[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(edited))
        with Repo(str(repo)) as dvc_repo:  # from another directory, stages are named "<dvc.yaml path>:<stage>"
            assert {name.rsplit(":", 1)[-1] for name in dvc_repo.status()} == {section}, key
    (repo / "params.yaml").write_text(params)

    # the paired comparison between a revision and a file: the same predictions, so no difference
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-qm", "repro"], repo)
    same = run([sys.executable, "-m", "stages.compare", "--baseline", "HEAD", "--candidate",
                "metrics/predictions.jsonl", "--output", "same.json"], repo)
    assert "| rougeL |" in same.stdout
    assert json.loads((repo / "same.json").read_text())["rougeL"]["p_value"] == 1.0
    run([sys.executable, "-m", "stages.compare", "--baseline", "HEAD", "--baseline-field", "lead_1_prediction",
                "--candidate", "metrics/predictions.jsonl", "--output", "lead.json"], repo)
    assert json.loads((repo / "lead.json").read_text())["rougeL"]["abs"] == metrics["gain_over_lead_1"]["rougeL"]["abs"]

    # a scoring param reruns score and report, and regenerates nothing
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["score"]["bootstrap_resamples"] = 200
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(dvc("status", "--json", cwd=repo).stdout)) == {"score"}
    rerun = dvc("repro", cwd=repo).stdout
    assert "Running stage 'score'" in rerun and "Running stage 'report'" in rerun, rerun
    assert "Running stage 'generate'" not in rerun and "Stage 'generate' didn't change" in rerun

    # a param that only generate reads reruns generate, then what follows it
    params["generate"]["max_new_tokens"] = 30
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(dvc("status", "--json", cwd=repo).stdout)) == {"generate"}


def write_source(repo, lines: bytes):
    (repo / "bad").mkdir(exist_ok=True)
    (repo / "bad" / "test.jsonl").write_bytes(lines)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="bad", train_split="test", validation_split="test", train_size=1,
                          validation_size=1, test_size=None)
    path = repo / "bad" / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("lines, message", [
    (b'{"id": "1", "document": "d", "summary": "s"}\n{"id": "2", "document": "d"}\n',
     "bad/test.jsonl: row 2: field 'summary': missing"),
    (b'{"id": "1", "document": "d", "summary": "s"}\n{"id": "2", "document": "\xff", "summary": "s"}\n',
     "bad/test.jsonl: row 2: field '-': not UTF-8"),
])
def test_preprocess_bad_input_is_one_clear_line_and_no_output(repo, lines, message):
    params = write_source(repo, lines)
    out = repo / "bad" / "processed"
    result = run([sys.executable, "-m", "stages.preprocess", "--params", str(params), "--out-dir", str(out),
                  "--stats", str(repo / "bad" / "stats.json")], repo, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (repo / "bad" / "stats.json").exists()


def test_unknown_params_key_stops_the_stage(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epoch"] = 2
    (repo / "typo.yaml").write_text(yaml.safe_dump(params))
    result = run([sys.executable, "-m", "stages.train", "--params", "typo.yaml", "--train-data", "x",
                  "--validation-data", "x", "--adapter-dir", "a", "--live-dir", "l", "--checkpoint-dir", "c"],
                 repo, check=False)
    assert result.returncode == 1 and "unknown key train.epoch" in result.stderr
    assert "Traceback" not in result.stderr
