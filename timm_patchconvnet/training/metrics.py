"""Classification metrics with scikit-learn, including the ones a medical reader asks for on binary tasks."""
from typing import Any, Dict, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score, roc_auc_score, roc_curve)

from ..slides import region_scores

__all__ = ['choose_threshold', 'classification_metrics', 'patient_results', 'per_patient_metrics']


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


def choose_threshold(labels: np.ndarray, positive_probs: np.ndarray) -> float:
    """The decision threshold on the positive-class probability that maximises balanced accuracy on these
    (validation) rows; 0.5 when they hold one class only. Chosen on validation, applied to test."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, positive_probs)
    best = int(np.argmax(tpr - fpr))  # Youden's J: the balanced accuracy's maximum
    return float(min(max(thresholds[best], 0.), 1.))


def per_patient_metrics(labels: np.ndarray, positive_probs: np.ndarray, patients: Sequence[str],
                        threshold: float) -> Dict[str, Any]:
    """Balanced accuracy, F1 and ROC-AUC of each patient's rows at `threshold`, their distribution over patients
    (mean, median, quartiles; ROC-AUC over the patients with both classes only), and the per-patient values."""
    labels, positive_probs, patients = np.asarray(labels), np.asarray(positive_probs), np.asarray(patients)
    rows = {}
    for patient in np.unique(patients):
        mine = patients == patient
        truth, probs = labels[mine], positive_probs[mine]
        preds = (probs >= threshold).astype(int)
        both = len(np.unique(truth)) == 2
        rows[str(patient)] = {
            'patches': int(mine.sum()), 'positive': int(truth.sum()),
            'balanced_accuracy': float(balanced_accuracy_score(truth, preds)) if both else None,
            'f1': float(f1_score(truth, preds, zero_division=0)) if truth.any() else None,
            'roc_auc': float(roc_auc_score(truth, probs)) if both else None,
        }

    def summary(key: str) -> Dict[str, Any]:
        values = np.array([r[key] for r in rows.values() if r[key] is not None])
        if len(values) == 0:
            return {'patients': 0, 'mean': None}
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return {'patients': int(len(values)), 'mean': float(values.mean()), 'median': float(median),
                'q1': float(q1), 'q3': float(q3), 'min': float(values.min()), 'max': float(values.max())}

    return {'threshold': threshold, **{key: summary(key) for key in ('balanced_accuracy', 'f1', 'roc_auc')},
            'patients': rows}


def patient_results(val_labels: np.ndarray, val_probs: np.ndarray, test_labels: np.ndarray, test_probs: np.ndarray,
                    test_patients: Sequence[str]) -> Dict[str, Any]:
    """What a pathologist reads of a binary patient-level test split, at a threshold chosen on validation: the
    pooled metrics at that threshold, each patient's metrics and their distribution, and per slide the Dice and IoU
    of the predicted IDC region (patches at or over the threshold) against the annotated one (class-1 patches)."""
    threshold = choose_threshold(val_labels, np.asarray(val_probs)[:, 1])
    positive = np.asarray(test_probs)[:, 1]
    labels, patients = np.asarray(test_labels), np.asarray(test_patients).astype(str)
    preds = (positive >= threshold).astype(int)
    recall = recall_score(labels, preds, labels=[0, 1], average=None, zero_division=0)
    regions = {str(p): region_scores(preds[patients == p] == 1, labels[patients == p] == 1)
               for p in np.unique(patients)}
    scored = [r for r in regions.values() if r['dice'] is not None]
    return {
        'threshold': threshold,
        'threshold_chosen_on': 'validation (maximum balanced accuracy)',
        'at_threshold': {'balanced_accuracy': float(balanced_accuracy_score(labels, preds)),
                         'f1': float(f1_score(labels, preds, zero_division=0)),
                         'sensitivity': float(recall[1]), 'specificity': float(recall[0])},
        'per_patient': per_patient_metrics(labels, positive, patients, threshold),
        'regions': {'mean_dice': float(np.mean([r['dice'] for r in scored])) if scored else None,
                    'mean_iou': float(np.mean([r['iou'] for r in scored])) if scored else None,
                    'slides': len(scored), 'per_patient': regions},
    }
