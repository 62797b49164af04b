"""`JaggedTensor`: a batch of tensors of different lengths along dim 0, stored flat.

Mirrors fVDB's JaggedTensor: ``jdata`` holds the rows of every item back to back, ``joffsets`` [B+1]
marks where each item starts, ``jidx`` [N] names each row's item.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


class JaggedTensor:
    """A list of B tensors that share every dimension but the first.

    Attributes:
        jdata: all rows, item after item. Shape: (N, *), any dtype.
        joffsets: row ranges; item b is ``jdata[joffsets[b]:joffsets[b + 1]]``. Shape: (B + 1,), int64.
    """

    __slots__ = ("jdata", "joffsets", "_jidx")

    def __init__(self, tensors: Sequence[torch.Tensor] | torch.Tensor) -> None:
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        tensors = list(tensors)
        if not tensors:
            raise ValueError("JaggedTensor needs at least one tensor; got an empty list")
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"JaggedTensor items must be torch.Tensor, got {type(t).__name__}")
        tail = tensors[0].shape[1:]
        for t in tensors:
            if t.dim() == 0 or t.shape[1:] != tail:
                raise ValueError(
                    f"JaggedTensor items must share all dims but the first: {tuple(tail)} vs {tuple(t.shape[1:])}"
                )
        counts = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        self.jdata = torch.cat(tensors, dim=0)
        self.joffsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(self.jdata.device)
        self._jidx = None

    @classmethod
    def from_data_and_offsets(cls, data: torch.Tensor, offsets: torch.Tensor) -> "JaggedTensor":
        """Wrap flat ``data`` (N, *) split by ``offsets`` (B + 1,) without copying."""
        if not isinstance(data, torch.Tensor) or not isinstance(offsets, torch.Tensor):
            raise TypeError("from_data_and_offsets expects two torch.Tensors (data, offsets)")
        offsets = offsets.to(device=data.device, dtype=torch.int64)
        if offsets.dim() != 1 or offsets.numel() < 2:
            raise ValueError(f"offsets must have shape (B + 1,) with B >= 1, got {tuple(offsets.shape)}")
        if int(offsets[0]) != 0 or int(offsets[-1]) != data.shape[0]:
            raise ValueError(
                f"offsets must start at 0 and end at len(data)={data.shape[0]}, got {offsets[0]}..{offsets[-1]}"
            )
        if bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError("offsets must be non-decreasing")
        out = cls.__new__(cls)
        out.jdata, out.joffsets, out._jidx = data, offsets, None
        return out

    @classmethod
    def from_data_and_jidx(cls, data: torch.Tensor, jidx: torch.Tensor, num_tensors: int) -> "JaggedTensor":
        """Wrap flat ``data`` whose rows are grouped by item index ``jidx`` (sorted, ascending)."""
        counts = torch.bincount(jidx.long(), minlength=num_tensors)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls.from_data_and_offsets(data, offsets)

    # --- shape and access -------------------------------------------------------------------
    @property
    def num_tensors(self) -> int:
        return self.joffsets.numel() - 1

    def __len__(self) -> int:
        return self.num_tensors

    @property
    def jidx(self) -> torch.Tensor:
        """Item index of every row. Shape: (N,), int32."""
        if self._jidx is None:
            counts = self.joffsets[1:] - self.joffsets[:-1]
            self._jidx = torch.repeat_interleave(
                torch.arange(self.num_tensors, device=self.jdata.device, dtype=torch.int32), counts
            )
        return self._jidx

    @property
    def lshape(self) -> list[int]:
        """Length of every item."""
        return (self.joffsets[1:] - self.joffsets[:-1]).tolist()

    @property
    def eshape(self) -> tuple[int, ...]:
        """Shape of one row."""
        return tuple(self.jdata.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.jdata.device

    @property
    def dtype(self) -> torch.dtype:
        return self.jdata.dtype

    @property
    def requires_grad(self) -> bool:
        return self.jdata.requires_grad

    def __getitem__(self, i: int) -> torch.Tensor:
        if not isinstance(i, int):
            raise TypeError(f"JaggedTensor index must be an int, got {type(i).__name__}")
        if i < 0:
            i += self.num_tensors
        if not 0 <= i < self.num_tensors:
            raise IndexError(f"item {i} out of range for {self.num_tensors} items")
        return self.jdata[int(self.joffsets[i]) : int(self.joffsets[i + 1])]

    def unbind(self) -> list[torch.Tensor]:
        return [self[i] for i in range(self.num_tensors)]

    def __iter__(self) -> Iterable[torch.Tensor]:
        return iter(self.unbind())

    # --- new values on the same layout ------------------------------------------------------
    def jagged_like(self, data: torch.Tensor) -> "JaggedTensor":
        """A JaggedTensor with this layout and new rows ``data`` (N, *)."""
        if data.shape[0] != self.jdata.shape[0]:
            raise ValueError(f"jagged_like: data has {data.shape[0]} rows, layout has {self.jdata.shape[0]}")
        out = JaggedTensor.__new__(JaggedTensor)
        out.jdata, out.joffsets, out._jidx = data, self.joffsets.to(data.device), self._jidx
        return out

    def to(self, *args, **kwargs) -> "JaggedTensor":
        data = self.jdata.to(*args, **kwargs)
        out = JaggedTensor.__new__(JaggedTensor)
        out.jdata, out.joffsets = data, self.joffsets.to(data.device)
        out._jidx = None if self._jidx is None else self._jidx.to(data.device)
        return out

    def float(self) -> "JaggedTensor":
        return self.jagged_like(self.jdata.float())

    def detach(self) -> "JaggedTensor":
        return self.jagged_like(self.jdata.detach())

    def __repr__(self) -> str:
        return f"JaggedTensor(lshape={self.lshape}, eshape={self.eshape}, dtype={self.dtype}, device={self.device})"
