import numpy as np
import pytest

from catalens.report.evaluate import classification_metrics


def one_hot_probabilities(predicted, n):
    probabilities = np.full((len(predicted), n), 0.1 / (n - 1))
    probabilities[np.arange(len(predicted)), predicted] = 0.9
    return probabilities


def test_metrics_match_hand_computed_values():
    # true a a a b b c ; predicted a a b b c c
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(truth, one_hot_probabilities(predicted, 3), ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    b = metrics["per_class"]["b"]
    assert b["precision"] == pytest.approx(1 / 2) and b["recall"] == pytest.approx(1 / 2)
    # b: TN = items neither true b nor predicted b = a,a (true a pred a) + c (true c pred c) = 3; FN = 1
    assert b["npv"] == pytest.approx(3 / 4)
    a = metrics["per_class"]["a"]
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(2 / 3) and a["npv"] == pytest.approx(3 / 4)
    assert metrics["per_class"]["c"]["support"] == 1
    assert metrics["top_k_accuracy"] == {"1": pytest.approx(4 / 6), "3": 1.0}
    assert metrics["most_confused"][0]["count"] == 1
    assert metrics["macro_f1"] == pytest.approx(np.mean([0.8, 0.5, 2 / 3]))


def test_training_and_evaluate_report_the_same_macro_f1_when_a_class_is_absent():
    """Class c never occurs in the validation labels (the splitter keeps 1-product classes out of it): training's
    validation macro-F1, which `--monitor macro_f1` chooses checkpoints on, is the one evaluate reports."""
    import torch

    from catalens.engine.train import evaluate_split
    from catalens.loading.batches import Batch

    truth = np.array([0, 0, 0, 1, 1, 1])
    predicted = np.array([0, 0, 2, 1, 1, 0])  # one wrong guess is the absent class
    probabilities = one_hot_probabilities(predicted, 3)
    reported = classification_metrics(truth, probabilities, ["a", "b", "c"])["macro_f1"]
    logits = torch.log(torch.tensor(probabilities, dtype=torch.float32))
    batches = [Batch(logits, torch.tensor(truth), torch.arange(6))]
    during_training = evaluate_split(torch.nn.Identity(), batches, lambda x: x, torch.device("cpu"), 3)["macro_f1"]
    assert during_training == pytest.approx(reported)
    assert reported == pytest.approx(np.mean([2 * (2 / 3 * 2 / 3) / (4 / 3), 0.8]))  # a: P 2/3 R 2/3; b: P 1 R 2/3
