"""An experiment's folder, runs/<name>/: the one place that says where each artifact lives.

The stages write these files, later stages and other experiments read them, and Make's targets
name them (through make_bridge.py), so every path is spelled here once. Paths only: no I/O.

    runs/<name>/config.yaml            the resolved config of the last stage run
    runs/<name>/provenance.json        per stage: versions, git commit, input digests (provenance.py)
    runs/<name>/locks/<host>-<pid>.json   the stage processes writing here now (lock.py)
    runs/<name>/logs/<stage>.log       each stage's printed output, appended run after run
    runs/<name>/tensorboard/fold<k>/   TensorBoard event files, when tensorboard is installed (train)
    runs/<name>/report.html                                                         (report)
    runs/<name>/stamps/<stage>-<digest>.yaml   the settings a stage's outputs were made with
    runs/<name>/fold<k>/               last.pt, best.pt, history.csv, curves.png, oof.csv (train)
    runs/<name>/test_fold<k>.csv, test.csv, oof.csv, tta.csv                          (infer)
    runs/<name>/calibration.json, cutpoints.json (an ordinal task's)                  (infer)
    runs/<name>/lr_find.csv, lr_find.png                                           (lr-find)
    runs/<name>/batch.png                                                       (show-batch)
    runs/<name>/hard_negatives.csv                                                    (mine)
    runs/<name>/pseudo_labels.csv                                                   (pseudo)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def fold(self, k: int) -> Path:
        return self.root / f"fold{k}"

    def last(self, k: int) -> Path:
        """Everything a killed fold resumes from, rewritten after every epoch."""
        return self.fold(k) / "last.pt"

    def best(self, k: int) -> Path:
        """The kept epoch's model: what inference loads."""
        return self.fold(k) / "best.pt"

    def fold_oof(self, k: int) -> Path:
        """Written last by training: its presence means the fold is done."""
        return self.fold(k) / "oof.csv"

    def history(self, k: int) -> Path:
        return self.fold(k) / "history.csv"

    def curves(self, k: int) -> Path:
        return self.fold(k) / "curves.png"

    def tensorboard(self, k: int) -> Path:
        return self.root / "tensorboard" / f"fold{k}"

    def test_fold(self, k: int) -> Path:
        return self.root / f"test_fold{k}.csv"

    def stamp(self, stage: str, digest: str) -> Path:
        return self.root / "stamps" / f"{stage}-{digest}.yaml"

    def stamps(self, stage: str) -> list[Path]:
        return sorted((self.root / "stamps").glob(f"{stage}-*.yaml"))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def log(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def test(self) -> Path:
        return self.root / "test.csv"

    @property
    def oof(self) -> Path:
        return self.root / "oof.csv"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def cutpoints(self) -> Path:
        """An ordinal task's cut-points between grades, fitted on the OOF (ordinal.py)."""
        return self.root / "cutpoints.json"

    @property
    def tta(self) -> Path:
        return self.root / "tta.csv"

    @property
    def lr_find(self) -> Path:
        return self.root / "lr_find.csv"

    @property
    def batch(self) -> Path:
        """Fold 0's training batches as the model gets them, and the TTA views (show_batch.py)."""
        return self.root / "batch.png"

    @property
    def hard_negatives(self) -> Path:
        return self.root / "hard_negatives.csv"

    @property
    def pseudo_labels(self) -> Path:
        return self.root / "pseudo_labels.csv"
