"""Dense-prediction tasks built on a FastViT feature backbone.

Detection / instance segmentation, semantic segmentation and 3D hand mesh each
live in their own sub-package; :mod:`fastvit.tasks.backbone` is the shared
feature extractor, :mod:`fastvit.tasks.training` the shared training run (on
:mod:`fastvit.run`) and :mod:`fastvit.tasks.shared` small shared helpers.
"""
