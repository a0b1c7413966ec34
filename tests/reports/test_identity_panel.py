"""The report's identity panel and LR-kernel line (issue #30), from a run's infer/scores.json."""
from __future__ import annotations

import json
import re
from pathlib import Path

from reports.identity_panel import trained_against
from reports.render import render_report
from reports.rundata import load_run
from tests.reports.test_report import make_run


def _add_panel(run: Path, match: bool) -> None:
    scores_path = run / "infer" / "scores.json"
    doc = json.loads(scores_path.read_text())
    doc["summary"]["identity"] = {
        "facenet": {"primary": True, "key": "is", "verdict": "ok", "is": 0.8144,
                    "impostor": 0.2561, "normalized_is": 0.7503, "rank1": 0.983,
                    "is_bicubic": 0.6455, "normalized_is_bicubic": 0.5512, "gain": 0.4764},
        "dlib": {"primary": False, "key": "is_dlib", "verdict": "compressed", "is": 0.9645,
                 "impostor": 0.8612, "normalized_is": 0.7441, "rank1": 0.967,
                 "is_bicubic": 0.9495, "normalized_is_bicubic": 0.6362, "gain": 0.2970}}
    doc["summary"]["lr_kernel"] = (
        {"best": "matlab_bicubic", "trained": "matlab_bicubic", "match": True,
         "line": "LR kernel matches training: matlab_bicubic (MAE 0.00 grey levels)"}
        if match else
        {"best": "cv2_area", "trained": "matlab_bicubic", "match": False,
         "line": "LR KERNEL MISMATCH: the model was trained on matlab_bicubic LR"})
    scores_path.write_text(json.dumps(doc))
    job = json.loads((run / "job.yaml").read_text())
    job["loss"] = {"identity": 1.0, "feature": 15.0, "recognizer": "facenet"}
    (run / "job.yaml").write_text(json.dumps(job))


def test_panel_marks_the_recognizer_trained_against(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _add_panel(run, match=True)
    html_text = render_report([load_run(run)])
    assert "Identity under each recognizer" in html_text
    rows = re.findall(r"<tr>(.*?)</tr>", html_text, re.DOTALL)
    facenet = next(r for r in rows if "facenet ★ trained against" in r)
    dlib = next(r for r in rows if ">dlib<" in r)
    assert "0.8144" in facenet and "+0.4764" in facenet
    assert "0.9645" in dlib and "0.8612" in dlib and "+0.2970" in dlib and "compressed" in dlib
    assert "LR kernel matches training: matlab_bicubic" in html_text


def test_a_kernel_mismatch_is_flagged(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _add_panel(run, match=False)
    html_text = render_report([load_run(run)])
    assert re.search(r'<p class="note"><b>LR kernel: </b>LR KERNEL MISMATCH', html_text)


def test_trained_against_reads_the_loss() -> None:
    assert trained_against({"loss": {"identity": 1.0, "recognizer": "facenet@0.7,dlib@0.3"}}) \
        == ["facenet", "dlib"]
    assert trained_against({"loss": {"identity": 0.0, "feature": 0.0}}) == []
    assert trained_against(None) == []
