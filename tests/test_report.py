"""Report helpers and `nbhelpers report` on a folder of plain images without masks."""
import shutil

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from nbhelpers.cli import main
from nbhelpers.report import f1_threshold, per_defect_auroc, worst_cases


def test_f1_threshold_is_optimal():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = labels + rng.normal(0, 0.8, 60)
    t = f1_threshold(scores, labels)
    best = max(f1_score(labels, scores >= s) for s in scores)
    assert f1_score(labels, scores >= t) == pytest.approx(best)
    assert np.isnan(f1_threshold(scores, np.zeros(60)))


def test_worst_cases_and_per_defect():
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.05])
    labels = np.array([0, 0, 1, 1, 1, 0])
    defects = ["good", "good", "a", "b", "b", "good"]
    assert worst_cases(scores, labels, k=1) == {"false_positives": [1], "false_negatives": [2]}
    per = per_defect_auroc(scores, labels, defects)
    pick_b = [0, 1, 3, 4, 5]
    assert per["b"] == pytest.approx(roc_auc_score(labels[pick_b], scores[pick_b]))
    assert set(per) == {"a", "b"}


@pytest.mark.notebooks
def test_report_on_plain_image_folder(synth_root, tmp_path):
    plain = tmp_path / "mine" / "parts"
    for part in ("train/good", "test/good", "test/crack"):
        shutil.copytree(synth_root / "brick" / part, plain / part)  # images only, no ground_truth
    out = tmp_path / "report.html"
    code = main(["report", "--data", str(tmp_path / "mine"), "--layout", "folder", "--method", "baseline",
                 "--preset", "smoke", "--out", str(out)])
    assert code == 0
    html = out.read_text()
    assert "No ground-truth masks" in html and "data:image/png;base64" in html
    assert main(["report", "--data", str(tmp_path / "nowhere"), "--layout", "folder", "--out", str(out)]) == 2
