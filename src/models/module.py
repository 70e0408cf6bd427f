"""The one LightningModule: trains any net, with loss and metrics chosen by the task.

Its hyperparameters are plain dicts (``_target_`` specs for the net, optimizer and
scheduler), so checkpoints load under torch's ``weights_only=True`` and
``SupervisedModule.load_from_checkpoint(path)`` rebuilds the model without Hydra.

Those specs come back from checkpoints, which may come from anywhere, so they are never
given to Hydra's ``instantiate`` (which calls whatever a ``_target_`` names, nested
anywhere). :func:`spec_class` admits only the classes a spec may name, and only plain
values as their arguments: loading a checkpoint runs no code but this project's
constructors and torch's optimizers and schedulers.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, MetricCollection

from src.harness.allowlist import build, spec_class
from src.harness.errors import ConfigError
from src.harness.steps_per_call import optimizer_step
from src.tasks import TASKS


class SupervisedModule(L.LightningModule):
    """Trains a net with the loss and metrics of its data's task (``src/tasks.py``).

    Losses and metrics are torchmetrics accumulated on the device: no host-device sync per
    training step, one per epoch.

    ``trainer.steps_per_call=K`` (see :meth:`take_steps_per_call`) makes one Lightning step
    run K optimizer steps, over K consecutive batches the data module serves as one: the
    fixed cost of a Lightning step is paid once per K steps.
    """

    steps_per_call = 1
    step_batch_size = 0

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        task: str,
        num_outputs: int,
        scheduler: dict[str, Any] | None = None,
        monitor: str = "val/loss",
        compile: bool = False,
    ) -> None:
        """``compile`` (``model.compile=true``) compiles the net with ``torch.compile`` before
        it trains; a choice of how to run, not of the model, so checkpoints do not record it."""
        super().__init__()
        if not (
            task in TASKS
            and isinstance(num_outputs, int)
            and isinstance(monitor, str)
            and isinstance(compile, bool)
        ):
            raise ConfigError(
                f"task must be one of {tuple(TASKS)}, num_outputs an integer, monitor a metric "
                f"name and model.compile true or false; got {task!r}, {num_outputs!r}, "
                f"{monitor!r} and {compile!r}"
            )
        spec_class(optimizer, "optimizer")  # checked now: configure_optimizers builds it
        if scheduler:
            spec_class(scheduler, "scheduler")
        self.save_hyperparameters(
            {
                "net": net,
                "optimizer": optimizer,
                "task": task,
                "num_outputs": num_outputs,
                "scheduler": scheduler,
                "monitor": monitor,
            }
        )
        self.net = build(net, "net")
        self.compile_net = compile
        self.task = TASKS[task]
        # NaN kept (torchmetrics drops it by default): DivergenceGuard must see it
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        metrics = MetricCollection(self.task.metrics(num_outputs))
        # train/acc from the outputs each step computes anyway, as a mean of hits: a
        # torchmetrics Accuracy's checks per step cost the small MLP about 12% of its speed
        self.train_acc = MeanMetric(nan_strategy="disable") if self.task.hits else None
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def configure_model(self) -> None:
        """Compile the net in place, once, in the process that runs it (a spawned DDP worker
        included). ``nn.Module.compile`` keeps the state_dict keys (``torch.compile(net)``
        would prefix them with ``_orig_mod.``), so checkpoints load into an uncompiled net."""
        if self.compile_net:
            self.net.compile()
            self.compile_net = False

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def take_steps_per_call(self, steps: int, batch_size: int) -> None:
        """Run ``steps`` optimizer steps per training step, on batches of ``batch_size`` cut
        from the group the data module serves; the harness calls it for
        ``trainer.steps_per_call``. Lightning's manual optimization then counts each
        ``optimizer.step()`` in ``global_step``, so ``max_steps`` and checkpoints count steps."""
        self.steps_per_call, self.step_batch_size = steps, batch_size
        self.automatic_optimization = steps == 1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if not self.automatic_optimization:
            return self.grouped_steps(*batch)
        x, y = batch
        output = self.net(x)
        loss = self.task.loss(output, y)
        self.train_loss.update(loss.detach(), weight=len(y))
        if self.train_acc is not None:
            self.train_acc.update(self.task.hits(output.detach(), y))
        return loss

    def grouped_steps(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """One optimizer step per batch of the group, as automatic optimization takes them
        (zero the gradients, backward, step, then a step-interval scheduler), stopping at
        ``max_steps``; the group's losses reach the metrics in one update. Returns the mean
        loss of the group, which the divergence guard and the step-loss curve read."""
        step = optimizer_step(self)
        configs = self.trainer.lr_scheduler_configs
        schedulers = [config.scheduler for config in configs if config.interval == "step"]
        max_steps = self.trainer.max_steps
        steps = None if max_steps < 0 else max_steps - self.trainer.global_step
        size = self.step_batch_size
        batches = zip(inputs.split(size), targets.split(size), strict=True)
        losses, sizes, hits = [], [], []
        for x, y in itertools.islice(batches, steps):
            output = self.net(x)
            loss = self.task.loss(output, y)
            step(loss)
            for scheduler in schedulers:
                scheduler.step()
            losses.append(loss.detach())
            sizes.append(len(y))
            if self.train_acc is not None:
                hits.append(self.task.hits(output.detach(), y))
        losses = torch.stack(losses)
        self.train_loss.update(losses, weight=torch.tensor(sizes, device=self.device))
        if hits:
            self.train_acc.update(torch.cat(hits))
        return losses.mean()

    def on_train_epoch_end(self) -> None:
        # Logged once an epoch: a self.log per step costs as much as a small model's step.
        self.log("train/loss", self.train_loss)
        if self.train_acc is not None:
            self.log("train/acc", self.train_acc)
        if not self.automatic_optimization:
            self.step_epoch_schedulers()

    def step_epoch_schedulers(self) -> None:
        """What automatic optimization does at an epoch's end, after validation: step the
        epoch-interval schedulers, a plateau one with the metric it monitors."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != "epoch":
                continue
            if not isinstance(config.scheduler, ReduceLROnPlateau):
                config.scheduler.step()
            elif self.hparams.monitor in self.trainer.callback_metrics:  # an epoch validated
                config.scheduler.step(self.trainer.callback_metrics[self.hparams.monitor])

    def evaluate(self, batch: tuple[Tensor, Tensor], loss_metric: MeanMetric, metrics) -> Tensor:
        """Update and log the loss and the metrics named by ``metrics.prefix`` (``val/``)."""
        x, y = batch
        output = self.net(x)
        loss_metric.update(self.task.loss(output, y), weight=len(y))
        metrics.update(self.task.predictions(output), y)
        self.log(f"{metrics.prefix}loss", loss_metric)
        self.log_dict(metrics)
        return output

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Returns the net's output, which Lightning hands to the callbacks that draw the
        validation set (confusion matrix, samples): they need no second forward pass."""
        return self.evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, self.test_loss, self.test_metrics)

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return self.task.predictions(self.net(x))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build(self.hparams.optimizer, "optimizer")(params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        spec = dict(self.hparams.scheduler)
        interval = spec.pop("interval", "epoch")
        scheduler = build(spec, "scheduler")(optimizer=optimizer)
        config = {"scheduler": scheduler, "interval": interval}
        if self.automatic_optimization:  # else step_epoch_schedulers reads it
            config["monitor"] = self.hparams.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
