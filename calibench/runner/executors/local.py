"""The local executor: sequential in this process, or one worker process per visible GPU."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from calibench.runner.executors.base import Executor, OnDone, RunJob, lost
from calibench.spec import RunSpec


def visible_gpus(device: str) -> list[str]:
    """CUDA device ids a local sweep may use: none for ``cpu``, else every visible GPU."""
    if device == "cpu" or device.startswith("cuda:"):
        return []
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def _claim_gpu(queue: multiprocessing.Queue) -> None:
    """Worker initializer: pin this worker process to one GPU before CUDA starts."""
    os.environ["CUDA_VISIBLE_DEVICES"] = queue.get()


class LocalExecutor(Executor):
    """Runs in this process one after another, or with ``workers`` (GPU ids), one spawned worker
    process per id, each seeing only its GPU through ``CUDA_VISIBLE_DEVICES``."""

    name = "local"

    def __init__(self, workers: Sequence[str] = ()) -> None:
        self.workers = list(workers)

    def describe(self) -> str:
        if len(self.workers) > 1:
            return f"local, {len(self.workers)} worker processes (GPUs {','.join(self.workers)})"
        return "local, sequential"

    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        if len(self.workers) <= 1:
            for spec in specs:
                on_done(spec, job(spec))
            return
        self._run_pool(specs, job, on_done)

    def _run_pool(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for gpu in self.workers:
            queue.put(gpu)
        if job.device == "auto":
            job = replace(job, device="cuda")
        pool = ProcessPoolExecutor(
            max_workers=len(self.workers), mp_context=ctx, initializer=_claim_gpu, initargs=(queue,)
        )
        futures = {pool.submit(job, spec): spec for spec in specs}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        outcome = lost(futures[future], "a worker process died (rerun to resume)")
                    on_done(futures[future], outcome)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
