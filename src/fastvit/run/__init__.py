"""The run layer every trainer shares (classification and the dense tasks).

:mod:`.device` (``--device``/``--amp``/``--threads``), :mod:`.distributed`
(torchrun process groups), :mod:`.seeding` and :mod:`.sampling` (the
deterministic, resumable data order), :mod:`.recipes` (YAML recipes checked by
dataclasses), :mod:`.store` (the run checkpoint format), :mod:`.optim` (AdamW)
and :mod:`.lr_schedule` (warmup, main phase, cooldown), :mod:`.loop` (one epoch
of optimizer steps), :mod:`.epochs` (epochs, evaluation, checkpoints),
:mod:`.metrics_log` (metrics.jsonl, TensorBoard, curves) and :mod:`.training`,
the one run path every task goes through with its
:class:`~fastvit.run.training.TaskSpec`. Nothing here knows about a particular
task; nothing here imports :mod:`fastvit.train` or :mod:`fastvit.tasks`.
"""
