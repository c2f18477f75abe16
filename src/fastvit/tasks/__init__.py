"""Dense-prediction tasks built on a FastViT feature backbone.

Detection / instance segmentation, semantic segmentation and 3D hand mesh each
live in their own sub-package; :mod:`fastvit.tasks.backbone` is the shared
feature extractor and :mod:`fastvit.tasks.common` the shared training plumbing.
"""
