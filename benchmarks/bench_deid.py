"""De-identification: ``imaging.deid.Deidentifier`` vs KitwareMedical dicom-anonymizer.

Both de-identify the same in-memory datasets in this process (the small phantom series, 102
CT slices, plus a handful of pydicom test files: SR, RT plan, enhanced MR, SEG, private
sequences), each run on fresh deep copies (copying is outside the timed call). dicom-anonymizer
runs its 2026c table (``dicomfields_2026c``, Basic Profile, private tags deleted). Reported:
median time per dataset and the ratio, and -- the point of the comparison -- how many markers
planted in every text/date/UID attribute (``tests/imaging/deid_markers.py``) each leaves in
the written bytes.
"""

from __future__ import annotations

import copy
import io
import sys
import warnings
from pathlib import Path

from benchmarks.common import interleaved, ratio_line

RUNS = 5
FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "liver_1frame.dcm",
         "nested_priv_SQ.dcm", "test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm"]


def _datasets() -> tuple[list, object]:
    import pydicom
    from pydicom.data import get_testdata_file

    from scrubin.samples.phantom import ensure_sample

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "imaging"))
    from deid_markers import Planter

    planter = Planter()
    paths = sorted(ensure_sample("small").glob("*.dcm")) + [
        Path(get_testdata_file(n)) for n in FILES]
    out = []
    for p in paths:
        ds = pydicom.dcmread(p)
        planter.plant(ds)
        out.append(ds)
    return out, planter


def _bytes(datasets: list) -> list[bytes]:
    blobs = []
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        blobs.append(buf.getvalue())
    return blobs


def main() -> None:
    """Print time per dataset (ratio) and markers left by each."""
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions

    from scrubin.imaging.deid import Deidentifier, DeidOptions

    warnings.simplefilter("ignore")
    datasets, planter = _datasets()
    from deid_markers import found  # on the path since _datasets()

    n = len(datasets)

    def ours(keep: list | None = None) -> None:
        deid = Deidentifier(DeidOptions())
        work = copies.pop()
        for ds in work:
            deid.deidentify(ds)
        if keep is not None:
            keep.extend(work)

    def peer(keep: list | None = None) -> None:
        work = copies.pop()
        for ds in work:
            anonymize_dataset(ds, base_rules_gen=lambda: initialize_actions("dicomfields_2026c"),
                              delete_private_tags=True)
        if keep is not None:
            keep.extend(work)

    copies = [copy.deepcopy(datasets) for _ in range(2 * (RUNS + 1))]
    times = interleaved({"ours": ours, "peer": peer}, runs=RUNS, warmup=1)
    per = {k: [t / n for t in v] for k, v in times.items()}
    print(ratio_line(f"de-identify one dataset ({n} datasets)", per["ours"], per["peer"],
                     "dicom-anonymizer 2.1.0"))
    for name, fn in (("scrubin", ours), ("dicom-anonymizer", peer)):
        copies.append(copy.deepcopy(datasets))
        kept: list = []
        fn(kept)
        left = found(planter.markers, _bytes(kept))
        print(f"{name}: {len(left)} of {len(planter.markers)} planted markers left")


if __name__ == "__main__":
    main()
