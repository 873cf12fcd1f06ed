"""The paired test between two chosen entries of a board (the board itself tests each entry against its best),
or of two boards on the same split (``--board-b``).

Reads the stored per-fold predictions of both entries (``runs/<features>/<model>/fold-*.predictions.parquet``
under a board folder), checks that they cover the same utterances with the same truth, and prints each
entry's pooled UA and the two-sided paired permutation test of the UA difference with whole speakers swapped
(:func:`sertool.metrics.paired_test`, the board's test).

    .venv/bin/python benchmarks/paired_entries.py BOARD_DIR "whisper-tiny.en@2/whisper_ft" \
        "whisper-tiny.en@2/whisper_ft_frozen"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from sertool.metrics import paired_test


def _predictions(board: Path, entry: str) -> pd.DataFrame:
    folder = board / "runs" / entry
    files = sorted(folder.glob("fold-*.predictions.parquet"))
    if not files:
        sys.exit(f"{folder}: no stored predictions")
    return pd.concat([pd.read_parquet(f) for f in files]).set_index("utt_id").sort_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("board", type=Path)
    ap.add_argument("a", help="<features>/<model> as under runs/")
    ap.add_argument("b")
    ap.add_argument("--board-b", type=Path, help="the board of entry b (default: the same board)")
    args = ap.parse_args()
    board_b = args.board_b or args.board
    a, b = _predictions(args.board, args.a), _predictions(board_b, args.b)
    if not a.index.equals(b.index) or not (a["y_true"] == b["y_true"]).all():
        sys.exit("the two entries were not scored on the same utterances")
    ua_a = balanced_accuracy_score(a["y_true"], a["y_pred"])
    ua_b = balanced_accuracy_score(b["y_true"], b["y_pred"])
    p = paired_test(a["y_true"], a["y_pred"], b["y_pred"], a["speaker"])
    print(f"board: {args.board}" + (f"; entry b from {board_b}" if board_b != args.board else ""))
    print(f"{args.a}: pooled UA {ua_a:.3f} ({len(a)} clips)")
    print(f"{args.b}: pooled UA {ua_b:.3f}")
    print(f"difference {ua_a - ua_b:+.3f}; paired permutation test, speakers swapped: p = {p:.3g}")


if __name__ == "__main__":
    main()
