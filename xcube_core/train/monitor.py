"""Progress and scalars of a training run: a tqdm bar, TensorBoard (``OUT/tb``) and ``metrics.jsonl``.

Only rank 0 writes; other ranks get a :class:`Monitor` whose methods do nothing.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

__all__ = ["Monitor"]

logger = logging.getLogger(__name__)


class Monitor:
    """Shows progress and records scalars.

    Args:
        out_dir: run folder; TensorBoard events go to ``out_dir/tb``, scalars also to
            ``out_dir/metrics.jsonl`` (one JSON object per logged step).
        start_step, max_steps: the bar's range.
        enabled: False on ranks other than 0.
        progress: show the tqdm bar.
        tensorboard: write TensorBoard events.
    """

    def __init__(self, out_dir: pathlib.Path, start_step: int, max_steps: int, *, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.bar = None
        self.writer = None
        self.metrics_path = out_dir / "metrics.jsonl"
        self._last_time = time.perf_counter()
        self._last_step = start_step
        if not enabled:
            return
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, unit="step", dynamic_ncols=True, desc="train")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(out_dir / "tb"))
            except ImportError as exc:  # tensorboard is a declared dependency; keep training without it
                logger.warning("TensorBoard unavailable (%s); scalars go to %s only", exc, self.metrics_path)

    def step(self, loss: float) -> None:
        """Advance the bar by one step showing the latest loss."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def log(self, step: int, scalars: dict[str, float]) -> dict[str, float]:
        """Record ``scalars`` at ``step`` (adds ``steps_per_s`` since the previous call); returns them."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        scalars = {**scalars, "steps_per_s": rate}
        if not self.enabled:
            return scalars
        self._record(step, {f"train/{k}": v for k, v in scalars.items()}, scalars)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4g}", steps_s=f"{rate:.2f}", refresh=True)
        else:
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
        return scalars

    def log_val(self, step: int, scalars: dict[str, float]) -> None:
        """Record validation scalars (``val_loss``, ``val_<term>``): TensorBoard ``val/<term>`` and one
        ``metrics.jsonl`` line ``{"step": step, "val_loss": ..., ...}``."""
        if not self.enabled:
            return
        self._record(step, {f"val/{k.removeprefix('val_')}": v for k, v in scalars.items()}, scalars)
        self.message(f"step {step}: val_loss={scalars.get('val_loss', float('nan')):.4g}")

    def _record(self, step: int, tagged: dict[str, float], scalars: dict[str, float]) -> None:
        """TensorBoard scalars under their tags, and one metrics.jsonl line ``{"step": ..., **scalars}``."""
        if self.writer is not None:
            for tag, value in tagged.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **scalars}) + "\n")

    def message(self, text: str) -> None:
        """Log a line without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            logger.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
