"""The bounded in-suite fuzz pass: the committed corpus replayed, then a fixed set of mutants
of every target, each input in one fuzz worker (RLIMIT_AS = imports + 1 GiB, 20 s per input).
``make fuzz`` runs the same harness for as long as asked.
"""

from __future__ import annotations

import pytest

from fuzz.__main__ import corpus, mutants
from fuzz.runner import Outcome, run_inputs
from fuzz.targets import TARGETS

#: Seeds that are real files the loader must refuse, and why (the files say so themselves).
REFUSED_SEEDS = {
    ("dicom", "seed-rtplan.dcm"): "NotAnImageError",  # RT Plan: no pixel data
    ("dicom", "seed-nested_priv_SQ.dcm"): "DicomError",  # no Rows/Columns
    ("dicom", "seed-emri_small.dcm"): "GeometryError",  # enhanced MR without plane positions
    ("dicom", "seed-JPEG2000.dcm"): "GeometryError",  # no ImagePositionPatient
    ("dicom", "seed-SC_rgb_small_odd.dcm"): "GeometryError",  # secondary capture, no geometry
    ("dicom", "seed-image_dfl.dcm"): "GeometryError",  # no ImagePositionPatient
    ("mentor_ws", "seed-hello.json"): "MentorError",  # not an annotation event
}
MUTANTS_PER_TARGET = 5


@pytest.fixture(scope="module")
def bounded_pass() -> tuple[list[tuple[str, str]], list[Outcome]]:
    """(target, corpus file or 'mutant') and the outcome of every input, one worker."""
    names = [(n, f) for n in TARGETS for f, _ in corpus(n)]
    inputs = [(n, d) for n in TARGETS for _, d in corpus(n)]
    muts = list(mutants(list(TARGETS), seed=20261202, per_target=MUTANTS_PER_TARGET))
    names += [(n, "mutant") for n, _ in muts]
    return names, list(run_inputs(inputs + muts, timeout_s=20))


def _report(outcomes):
    return "\n".join(f"{o.signature}\n{o.detail[-800:]}" for o in outcomes)


def test_corpus_and_mutants_run_without_crash(bounded_pass):
    names, outcomes = bounded_pass
    crashes = [o for o in outcomes if o.status == "crash"]
    assert not crashes, _report(crashes)
    assert len(outcomes) == len(names)
    assert {n for n, f in names if f.startswith("seed-")} == set(TARGETS)  # all have seeds
    assert sum(f == "mutant" for _, f in names) == MUTANTS_PER_TARGET * len(TARGETS)


def test_seeds_are_read_as_their_files_say(bounded_pass):
    # a seed refused for a reason its file does not give would leave its parser unexercised
    for (target, name), o in zip(*bounded_pass, strict=True):
        if name.startswith("seed-"):
            expected = REFUSED_SEEDS.get((target, name))
            assert (o.status, o.kind) == (("refused", expected) if expected else ("ok", "")), \
                f"{target}/{name}: {o.status} {o.kind}"


def test_mutants_are_mostly_refused(bounded_pass):
    outcomes = [o for (_, f), o in zip(*bounded_pass, strict=True) if f == "mutant"]
    assert sum(o.status == "refused" for o in outcomes) > len(outcomes) // 3


def test_harness_reports_memory_stray_exceptions_and_hangs():
    # the bounds themselves: a 64 GiB allocation fails inside the limit, an IndexError is a
    # crash, the stage's error is a refusal, a spinning input is ended after timeout_s
    inputs = [("selftest", b"alloc"), ("selftest", b"raise"), ("selftest", b"ok?"),
              ("selftest", b"hang")]
    got = [(o.status, o.kind) for o in run_inputs(inputs, timeout_s=2)]
    assert got == [("crash", "MemoryError"), ("crash", "IndexError"),
                   ("refused", "ImagingError"), ("crash", "hang")]
