"""The time to a val top-1, as `alexnet train` prints it after a run: the first epoch at or above each target and the
summed epoch times until then."""
from alexnet.train.run_folder import time_to_accuracy, time_to_accuracy_line


def test_the_first_epoch_reaching_each_target_and_the_time_until_then():
    history = [{"epoch": 1, "val_top1": 0.85, "seconds": 30.0}, {"epoch": 2, "val_top1": 0.905, "seconds": 31.0},
               {"epoch": 3, "val_top1": 0.89, "seconds": 29.5}, {"epoch": 4, "val_top1": 0.93, "seconds": 40.0}]
    assert time_to_accuracy(history) == [(0.90, {"epoch": 2, "seconds": 61.0}),
                                         (0.93, {"epoch": 4, "seconds": 130.5})]
    assert time_to_accuracy_line(history) == "time to val top-1 0.90 after epoch 2 (1m 01s), 0.93 after epoch 4 (2m 10s)"
    assert time_to_accuracy_line(history[:3]) == "time to val top-1 0.90 after epoch 2 (1m 01s), 0.93 not reached"
    diverged = [{"epoch": 1, "val_top1": None, "seconds": 5.0}]       # metrics.jsonl's null
    assert time_to_accuracy(diverged, (0.5,)) == [(0.5, None)]
