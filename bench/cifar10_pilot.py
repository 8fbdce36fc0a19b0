"""One CIFAR-10 net trained outside any sweep: its validation accuracy per epoch, then its test accuracy.

The pilot behind `examples/cifar10.toml`'s 25 epochs and flips (docs/results.md,
"The hour again, with the regularizers searched"): does one fully-connected
net pass 60 % test accuracy, and when? One process, one BLAS thread, the full
cs231n split from SWEEP_DATA_DIR; the best-validation epoch's weights are
evaluated once on the 10 000 test images.

    SWEEP_DATA_DIR=DIR python bench/cifar10_pilot.py NAME HIDDEN KEEP LR FLIP SHIFT EPOCHS INPUT_KEEP
    SWEEP_DATA_DIR=DIR python bench/cifar10_pilot.py augmented 1024-1024 0.8 1e-3 1 2 24 0.9
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one BLAS thread, as a sweep worker on 2 cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sweep.config.space import TrainParams
from sweep.data.datasets import load_dataset
from sweep.training import RunSeeds, build_net, load_model_state, train


def main(argv: list[str]) -> None:
    name, hidden, keep, lr, flip, shift, epochs, input_keep = argv
    params = TrainParams(keep_prob=float(keep), hidden_dims=tuple(int(h) for h in hidden.split("-")),
                         learning_rate=float(lr), normalization="batchnorm", weight_scale=4e-3, epochs=int(epochs),
                         lr_decay=0.95, augment_flip=flip == "1", augment_shift=int(shift),
                         input_keep_prob=float(input_keep))
    data = load_dataset("cifar10", num_test=10_000)
    start = time.perf_counter()

    def on_epoch(epoch: int, m: dict[str, float]) -> bool:
        print(f"{name} ep{epoch} {time.perf_counter() - start:.0f}s train {m['train_acc']:.3f} val {m['val_acc']:.3f}",
              flush=True)
        return True

    result = train(params, data, RunSeeds.derive(0, 0), on_epoch=on_epoch, keep_best_weights=True)
    if result.best_weights is None:
        sys.exit(f"{name}: training failed ({result.failure_reason})")
    net = build_net(params, data["X_train"].shape[1], 10, 0)
    load_model_state(net, result.best_weights)
    test_acc = float((net.loss(data["X_test"]).argmax(axis=1) == data["y_test"]).mean())
    print(f"{name} best val {result.best_val_acc:.4f} epoch {result.best_epoch} test {test_acc:.4f} "
          f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    if len(sys.argv) != 9:
        sys.exit(__doc__)
    main(sys.argv[1:])
