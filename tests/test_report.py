"""The markdown report and plot data, built from a small evaluation."""
import re
import subprocess
import sys

import pytest
from matplotlib.image import imread

from conftest import ROOT, tiny
from xsumtune.data.sources import Report, load_split
from xsumtune.report.figures import read_loss_curves, write_figures
from xsumtune.generate.records import Generated
from xsumtune.report.markdown import pick_examples, render
from xsumtune.score.plots import length_histogram, rouge_by_system
from xsumtune.score.systems import score_systems


def evaluation():
    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:12]
    # half the articles get their own reference, half a wrong one: clear best and worst examples
    predictions = [row["summary"] if i % 2 else "Nothing to do with it." for i, row in enumerate(rows)]
    generated = {"fine_tuned": [Generated(r["id"], p, 10, False) for r, p in zip(rows, predictions)],
                 "zero_shot": [Generated(r["id"], "", 0, False) for r in rows]}
    metrics, records = score_systems(tiny("score", bootstrap_resamples=50), rows, generated)
    return metrics, records, {row["id"]: row["document"] for row in rows}


def test_report_shows_every_system_and_the_best_worst_and_random_examples():
    metrics, records, documents = evaluation()
    text = render(metrics, records, documents, count=2, seed=0)
    for heading in ("| fine-tuned |", "| zero-shot |", "| lead-1 |", "## Best examples", "## Worst examples",
                    "## Random examples", "## Bug detectors", "## Skipped metrics", "| references |"):
        assert heading in text
    best, worst = text.split("## Best examples")[1], text.split("## Worst examples")[1]
    assert "ROUGE-1/2/L 100.0 / 100.0 / 100.0" in best.split("## Worst")[0]
    assert "**Fine-tuned**: Nothing to do with it." in worst.split("## Random")[0]
    assert "**Zero-shot**: *(empty)*" in text
    # zero-shot wrote nothing, so lead-1 is the bar; the line sits under the systems table
    gain = metrics["gain_over_lead_1"]["rougeL"]
    bar = (f"The stronger baseline here is lead-1 (ROUGE-L {metrics['lead_1']['rougeL']:.2f}; zero-shot 0.00): the "
           f"fine-tuned model's gain over it is {gain['abs']:+.2f} ROUGE-L [{gain['low']:+.2f}, {gain['high']:+.2f}], "
           f"p={gain['p_value']:.4f}.")
    assert text.split("| lead-1 |")[1].split("\n")[2] == bar
    metrics["zero_shot"]["rougeL"] = 99.0  # now zero-shot is the bar
    assert "The stronger baseline here is zero-shot (ROUGE-L 99.00; lead-1 " in render(metrics, records, documents, 2, 0)
    picked = pick_examples(records, 3, seed=0)
    assert [r["rougeL"] for r in picked["Best"]] == [100.0] * 3 and picked["Random"] == pick_examples(records, 3, 0)["Random"]


def test_plot_data():
    metrics, records, _ = evaluation()
    assert [row["system"] for row in rouge_by_system(metrics)] == ["fine-tuned", "zero-shot", "lead-1"]
    histogram = length_histogram(records)
    assert sum(b["prediction"] for b in histogram) == sum(b["reference"] for b in histogram) == len(records)
    assert [b["words"] for b in histogram] == list(range(0, 5 * len(histogram), 5))


def test_figures_are_png_files_the_report_links_to(tmp_path):
    metrics, records, documents = evaluation()
    live = tmp_path / "live"
    (live / "train").mkdir(parents=True)
    (live / "train" / "loss.tsv").write_text("step\tloss\n2\t10.9\n4\t10.7\n")
    links = write_figures(metrics, length_histogram(records), read_loss_curves(live), tmp_path / "reports" / "figures",
                          tmp_path / "reports")
    assert links == {"ROUGE by system": "figures/rouge.png", "Summary length": "figures/lengths.png",
                     "Loss": "figures/loss.png"}
    for path in links.values():
        image = imread(tmp_path / "reports" / path)  # a PNG that decodes, of the size drawn
        assert image.shape[:2] == (400, 700)
    text = render(metrics, records, documents, count=2, seed=0, figures=links)
    assert "![ROUGE by system](figures/rouge.png)" in text and "![Loss](figures/loss.png)" in text
    assert text.index("![ROUGE by system]") < text.index("## Best examples")


def test_no_logged_loss_gives_no_loss_figure(tmp_path):
    metrics, records, _ = evaluation()
    curves = read_loss_curves(tmp_path / "no-such-dir")
    assert curves == {}
    links = write_figures(metrics, length_histogram(records), curves, tmp_path / "figures", tmp_path)
    assert "Loss" not in links and sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["lengths.png", "rouge.png"]


@pytest.mark.slow
def test_dvc_plot_pages_open_offline(tmp_path):
    """`dvc plots show` fills .dvc/offline-plots.html: vega inlined, no script fetched from the network."""
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "vegaEmbed('#" in page  # the plots are there
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)  # and every script with them
    for library in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):
        assert f"/* {library} (BSD-3-Clause" in page
