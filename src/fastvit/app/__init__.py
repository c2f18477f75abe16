"""``fastvit app``: a local web page over one model (the optional extra ``fastvit[app]``,
Gradio).

* :mod:`~fastvit.app.state` -- the one model a process serves (:func:`load_app_model`),
  its kind, and the uploads it accepts (:func:`read_upload`);
* :mod:`~fastvit.app.inference` -- what each tab computes, without the page;
* :mod:`~fastvit.app.server` -- the page (:func:`build_app`) and :func:`serve`;
* :mod:`~fastvit.app.space` -- the files of a Hugging Face Space serving the same page.

>>> app = load_app_model(checkpoint="runs/t8/best.safetensors")
>>> serve(app, photos="photos/")  # http://127.0.0.1:7860
"""

from fastvit.app.server import build_app, launch_options, serve
from fastvit.app.space import export_space
from fastvit.app.state import AppModel, UploadLimits, load_app_model, read_upload

__all__ = ["AppModel", "UploadLimits", "build_app", "export_space", "launch_options",
           "load_app_model", "read_upload", "serve"]
