"""Dense-prediction tasks built on a FastViT feature backbone.

Detection / instance segmentation, semantic segmentation and 3D hand mesh each
live in their own sub-package; :mod:`fastvit.tasks.backbone` is the shared
feature extractor, :mod:`fastvit.tasks.recipes` loads a task's recipe (the run
itself is :mod:`fastvit.run.training`, shared with classification),
:mod:`fastvit.tasks.inputs` the images ``predict`` runs on and :mod:`fastvit.tasks.shared`
small shared helpers. Each task offers the same three
functions: ``load_<task>`` -> ``Loaded<Task>``, ``evaluate_<task>(model, dataset, env)``
and a ``predict_*(loaded, inputs, out_dir)`` (docs/tasks.md).
"""
