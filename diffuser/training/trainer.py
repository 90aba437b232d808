"""Step-based trainer: Adam with gradient accumulation, EMA, periodic logging, sampling and resumable checkpoints.

A step has no fixed cost beyond its forward and backward passes: fused Adam (foreach where fused kernels are
missing), the EMA as one foreach lerp, the gradient norm as one foreach norm, the train/eval mode set once, and
logged values summed on the device and read every ``log_freq`` steps. A step whose loss or gradient is not finite is
skipped on the device (fused Adam's ``found_inf``, as ``GradScaler`` does), so it never reaches the weights; the run
stops at the next read (every log_freq steps and before every checkpoint) with one error naming that step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from diffuser.data.sequence import SequenceDataset
from diffuser.runs.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from diffuser.runs.logger import Logger
from diffuser.training.distributed import Distributed
from diffuser.training.ema import EMA
from diffuser.utils.compiling import compiled


class NonFiniteLossError(ValueError):
    """Training produced a NaN/inf loss or gradient; raised before the bad step touches the weights or a checkpoint."""

    every_rank = True  # under DDP all ranks raise it at the same step; rank 0 prints the line


class BatchStream:
    """Shuffled, resumable stream of index batches: epoch e uses permutation randperm(n, seed + e), drawn on the
    host once per epoch and kept on ``device``, so a batch of indices is a slice there (no copy per step)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, torch.device(device)
        self.epoch, self.position = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=generator).to(self.device)

    def next(self) -> torch.Tensor:
        """The next batch of indices (a tensor on the device); a short tail is filled from the next epoch."""
        out = []
        need = self.batch_size
        while need > 0:
            take = self._perm[self.position : self.position + need]
            out.append(take)
            self.position += len(take)
            need -= len(take)
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation()
        return out[0] if len(out) == 1 else torch.cat(out)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation()


LR_SCHEDULES = ("constant", "cosine")


def make_adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for every tensor; it can skip a step on the device), or the foreach
    kernels where this torch has no fused kernel for the device. The same update as the single-tensor loop."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except RuntimeError:  # torch < 2.4 on CPU, or a device without fused kernels
        return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


def learning_rate_at(step: int, base: float, n_train_steps: int, schedule: str = "constant",
                     warmup_steps: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): a linear warm-up over ``warmup_steps`` to ``base``, then
    ``base`` (constant) or a half cosine from ``base`` down to 0 at ``n_train_steps`` (cosine)."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, n_train_steps - warmup_steps))
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base


class Trainer:
    """Trains ``model`` (whose forward(batch) returns (loss, info)) and keeps an EMA copy used for sampling/saving.
    A model with target networks (IQL) has ``update_targets()``, called after every optimizer step.

    Under DDP (``dist`` from torchrun) every rank runs this loop on its shard of each global batch; only rank 0 logs
    (``logger`` is None elsewhere), samples and writes checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: SequenceDataset,
        logger: Logger | None,
        run_dir: str | Path,
        *,
        n_train_steps: int,
        batch_size: int = 32,
        gradient_accumulate_every: int = 2,
        learning_rate: float = 2e-4,
        lr_schedule: str = "constant",
        lr_warmup_steps: int = 0,
        bf16: bool = False,
        compile: str | None = None,
        ema_decay: float = 0.995,
        step_start_ema: int = 2000,
        update_ema_every: int = 10,
        log_freq: int = 100,
        save_freq: int = 1000,
        sample_freq: int = 0,
        keep_checkpoints: int = 3,
        metric_prefix: str = "train",
        device: str | torch.device = "cpu",
        seed: int = 0,
        sample_fn: Callable[[nn.Module, int], None] | None = None,
        progress: bool = True,
        dist: Distributed | None = None,
    ):
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"trainer.lr_schedule '{lr_schedule}' is not one of {list(LR_SCHEDULES)}")
        if not 0 <= lr_warmup_steps < n_train_steps:
            raise ValueError(f"trainer.lr_warmup_steps {lr_warmup_steps} must be at least 0 and below "
                             f"trainer.n_train_steps ({n_train_steps})")
        self.dist = dist or Distributed()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.net = self.dist.wrap(self.model, self.device)  # what computes the loss: DDP, or the model itself
        if compile is not None:  # forward and backward compiled at the batch's fixed shape (CUDA graphs on a GPU)
            self.net = compiled(self.net, compile, "trainer.compile")
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema = EMA(ema_decay)
        self.dataset = dataset
        self.logger = logger
        self.run_dir = Path(run_dir)
        self.n_train_steps = n_train_steps
        self.gradient_accumulate_every = gradient_accumulate_every
        self.step_start_ema = step_start_ema
        self.update_ema_every = update_ema_every
        self.log_freq, self.save_freq, self.sample_freq = log_freq, save_freq, sample_freq
        self.keep_checkpoints = keep_checkpoints
        self.prefix = metric_prefix
        self.sample_fn = sample_fn
        self.progress = progress
        self.parameters = list(self.model.parameters())  # listed once: walking the modules costs ~1 ms a step
        self.optimizer = make_adam(self.parameters, learning_rate)
        self.model.train()  # once: the EMA copy is the one that samples and is saved
        self.learning_rate, self.lr_schedule, self.lr_warmup_steps = learning_rate, lr_schedule, lr_warmup_steps
        self.bf16 = bf16
        if hasattr(dataset, "to"):  # rows and window index where the model is: batches are gathered there
            dataset.to(self.device)
        self.batches = BatchStream(len(dataset), batch_size, seed, self.device)  # the global batch; ranks shard it
        self.seed = seed
        self.step = 0
        self.dist.seed_rank(seed)
        self._first_bad: torch.Tensor | None = None  # (step, loss, gradient norm) of the first skipped step

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, EMA, optimizer, step, data order and RNG."""
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state(),
            "rng_torch": torch.get_rng_state(),
        }
        if self.dist.enabled:  # each rank's noise stream (a collective: every rank calls state_dict)
            state["rng_torch_ranks"] = self.dist.gather(torch.get_rng_state())
            if self.device.type == "cuda":
                state["rng_cuda_ranks"] = self.dist.gather(torch.cuda.get_rng_state(self.device))
        elif torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema"])
        kernels = [(g["fused"], g["foreach"]) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, (fused, foreach) in zip(self.optimizer.param_groups, kernels):  # this run's kernels, not the saver's
            group["fused"], group["foreach"] = fused, foreach
        if kernels and kernels[0][0]:  # the fused kernel keeps its step counts beside the weights
            for param, param_state in self.optimizer.state.items():
                if "step" in param_state:
                    param_state["step"] = param_state["step"].to(param.device, torch.float32)
        self.batches.load_state(state["batches"])
        self.step = int(state["step"])
        ranks = state.get("rng_torch_ranks")
        if self.dist.enabled and ranks is not None and len(ranks) == self.dist.world_size:
            # clone(): set_rng_state reads a row view of the stacked states from the wrong offset (a crash)
            torch.set_rng_state(ranks[self.dist.rank].clone())
            if "rng_cuda_ranks" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng_cuda_ranks"][self.dist.rank].clone(), self.device)
            return
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and torch.cuda.is_available() and not self.dist.enabled:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.dist.seed_rank(self.seed, self.step)  # saved with another number of processes: fresh streams

    def resume(self) -> bool:
        """Continue from the run folder's latest checkpoint if there is one."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        self.load_state_dict(load_trainer_state(ckpt))
        print(f"resuming {self.run_dir} from step {self.step}")
        return True

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint while the other ranks wait; returns its folder (None on other ranks)."""
        self.check_finite()
        state = self.state_dict()
        return self.dist.on_main(
            lambda: save_checkpoint(self.run_dir, self.step, self.ema_model, state, self.keep_checkpoints),
            what=f"saving the checkpoint of step {self.step}",
        )

    # ------------------------------------------------------------------ loop
    def update_ema(self) -> None:
        if self.step < self.step_start_ema:
            self.ema.copy_from(self.ema_model, self.model)
        else:
            self.ema.update(self.ema_model, self.model)

    def _diverged(self, what: str, step: int | None = None) -> NonFiniteLossError:
        ckpt = latest_checkpoint(self.run_dir)
        kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was saved before it"
        return NonFiniteLossError(
            f"training stopped at step {step or self.step + 1}: {what}; nothing of this step was applied or saved "
            f"and {kept}. "
            "Check the data, or train a new run_dir with a lower trainer.learning_rate (rerunning this run_dir resumes "
            "from that checkpoint with its saved config)"
        )

    def check_finite(self) -> None:
        """Raise NonFiniteLossError if a step since the start was skipped for a non-finite loss or gradient (the one
        host read of the divergence guard)."""
        if self._first_bad is None:
            return
        step, loss, norm = self._first_bad.tolist()
        if step < 0:
            return
        raise self._diverged(f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}",
                             int(step))

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step over gradient_accumulate_every micro-batches; returns averaged logged values as
        tensors on the device (read them with ``.item()``: a host synchronisation).

        A NaN/inf loss or gradient norm skips the update on the device and is remembered; ``check_finite`` raises
        NonFiniteLossError naming the step. Under DDP every rank checks at once, so all stop together.
        """
        lr = learning_rate_at(self.step, self.learning_rate, self.n_train_steps, self.lr_schedule, self.lr_warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # bf16: the networks run under bfloat16 autocast; the weights, the optimizer and the EMA stay float32
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        totals: dict[str, torch.Tensor] = {}
        losses = []
        for i in range(self.gradient_accumulate_every):
            batch = self.dataset.get_batch(self.dist.shard(self.batches.next())).to(self.device)
            with self.dist.no_sync(self.net, sync=i == self.gradient_accumulate_every - 1):
                with autocast:
                    loss, info = self.net(batch)
                (loss / self.gradient_accumulate_every).backward()
            losses.append(loss.detach().clone())  # clone: CUDA graphs reuse their output memory on the next call
            for k, v in info.items():
                v = torch.as_tensor(v, dtype=torch.float32, device=self.device) / self.gradient_accumulate_every
                totals[k] = totals[k] + v if k in totals else v
        # Under DDP the gradients are already averaged over ranks, so every rank sees the same norm.
        grads = [p.grad for p in self.parameters if p.grad is not None]
        totals["grad_norm"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        loss = torch.stack(losses).float().sum()  # non-finite if any micro-batch's loss is
        found_inf = ~(torch.isfinite(loss) & torch.isfinite(totals["grad_norm"]))
        if self.dist.enabled:  # all ranks stop together, now (the norm is the same on every rank: averaged gradients)
            own_loss_bad = not bool(torch.isfinite(loss))
            any_loss_bad = self.dist.any(own_loss_bad)
            if any_loss_bad or not bool(torch.isfinite(totals["grad_norm"])):
                self.optimizer.zero_grad(set_to_none=True)
                raise self._diverged(f"the loss is {loss.item()}" if own_loss_bad else
                                     "the loss is not finite on another process" if any_loss_bad else
                                     f"the gradient norm is {totals['grad_norm'].item()}")
        self._remember_if_bad(found_inf, loss, totals["grad_norm"])
        if self.optimizer.param_groups[0]["fused"]:
            self.optimizer.found_inf = found_inf.float()  # fused Adam skips the update (and its step count) on 1
        elif bool(found_inf):  # no fused kernel on this device: a host read instead
            self.optimizer.zero_grad(set_to_none=True)
            self.check_finite()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.model, "update_targets"):  # a model with target networks (IQL) moves them after each step
            self.model.update_targets()
        return totals

    def _remember_if_bad(self, found_inf: torch.Tensor, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """Keep (step, loss, norm) of the first skipped step, on the device (no host read)."""
        if self._first_bad is None:
            self._first_bad = torch.tensor([-1.0, 0.0, 0.0], device=self.device)
        now = torch.stack([torch.tensor(float(self.step + 1), device=self.device), loss.float(), norm.float()])
        first = found_inf & (self._first_bad[0] < 0)
        self._first_bad = torch.where(first, now, self._first_bad)

    def train(self) -> None:
        """Run until n_train_steps, logging every log_freq, sampling every sample_freq, saving every save_freq.

        On resume, metrics.jsonl rows past the checkpoint's step (logged before an interruption) are dropped, so
        each step appears once.
        """
        main = self.dist.is_main
        self.resume()
        if main:
            self.logger.drop_after(self.step)
        # The context closes the bar on an error too, so an error message starts on its own line.
        bar = tqdm(total=self.n_train_steps, initial=self.step, disable=not (self.progress and main), desc=self.prefix)
        with bar:
            sums: dict[str, torch.Tensor] = {}
            count, tick = 0, time.perf_counter()
            while self.step < self.n_train_steps:
                info = self.train_step()
                self.step += 1
                if self.step % self.update_ema_every == 0:
                    self.update_ema()
                for k, v in info.items():
                    sums[k] = sums[k] + v if k in sums else v
                count += 1
                bar.update(1)
                if self.step % self.log_freq == 0 or self.step == self.n_train_steps:
                    self.check_finite()
                    elapsed = time.perf_counter() - tick
                    values = torch.stack(list(sums.values())).tolist()  # one host read for every logged value
                    metrics = {f"{self.prefix}/{k}": v / count for k, v in zip(sums, values)}
                    metrics[f"{self.prefix}/lr"] = self.optimizer.param_groups[0]["lr"]
                    metrics[f"{self.prefix}/steps_per_sec"] = count / max(elapsed, 1e-9)
                    metrics = self.dist.mean(metrics)  # averaged over ranks (the global batch's values)
                    if main:
                        self.logger.log(metrics, self.step)
                    bar.set_postfix(loss=f"{metrics[f'{self.prefix}/loss']:.4f}")
                    sums, count, tick = {}, 0, time.perf_counter()
                if self.step % self.save_freq == 0 or self.step == self.n_train_steps:
                    self.save()
                if main and self.sample_fn is not None and self.sample_freq and self.step % self.sample_freq == 0:
                    self.sample_fn(self.ema_model, self.step)
