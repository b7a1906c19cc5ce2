"""bench/common.idle_gaps and gpu_time: where the GPU sat idle and how long it worked, read from a profiler's
event records."""
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import gpu_time, idle_gaps  # noqa: E402


def event(kind: str, start: float, end: float, name: str, annotation: bool = False):
    """One record as torch.profiler's events() gives it: device type, time range (microseconds), name, and
    whether it is a record_function range (on the device too, where it spans the work queued inside it)."""
    return SimpleNamespace(device_type=SimpleNamespace(name=kind), time_range=SimpleNamespace(start=start, end=end),
                           name=name, is_user_annotation=annotation)


def test_idle_gaps_sums_the_union_of_kernels_and_names_the_innermost_range_of_each_gap():
    """Kernels only: the ranges' own records on the device (which span the gaps inside them) are not work."""
    events = [
        event("CUDA", 0, 10, "a"), event("CUDA", 5, 20, "b"),  # overlapping: busy 0-20
        event("CUDA", 30, 40, "c"),                            # 10 us idle inside capture (inside prefill)
        event("CUDA", 1040, 1050, "d"),                        # 1,000 us idle between the ranges
        event("CUDA", 1060, 1070, "e"),                        # 10 us idle inside decode
        event("CPU", 0, 45, "prefill"), event("CPU", 25, 35, "capture"), event("CPU", 1050, 2000, "decode"),
        event("CPU", 0, 2000, "not a range asked for"),
        event("CUDA", 0, 45, "prefill", annotation=True), event("CUDA", 1040, 1070, "decode", annotation=True),
    ]
    lines = idle_gaps(events, ("prefill", "capture", "decode")).splitlines()
    assert lines[0] == ("GPU busy 0.000 s of 0.001 s from the first kernel to the last (4.7%); "
                        "idle 0.001 s in 3 gaps")
    assert lines[1].startswith("  idle within outside: 0.001 s in 1 gaps (longest 1.00 ms)")
    assert {line.split(":")[0].strip() for line in lines[2:4]} == {"idle within capture", "idle within decode"}
    assert lines[5].split() == ["0.0", "1.00", "c", "->", "d"]  # the longest gap first, with its kernels


def test_idle_gaps_without_kernels_says_so():
    assert idle_gaps([event("CPU", 0, 5, "prefill")], ("prefill",)) == "no kernels recorded\n"


def test_gpu_time_counts_kernels_not_the_ranges_around_them():
    averages = [SimpleNamespace(device_type=SimpleNamespace(name=kind), is_user_annotation=annotation,
                                self_device_time_total=us, count=count)
                for kind, annotation, us, count in (("CUDA", False, 2e6, 10), ("CUDA", False, 1e6, 5),
                                                    ("CUDA", True, 3.5e6, 2), ("CPU", False, 9e6, 7))]
    assert gpu_time(averages) == (3.0, 15)
