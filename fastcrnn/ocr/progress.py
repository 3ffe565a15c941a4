"""What training (and predict) print: a tqdm bar on a terminal, plain lines otherwise.

A log written to a file or a pipe gets one line per display interval and no carriage-return
frames. Every line numbers epochs from 1. Each display line carries the mean and the largest
loss and gradient norm of the interval, and the number of loss spikes, so that a collapsing
training shows in the log before its validation does.
"""

import math
import sys
from typing import Callable, Optional

__all__ = ["interactive", "make_logger", "TrainProgress", "CountProgress"]


def interactive() -> bool:
    """Whether both stdout and stderr are terminals (tqdm draws on stderr, the log goes to
    stdout; a bar is only worth drawing when a person watches both)."""
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def make_logger(enabled: bool = True) -> Callable[[str], None]:
    """A ``log(msg)`` printing one line (through tqdm.write when a bar may be on screen, so
    the bar is redrawn below the line); a no-op when not ``enabled`` (ranks other than 0)."""

    def log(msg: str):
        if not enabled:
            return
        if interactive():
            try:
                from tqdm import tqdm

                tqdm.write(msg)
                return
            except ImportError:
                pass
        print(msg, flush=True)

    return log


class TrainProgress:
    """Per-step bookkeeping of :func:`fastcrnn.ocr.loop.fit`: the progress bar (terminal only)
    and the display lines.

    A step's loss counts as a spike when it exceeds ``spike_factor`` times the running mean of
    the previous losses (an exponential average over about 50 steps, once 50 steps are in it)
    and ``spike_min``; each spike is also logged on its own line with the step's gradient norm.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        nepoch: int,
        total: Optional[int] = None,
        initial: int = 0,
        bar: bool = True,
        spike_factor: float = 3.0,
        spike_min: float = 0.5,
    ):
        self.log, self.nepoch = log, nepoch
        self.spike_factor, self.spike_min = spike_factor, spike_min
        self.bar = None
        if bar and interactive():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="step", desc="train", dynamic_ncols=True
            )
        self.ema, self.ema_n = 0.0, 0
        self.spikes_total = 0
        self._reset()

    def _reset(self):
        self.loss_sum, self.loss_max, self.n = 0.0, 0.0, 0
        self.gn_sum, self.gn_max, self.gn_n, self.spikes = 0.0, 0.0, 0, 0

    def update(self, epoch: int, step: int, loss: float, grad_norm: float = float("nan")):
        """Records one step (``epoch`` numbered from 1)."""
        if self.ema_n >= 50 and loss > max(self.spike_factor * self.ema, self.spike_min):
            self.spikes += 1
            self.spikes_total += 1
            self.log(
                f"[epoch {epoch}/{self.nepoch} step {step}] loss spike: {loss:.4f} "
                f"against a running mean of {self.ema:.4f}, gradient norm {grad_norm:.3g}"
            )
        # the spike itself enters the mean, so a lasting rise stops counting as spikes
        self.ema_n += 1
        self.ema += (loss - self.ema) / min(self.ema_n, 50)
        self.loss_sum += loss
        self.loss_max = max(self.loss_max, loss)
        self.n += 1
        if math.isfinite(grad_norm):
            self.gn_sum += grad_norm
            self.gn_max = max(self.gn_max, grad_norm)
            self.gn_n += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                epoch=f"{epoch}/{self.nepoch}", loss=f"{loss:.3f}", gnorm=f"{grad_norm:.2g}"
            )

    def display(self, epoch: int, step: int, lr: Optional[float] = None) -> float:
        """Logs the interval's line and starts a new interval; returns its mean loss."""
        mean = self.loss_sum / max(self.n, 1)
        line = (
            f"[epoch {epoch}/{self.nepoch} step {step}] loss {mean:.4f} (max {self.loss_max:.4f})"
        )
        if self.gn_n:
            line += f", grad norm {self.gn_sum / self.gn_n:.3g} (max {self.gn_max:.3g})"
        if lr is not None:
            line += f", lr {lr:.3g}"
        if self.spikes:
            line += f", {self.spikes} loss spike{'s' if self.spikes > 1 else ''}"
        self.log(line)
        self._reset()
        return mean

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CountProgress:
    """Progress over a known number of items (``predict``'s lines): a tqdm bar on a terminal;
    otherwise a plain line on stderr at each tenth of the way (stdout carries the results, so
    none of this goes there). ``enabled=False`` shows nothing."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.next_line = 0, 0
        self.enabled = enabled and total > 0
        self.bar = None
        if self.enabled and interactive():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
        self._advance_mark()

    def _advance_mark(self):
        step = max(self.total // 10, 1)
        self.next_line = (self.done // step + 1) * step

    def write(self, line: str) -> None:
        """Prints one result line on stdout (below the bar, when there is one)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif self.done >= self.next_line or self.done >= self.total:
            pct = 100.0 * self.done / self.total
            print(
                f"{self.desc}: {self.done}/{self.total} {self.unit}s ({pct:.0f}%)",
                file=sys.stderr,
                flush=True,
            )
            self._advance_mark()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
