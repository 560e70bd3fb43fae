"""BatchLoader: determinism, exact resume, DDP sharding, memmap == in-memory, worker errors, early stop."""
import gc
import threading
import time

import numpy as np
import pytest
import torch

from alexnet.data.loader import BatchLoader
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import TrainTransform

N = 50


@pytest.fixture(scope="module")
def data():
    images = np.random.default_rng(0).integers(0, 256, (N, 12, 12, 3), dtype=np.uint8)
    return images, np.arange(N) % 7, compute_stats(images)


def loader(data, **kw):
    images, labels, stats = data
    kw.setdefault("transform", TrainTransform(10, pca_std=0.1, stats=stats))
    return BatchLoader(kw.pop("images", images), kw.pop("labels", labels), kw.pop("batch_size", 8), **kw)


def batches(it):
    return [(x.clone(), y.clone()) for x, y in it]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_are_float_channels_last_and_deterministic_given_the_seed(data):
    first = batches(loader(data, seed=3).iterate(0))
    x, y = first[0]
    assert x.shape == (8, 3, 10, 10) and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64 and len(first) == N // 8
    assert_same(first, batches(loader(data, seed=3).iterate(0)))
    assert_same(first, batches(loader(data, seed=3, prefetch=0).iterate(0)))
    other = batches(loader(data, seed=4).iterate(0))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_worker_threads_give_the_same_batches_and_leave_torch_threads_alone(data):
    threads = torch.get_num_threads()
    one = batches(loader(data, seed=5).iterate(1))
    assert_same(one, batches(loader(data, seed=5, threads=3, prefetch=4).iterate(1)))
    assert_same(one, batches(loader(data, seed=5, transform=loader(data).transform, in_memory_bytes=0,
                                    threads=2).iterate(1)))
    assert torch.get_num_threads() == threads


def test_resume_at_a_step_gives_the_tail_of_the_epoch(data):
    full = batches(loader(data).iterate(2))
    assert_same(full[3:], batches(loader(data).iterate(2, start_step=3)))


def test_epochs_differ_and_set_epoch_selects_one(data):
    l = loader(data, transform=None)
    orders = [l.indices(e) for e in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    l.set_epoch(1)
    assert_same(batches(l), batches(l.iterate(1)))
    assert sorted(orders[0].tolist()) == list(range(N))


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_ranks_shards_cover_every_sample(data, world_size):
    ids = np.arange(N)
    seen = []
    shards = [loader(data, labels=ids, transform=None, rank=r, world_size=world_size, drop_last=False)
              for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1                        # same number of batches on every rank
    for s in shards:
        seen += [i for _, y in s.iterate(1) for i in y.tolist()]
    counts = np.bincount(seen, minlength=N)
    padding = world_size * shards[0].num_samples - N                  # wrapped around, as DistributedSampler
    assert counts.min() == 1 and counts.sum() == N + padding
    if N % world_size == 0:
        assert (counts == 1).all()
    full = torch.empty(N + padding, dtype=torch.long)                 # interleave the shards back
    for r, s in enumerate(shards):
        full[r::world_size] = s.indices(1)
    assert sorted(full[:N].tolist()) == list(range(N)) and torch.equal(full[N:], full[:padding])
    assert set(np.flatnonzero(counts == 2)) == set(full[:padding].tolist())


def test_drop_last_and_len(data):
    assert len(loader(data, batch_size=8)) == 6 and len(loader(data, batch_size=8, drop_last=False)) == 7
    assert len(loader(data, batch_size=8, world_size=2, rank=1)) == 3
    last = batches(loader(data, batch_size=8, drop_last=False, transform=None).iterate(0))[-1]
    assert len(last[1]) == 2


def test_memmap_and_in_memory_give_identical_batches(data, tmp_path):
    images, labels, stats = data
    mm = np.memmap(tmp_path / "images.u8", np.uint8, "w+", shape=images.shape)
    mm[:] = images
    mm.flush()
    ro = np.memmap(tmp_path / "images.u8", np.uint8, "r", shape=images.shape)
    from_disk = loader(data, images=ro, in_memory_bytes=0)
    in_memory = loader(data, images=ro)
    assert not from_disk.in_memory and in_memory.in_memory
    assert_same(batches(from_disk.iterate(1)), batches(in_memory.iterate(1)))
    assert_same(batches(in_memory.iterate(1)), batches(loader(data, images=torch.from_numpy(images)).iterate(1)))


def test_an_error_in_the_prefetch_thread_reaches_the_consumer(data):
    images, labels, stats = data
    calls = []

    def flaky(x, generator):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("broken batch")
        return x.float()

    got = []
    with pytest.raises(ValueError, match="broken batch"):
        for x, _ in loader(data, transform=flaky).iterate(0):
            got.append(x)
    assert len(got) == 2


def _threads(prefix="BatchLoader"):
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _wait_gone(deadline_s=5.0):
    end = time.monotonic() + deadline_s
    while _threads() and time.monotonic() < end:
        time.sleep(0.01)
    return not _threads()


def test_stopping_early_does_not_hang_and_stops_the_thread(data):
    l = loader(data, batch_size=2, prefetch=1)                       # a full queue blocks the thread
    start = time.monotonic()
    for step, _ in enumerate(l.iterate(0)):
        if step == 1:
            break
    assert _wait_gone() and time.monotonic() - start < 5
    it = l.iterate(0)
    next(it)
    del it                                                            # garbage collection also stops it
    gc.collect()
    assert _wait_gone()


def test_bad_arguments_are_explained(data):
    images, labels, _ = data
    with pytest.raises(TypeError, match="uint8"):
        BatchLoader(images.astype(np.float32), labels, 8, transform=None)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, labels[:-1], 8, transform=None)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(images, labels, 8, transform=None, rank=2, world_size=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches(data):
    cpu, gpu = batches(loader(data).iterate(0)), batches(loader(data, device="cuda").iterate(0))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda and torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-5, rtol=0)
