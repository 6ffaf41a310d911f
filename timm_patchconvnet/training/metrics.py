"""Classification metrics with scikit-learn, including the ones a medical reader asks for on binary tasks."""
from typing import Any, Dict, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score, roc_auc_score)

__all__ = ['classification_metrics']


def classification_metrics(labels: np.ndarray, probs: np.ndarray, label_names: Sequence[str]) -> Dict[str, Any]:
    """Metrics of predicted class probabilities `probs` (N, K) against integer `labels` (N,).

    Always: accuracy, per-class accuracy (the recall of each class) and the confusion matrix (rows: true class).
    Two classes (class 1 the positive one, e.g. IDC): also balanced accuracy, F1, sensitivity, specificity and
    ROC-AUC (None when the labels hold one class only, where it is undefined).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    classes = np.arange(len(label_names))
    preds = probs.argmax(axis=1)
    per_class = recall_score(labels, preds, labels=classes, average=None, zero_division=0)
    metrics: Dict[str, Any] = {
        'num_samples': int(len(labels)),
        'accuracy': float(accuracy_score(labels, preds)),
        'per_class_accuracy': {name: float(acc) for name, acc in zip(label_names, per_class)},
        'confusion_matrix': confusion_matrix(labels, preds, labels=classes).tolist(),
    }
    if len(label_names) == 2:
        both_present = len(np.unique(labels)) == 2
        metrics.update(
            balanced_accuracy=float(balanced_accuracy_score(labels, preds)),
            f1=float(f1_score(labels, preds, pos_label=1, zero_division=0)),
            sensitivity=float(per_class[1]),
            specificity=float(per_class[0]),
            roc_auc=float(roc_auc_score(labels, probs[:, 1])) if both_present else None,
        )
    return metrics
