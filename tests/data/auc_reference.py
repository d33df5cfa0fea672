"""Writes auc_reference.json: ROC-AUC, PR-AUC (average precision) and the Brier score of fixed
predictions, as scikit-learn computes them, for src/eval.rs's tests to match. Run once with
scikit-learn 1.9.1:
    python3 tests/data/auc_reference.py > tests/data/auc_reference.json
"""
import json

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.preprocessing import label_binarize

rng = np.random.default_rng(7)

# Binary, with tied scores (rounded to one decimal).
yb = rng.integers(0, 2, 40)
pb = np.round(np.clip(0.35 * yb + rng.uniform(0, 0.65, 40), 0, 1), 1)
binary = {
    "y": yb.tolist(),
    "p1": pb.tolist(),
    "roc_auc": roc_auc_score(yb, pb),
    "pr_auc": average_precision_score(yb, pb),
    "brier": brier_score_loss(yb, pb),
}

# Three classes, probabilities from a softmax of noisy logits.
ym = rng.integers(0, 3, 60)
logits = rng.normal(0, 1, (60, 3))
logits[np.arange(60), ym] += 1.0
pm = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
pm = np.round(pm, 3)
pm = pm / pm.sum(axis=1, keepdims=True)
multi = {
    "y": ym.tolist(),
    "proba": pm.tolist(),
    "roc_auc": roc_auc_score(ym, pm, multi_class="ovr", average="macro"),
    "roc_auc_weighted": roc_auc_score(ym, pm, multi_class="ovr", average="weighted"),
    "pr_auc": average_precision_score(label_binarize(ym, classes=[0, 1, 2]), pm, average="macro"),
    "brier": brier_score_loss(ym, pm),
}
print(json.dumps({"sklearn": "1.9.1", "binary": binary, "multiclass": multi}, indent=1))
