"""The training loop: epochs, periodic validation, ``last.pth`` / ``best.pth``, logging."""

import math
import os
import time
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from fastcrnn.ocr.checkpoint import save_checkpoint
from fastcrnn.ocr.distributed import ResumableSampler, barrier
from fastcrnn.ocr.engine import Trainer, evaluate
from fastcrnn.ocr.progress import TrainProgress

__all__ = ["fit"]

# a validation this far (word accuracy) below the best so far is flagged as a collapse
COLLAPSE_DROP = 0.05


def fit(
    trainer: Trainer,
    train_set,
    val_loader,
    *,
    nepoch: int,
    batch_size: int,
    collate: Callable,
    expr_dir: Optional[str],
    seed: int,
    workers: int = 0,
    display_interval: int = 100,
    val_interval: int = 500,
    save_interval: int = 500,
    max_steps: Optional[int] = None,
    max_seconds: Optional[float] = None,
    state: Optional[Dict[str, Any]] = None,
    checkpoint_extra: Optional[Dict] = None,
    distributed: bool = False,
    rank: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
    n_test_disp: int = 0,
    before_save: Optional[Callable[[nn.Module], Dict[str, Any]]] = None,
    sequential_sample: bool = False,
) -> Dict[str, Any]:
    """The training loop: epochs over ``train_set``, validation every ``val_interval`` steps and
    at each epoch end, ``last.pth`` every ``save_interval`` steps and at each epoch end,
    ``best.pth`` on a new best validation word accuracy (rank 0 only).

    Logging: every ``display_interval`` steps one line with the epoch (numbered from 1), the
    step, the interval's mean and largest loss and gradient norm, the learning rate and any
    loss spikes; a validation line says when the accuracy fell more than 5 points below the
    best (``best.pth`` keeps the best weights). ``progress`` draws a tqdm bar, only when the
    output is a terminal.

    ``state`` (from a checkpoint) resumes: epoch (completed epochs), batch within the epoch,
    step, best accuracy (the optimizer and model must be restored, and the scheduler set to the
    step, by the caller).
    ``checkpoint_extra`` holds the plain entries saved with every checkpoint (charset, config).
    ``before_save(net)`` may return the model state dict to save (default ``net.state_dict()``).
    ``sequential_sample`` draws each batch as ``batch_size`` consecutive samples from a random
    start (crnn.pytorch's randomSequentialSampler, see :class:`ResumableSampler`) instead of
    shuffling. A run resumed at or past ``max_steps`` makes no step.

    Returns a history dict: ``steps``/``losses``/``grad_norms`` (every display: mean loss and
    largest gradient norm of the interval), ``val_steps``/``val_accuracy``/``val_cer``,
    ``best_accuracy``, ``best_step``, ``loss_spikes``, ``step``, ``epoch``, ``seconds``,
    ``images``.
    """
    state = dict(state or {})
    epoch = int(state.get("epoch", 0))  # completed epochs; the running one is epoch + 1
    skip_batches = int(state.get("batch", 0))
    step = int(state.get("step", 0))
    best = float(state.get("best_accuracy", -1.0))
    best_step = [state.get("best_step")]
    hist = dict(steps=[], losses=[], grad_norms=[], val_steps=[], val_accuracy=[], val_cer=[])
    sampler = ResumableSampler(
        len(train_set),
        seed,
        distributed=distributed,
        dataset=train_set,
        window=batch_size if sequential_sample else None,
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=trainer.device.type == "cuda",
        persistent_workers=False,
    )
    is_main = rank == 0
    start = time.time()
    images_seen = 0

    def save(name: str, epoch_done: int, batch_i: int):
        if not is_main or not expr_dir:
            return
        net = trainer.net
        model_state = before_save(net) if before_save else net.state_dict()
        ck = dict(checkpoint_extra or {})
        ck.update(
            model=model_state,
            optimizer=trainer.optimizer.state_dict(),
            epoch=epoch_done,
            batch=batch_i,
            step=step,
            best_accuracy=best,
            best_step=best_step[0],
        )
        save_checkpoint(os.path.join(expr_dir, name), ck)

    last_val = [-1]
    last_save = [-1]

    def validate(epoch_shown: int, epoch_done: int, batch_i: int):
        nonlocal best
        if last_val[0] == step:
            return
        last_val[0] = step
        if is_main and val_loader is not None:
            res = evaluate(
                trainer.net,
                val_loader,
                trainer.converter,
                trainer.amp,
                progress=progress,
                desc="validate",
            )
            m = res["metrics"]
            hist["val_steps"].append(step)
            hist["val_accuracy"].append(m["word_accuracy"])
            hist["val_cer"].append(m["cer"])
            for p, r, c in list(zip(res["predictions"], res["references"], res["confidences"]))[
                :n_test_disp
            ]:
                log(f"  {p!r:<24} gt {r!r:<24} conf {c:.3f}")
            improved = m["word_accuracy"] > best
            note = ""
            if improved:
                note = " (best)"
            elif best - m["word_accuracy"] > COLLAPSE_DROP:
                note = (
                    f" -- {100 * (best - m['word_accuracy']):.1f} points below the best "
                    f"({best:.4f} at step {best_step[0]}), which best.pth keeps"
                )
            log(
                f"[epoch {epoch_shown}/{nepoch} step {step}] validation: word accuracy "
                f"{m['word_accuracy']:.4f}, CER {m['cer']:.4f}, norm. edit distance "
                f"{m['norm_edit_distance']:.4f} on {m['num_samples']} samples" + note
            )
            if improved:
                best = m["word_accuracy"]
                best_step[0] = step
                save("best.pth", epoch_done, batch_i)
        barrier(distributed)

    # a resumed run that already made max_steps steps has nothing left to do
    done = max_steps is not None and step >= max_steps
    if done:
        log(f"step {step} already reached --max_steps {max_steps}: no step to make")
    prog = TrainProgress(
        log if is_main else (lambda s: None),
        nepoch,
        total=max_steps,
        initial=step,
        bar=progress and is_main,
    )
    try:
        while epoch < nepoch and not done:
            sampler.set_epoch(epoch, skip_batches * batch_size)
            batch_i = skip_batches
            skip_batches = 0
            shown = epoch + 1
            for batch in loader:
                lr = trainer.optimizer.param_groups[0]["lr"]  # this step's (a scheduler moves it)
                loss = trainer.step(batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} at step {step + 1}; lower "
                        f"--lr (or use --adam / --adadelta, --grad_clip)"
                    )
                step += 1
                batch_i += 1
                images_seen += len(batch.texts)
                prog.update(shown, step, loss, trainer.grad_norm)
                if step % display_interval == 0:
                    gn_max = prog.gn_max if prog.gn_n else float("nan")
                    hist["steps"].append(step)
                    hist["losses"].append(prog.display(shown, step, lr))
                    hist["grad_norms"].append(gn_max)
                out_of_time = max_seconds is not None and time.time() - start >= max_seconds
                if (max_steps is not None and step >= max_steps) or out_of_time:
                    done = True
                if val_interval and step % val_interval == 0 and not done:
                    validate(shown, epoch, batch_i)
                if save_interval and step % save_interval == 0:
                    save("last.pth", epoch, batch_i)
                    last_save[0] = step
                if done:
                    break
            if not done:
                epoch += 1
                batch_i = 0
            validate(shown, epoch, batch_i)
            if last_save[0] != step or batch_i == 0:
                save("last.pth", epoch, batch_i)
                last_save[0] = step
    finally:
        prog.close()
    hist.update(
        best_accuracy=best,
        best_step=best_step[0],
        loss_spikes=prog.spikes_total,
        step=step,
        epoch=epoch,
        seconds=time.time() - start,
        images=images_seen,
    )
    return hist
