"""3D hand mesh regression on FreiHAND (``fastvit hand``).

A FastViT backbone and an iterative regression head predict MANO pose and
shape and a weak-perspective camera (:mod:`.model`); MANO forward kinematics
run through :mod:`smplx` from a safely converted model file (:mod:`.mano`);
:mod:`.data` reads the FreiHAND layout, :mod:`.losses` and :mod:`.metrics` hold
the training losses and the benchmark's PA-MPJPE / PA-MPVPE / F-scores,
:mod:`.engine` training, loading and evaluation, :mod:`.predict` prediction
and :mod:`.report` the JSON + PNG reports.
"""
