"""Batches of augmented images from a uint8 (N, H, W, C) array or JPEG store, prefetched by background threads.

A batch depends only on (seed, epoch, step, rank): the epoch's order comes from a generator seeded
by (seed, epoch), the augmentation's from one seeded by (seed, epoch, step, rank). So two loaders
built alike give the same batches, and resuming at a step is just ``iterate(epoch, start_step)``.
Loader threads run the batched torch ops (which release the GIL) while the model computes; from a jpeg
store (alexnet.data.jpeg_store.JpegImages) each thread also decodes its batch (decode_jpeg releases the
GIL too), or, on CUDA, the batch's bytes are decoded on the device by nvJPEG in one call.
"""
from __future__ import annotations

import math
import threading
import warnings
from typing import Callable, Iterator

import numpy as np
import torch

from alexnet.data.augment import to_float
from alexnet.data.jpeg_store import JpegImages

IN_MEMORY_BYTES = 1 << 30    # arrays up to this size are copied into one in-memory tensor
_SHUFFLE, _AUGMENT = 1, 2    # seed-stream tags, so the two generators never share a seed


def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy's SeedSequence hash)."""
    words = np.random.SeedSequence(list(values)).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class BatchLoader:
    """Yields (x, y): x float32 (B, C, h, w) channels_last and y int64 (B,), both on ``device``.

    images: uint8 (N, H, W, C) numpy array, memmap, torch tensor or ``JpegImages``. Arrays up to
    ``in_memory_bytes`` (decoded, for a jpeg store: decoded once, by ``threads`` threads) become one in-memory
    tensor; bigger memmaps are read per batch (indices sorted for locality), bigger jpeg stores decoded per
    batch: on CUDA by nvJPEG on the device when ``gpu_decode`` (the default), else by the loader threads.
    transform: ``transform(x_uint8_nchw, generator) -> float batch``, e.g. ``TrainTransform``; None
    scales to [0, 1]. For DDP, rank r of world_size W takes every W-th index of the epoch's order,
    padded by wrapping (as ``DistributedSampler``) so every rank has the same number of batches.
    prefetch: batches made ahead of the consumer; threads: loader threads making them (threads, not
    processes), each running its torch ops (which release the GIL) on one core. prefetch or threads 0:
    batches are made in the caller's thread, with its torch threads. Bad arguments are ValueError or
    TypeError (a caller's mistake; the training loop passes checked values).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, batch_size: int, *,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 shuffle: bool = True, drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", prefetch: int = 2, threads: int = 1,
                 in_memory_bytes: int = IN_MEMORY_BYTES, gpu_decode: bool = True) -> None:
        if images.dtype not in (np.uint8, torch.uint8):
            raise TypeError(f"BatchLoader needs uint8 images shaped (N, H, W, C), got {images.dtype} "
                            f"{tuple(images.shape)}")
        if images.ndim != 4:
            raise ValueError(f"BatchLoader needs uint8 images shaped (N, H, W, C), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or min(seed, prefetch, threads) < 0:
            raise ValueError(f"BatchLoader: need batch_size >= 1, 0 <= rank < world_size, seed, prefetch and "
                             f"threads >= 0; got batch_size={batch_size}, rank={rank}, world_size={world_size}, "
                             f"seed={seed}, prefetch={prefetch}, threads={threads}")
        if isinstance(images, torch.Tensor):
            self.images: np.ndarray | torch.Tensor | JpegImages = images  # may live on the GPU already
        elif isinstance(images, JpegImages) and images.nbytes <= in_memory_bytes:   # decode a small store once
            self.images = images.read(np.arange(len(images)), threads=max(threads, 1))
        elif isinstance(images, JpegImages):
            self.images = images                                          # decoded per batch
        elif images.nbytes <= in_memory_bytes:                            # read a memmap into memory once
            copy = isinstance(images, np.memmap) or not images.flags.writeable
            self.images = torch.from_numpy(np.array(images) if copy else np.ascontiguousarray(images))
        else:
            self.images = images                                          # gathered per batch
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.int64)   # a copy: inputs may be read-only
        self.batch_size, self.transform, self.shuffle, self.drop_last = batch_size, transform, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.prefetch, self.threads = seed, rank, world_size, prefetch, threads
        self.device = torch.device(device)
        self.gpu_decode = gpu_decode and self.device.type == "cuda" and isinstance(self.images, JpegImages)
        self.epoch = 0

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (the dataset split W ways, padded by wrapping)."""
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(self.epoch)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's dataset indices for ``epoch``, in the order they are served."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(_SHUFFLE, self.seed, epoch)))
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:   # wrap around, as DistributedSampler does
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank:total:self.world_size]

    def iterate(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from step ``start_step`` on (exact resume: same batches as a full epoch)."""
        order, steps = self.indices(epoch), range(start_step, len(self))
        make = lambda step: self.batch(order, epoch, step)  # noqa: E731
        if self.prefetch == 0 or self.threads == 0:
            return (make(step) for step in steps)
        return iter(_Prefetcher(make, steps, self.threads, self.prefetch, name=f"BatchLoader-e{epoch}-r{self.rank}"))

    def batch(self, order: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of an epoch whose rank-local order is ``order``."""
        index = order[step * self.batch_size:(step + 1) * self.batch_size]
        y = self.labels[index]
        generator = torch.Generator().manual_seed(derive_seed(_AUGMENT, self.seed, epoch, step, self.rank))
        if self.in_memory and self.images.device == self.device and getattr(self.transform, "accepts_index", False):
            # the transform crops straight out of the dataset tensor: no copy of the whole images
            return self.transform(self.images.permute(0, 3, 1, 2), generator, index=index), y.to(self.device)
        if self.gpu_decode:     # only the JPEG bytes cross to the device
            x = self._decode_on_device(index)
            y = y.pin_memory().to(self.device, non_blocking=True)
            return (to_float(x) if self.transform is None else self.transform(x, generator)), y
        pin = self.device.type == "cuda" and not (self.in_memory and self.images.is_cuda)
        x = self._gather(index, pin).permute(0, 3, 1, 2)     # (B, C, H, W) channels_last view
        if pin:   # gathered straight into page-locked memory: the copy overlaps with compute
            x, y = x.to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        else:
            x, y = x.to(self.device), y.to(self.device)
        x = to_float(x) if self.transform is None else self.transform(x, generator)
        return x, y

    def _gather(self, index: torch.Tensor, pin: bool = False) -> torch.Tensor:
        """uint8 (B, H, W, C) images at ``index`` (in page-locked memory with ``pin``)."""
        if self.in_memory and not pin:
            return self.images[index.to(self.images.device)]
        out = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        if isinstance(self.images, JpegImages):
            return self.images.read(index.numpy(), out=out)
        if self.in_memory:
            return torch.index_select(self.images, 0, index, out=out)
        index = index.numpy()
        order = np.argsort(index, kind="stable")         # read the memmap in file order ...
        out.numpy()[order] = self.images[index[order]]   # ... and put each image where it belongs
        return out

    def _decode_on_device(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) channels_last on the CUDA device, decoded there by nvJPEG; if this torchvision
        cannot decode on the device, the loader says so once and decodes on the CPU from then on."""
        try:
            return self.images.read_on(index.numpy(), self.device)
        except RuntimeError as err:
            warnings.warn(f"decoding JPEGs on {self.device} failed ({err}); decoding them on the CPU instead "
                          f"(use --loader-threads to give it more cores)", RuntimeWarning, stacklevel=2)
            self.gpu_decode = False
            return self._gather(index, True).permute(0, 3, 1, 2).to(self.device, non_blocking=True)


class _Prefetcher:
    """``make(step)`` for ``steps``, yielded in order, computed up to ``depth`` ahead by ``threads`` threads.

    Each thread runs its torch ops on one intra-op thread (batch-level parallelism, like DataLoader's
    worker processes, without oversubscribing the cores the model's own ops use). An exception in
    a thread is re-raised in the consumer; stopping early (break, close, garbage collection of the
    generator) stops the threads.
    """

    def __init__(self, make: Callable[[int], object], steps: range, threads: int, depth: int, name: str) -> None:
        self.make, self.steps, self.depth, self.name = make, steps, max(depth, threads), name
        self.claimable = iter(steps)
        self.claimed, self.wanted = steps.start, steps.start   # next step to claim, next step to yield
        self.results: dict[int, tuple[bool, object]] = {}
        self.stopped = False
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._work, name=f"{name}-w{i}", daemon=True) for i in range(threads)]
        self.torch_threads = torch.get_num_threads()

    def __iter__(self) -> Iterator:
        for thread in self.threads:
            thread.start()
        try:
            for step in self.steps:
                with self.cond:
                    while step not in self.results:
                        self.cond.wait()
                    ok, value = self.results.pop(step)
                    self.wanted = step + 1
                    self.cond.notify_all()
                if not ok:
                    raise value
                yield value
        finally:
            with self.cond:
                self.stopped = True
                self.cond.notify_all()
            for thread in self.threads:
                thread.join(timeout=10)

    def _work(self) -> None:
        torch.set_num_threads(1)        # this thread's OpenMP team only
        try:
            while True:
                with self.cond:
                    while not self.stopped and self.claimed < self.steps.stop and \
                            self.claimed >= self.wanted + self.depth:
                        self.cond.wait()
                    step = next(self.claimable, None)
                    if self.stopped or step is None:
                        return
                    self.claimed = step + 1
                try:
                    result = (True, self.make(step))
                except BaseException as error:  # noqa: BLE001  (handed to the consumer)
                    if hasattr(error, "add_note"):
                        error.add_note(f"(raised in the data loader thread {threading.current_thread().name}, "
                                       f"step {step})")
                    result = (False, error)
                with self.cond:
                    self.results[step] = result
                    self.cond.notify_all()
        finally:
            torch.set_num_threads(self.torch_threads)   # set_num_threads also stores a process-wide default
