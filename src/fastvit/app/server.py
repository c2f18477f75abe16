"""The page of ``fastvit app``: Gradio Blocks with one tab per use of the model, and
``serve`` to run it on this machine.

Every tab is built whatever the model is; a tab whose model is another kind shows what
to start the app with instead (:meth:`AppModel.wrong_kind`), and its button answers the
same. A tab's function never shows a traceback for bad input: a
:class:`~fastvit.errors.FastVitError` (a broken or oversized upload, empty labels...)
becomes the tab's status line. Each tab is also an API endpoint (``api_name``) for
``gradio_client``.

Safe by default: :func:`serve` binds 127.0.0.1 unless told otherwise, limits uploads
(Gradio's ``max_file_size``, then :func:`fastvit.app.state.read_upload`), serves no file
but its own outputs and, with a photo folder, that folder (``allowed_paths``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastvit.app import inference
from fastvit.app.state import AppModel, UploadLimits, read_upload
from fastvit.errors import ConfigError, DataError, FastVitError
from fastvit.extras import require

log = logging.getLogger(__name__)
FEATURE = "fastvit app"
TABS = {"classify": "classifier", "zeroshot": "clip", "search": "clip", "detect": "detection",
        "segment": "segmentation", "hand": "hand"}


def _gradio() -> Any:
    return require("gradio", FEATURE, "app")


def _image_input(gr: Any, label: str, elem_id: str | None = None) -> Any:
    """An image upload handed to the tab as its file path, undecoded: Gradio's own
    ``Image`` opens uploads with PIL first, where a broken file would fail outside our
    bad-image handling. (Overridden on the instance: a subclass of a Gradio component
    makes Gradio write a ``.pyi`` stub beside this module.)"""
    image = gr.Image(label=label, type="filepath", sources=["upload", "clipboard"],
                     height=320, elem_id=elem_id)

    def path_only(payload: Any) -> str | None:
        return None if payload is None or payload.path is None else str(payload.path)

    image.preprocess = path_only
    return image


def _guarded(app: AppModel, kind: str, tab: str, empty: tuple) -> Callable:
    """Wrap a tab's function: the wrong kind of model, or a FastVitError, returns ``empty``
    outputs and the message as the status (the last output)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any) -> tuple:
            try:
                if not app.has(kind):
                    raise _WrongKind(app.wrong_kind(kind, tab))
                return fn(*args)
            except FastVitError as err:
                log.info("fastvit app %s: %s", tab, err)
                message = str(err) if isinstance(err, _WrongKind) else f"**Error:** {err}"
                return (*empty, message) if empty else message
        return run
    return wrap


class _WrongKind(FastVitError):
    """The tab's model is not the one this app serves."""


class Page:
    """The tabs' functions over one :class:`AppModel` (kept apart from the layout so each
    is a plain callable)."""

    def __init__(self, app: AppModel, limits: UploadLimits, photos: Path | None,
                 repeats: int = 5) -> None:
        self.app, self.limits, self.photos, self.repeats = app, limits, photos, repeats
        self.index: Any = None

    def classify(self, path: str | None) -> tuple:
        result = inference.classify(self.app.model, read_upload(path, self.limits),
                                    repeats=self.repeats)
        top1, p = next(iter(result.top.items()))
        seen = result.network_input  # shown at least 224 px wide, its pixels as squares
        scale = max(1, -(-224 // seen.shape[1]))
        seen = seen.repeat(scale, axis=0).repeat(scale, axis=1)
        return (result.top, seen, inference.format_latency(result.latency),
                f"top-1: **{top1}** ({100 * p:.1f}%)")

    def zeroshot(self, path: str | None, labels: str, template: str) -> tuple:
        probs = inference.zero_shot(self.app.model, read_upload(path, self.limits), labels,
                                    template)
        best = max(probs, key=probs.get)
        return probs, f"most likely: **{best}** ({100 * probs[best]:.1f}%)"

    def build_index(self, progress: Any = None) -> str:
        if self.photos is None:
            raise ConfigError("no photo folder: start the app with --photos DIR")

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress((done, total), desc="embedding photos", unit="photos")
        self.index = inference.index_photos(self.app.model, self.photos, progress=report)
        skipped = f", {len(self.index.skipped)} unreadable left out" if self.index.skipped \
            else ""
        return (f"{len(self.index.paths)} photos indexed{skipped} (cached in "
                f"{inference.index_file(self.app.model, self.photos.resolve())})")

    def search(self, text: str, top: float) -> tuple:
        if self.index is None:
            self.build_index()
        hits = inference.search_photos(self.app.model, self.index, text, int(top))
        return hits, f"{len(hits)} of {len(self.index.paths)} photos"

    def detect(self, path: str | None, threshold: float) -> tuple:
        read_upload(path, self.limits)
        drawing, found = inference.detect(self.app.model, path, float(threshold))
        return drawing, found, f"{len(found)} objects"

    def segment(self, path: str | None) -> tuple:
        read_upload(path, self.limits)
        overlay, classes = inference.segment(self.app.model, path)
        return overlay, f"classes present: {', '.join(map(str, classes))}"

    def hand(self, path: str | None) -> tuple:
        read_upload(path, self.limits)
        drawing, joints = inference.hand_mesh(self.app.model, path)
        return drawing, joints, "mesh and skeleton of the predicted MANO hand"


def _note(gr: Any, app: AppModel, kind: str, tab: str) -> None:
    if not app.has(kind):
        gr.Markdown(app.wrong_kind(kind, tab))


def build_app(app: AppModel, *, photos: str | Path | None = None,
              limits: UploadLimits | None = None, examples: list[str] | None = None,
              repeats: int = 5) -> Any:
    """The ``gradio.Blocks`` of ``app``: tabs Classify, Zero-shot, Search, Detect, Segment,
    Hand. ``photos`` is the folder the Search tab ranks; ``examples`` images to pick from."""
    gr = _gradio()
    limits = limits or UploadLimits()
    photos = Path(photos) if photos is not None else None
    if photos is not None and not photos.is_dir():
        raise DataError(f"photo folder not found: {photos}")
    page = Page(app, limits, photos, repeats)
    examples = [str(p) for p in (examples or [])]

    def pick(image: Any) -> None:
        if examples:
            gr.Examples(examples, inputs=image, label="or pick one")
    with gr.Blocks(title=f"fastvit: {app.name}", analytics_enabled=False) as blocks:
        gr.Markdown(f"# fastvit app: {app.name}\nweights: `{app.source}`")
        with gr.Tab("Classify"):
            _note(gr, app, "classifier", "Classify")
            with gr.Row():
                with gr.Column():
                    image = _image_input(gr, "image", "classify-image")
                    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    pick(image)
                with gr.Column():
                    status = gr.Markdown(elem_id="classify-status")
                    top = gr.Label(num_top_classes=5, label="top-5", elem_id="classify-top")
                    seen = gr.Image(label="what the network saw (after resize and crop)",
                                    type="numpy", interactive=False, height=224,
                                    format="png")
                    latency = gr.Markdown(label="latency")
            button.click(_guarded(app, "classifier", "Classify", (None, None, ""))(
                page.classify), image, [top, seen, latency, status], api_name="classify")
        with gr.Tab("Zero-shot"):
            _note(gr, app, "clip", "Zero-shot")
            with gr.Row():
                with gr.Column():
                    zs_image = _image_input(gr, "image")
                    pick(zs_image)
                    labels = gr.Textbox(label="labels, comma-separated",
                                        value="a cat, a dog, a car")
                    template = gr.Textbox(label="prompt ({} is the label)",
                                          value="a photo of a {}.")
                    zs_button = gr.Button("Classify", variant="primary")
                with gr.Column():
                    zs_status = gr.Markdown()
                    zs_probs = gr.Label(label="probabilities")
            zs_button.click(_guarded(app, "clip", "Zero-shot", (None,))(page.zeroshot),
                            [zs_image, labels, template], [zs_probs, zs_status],
                            api_name="zeroshot")
        with gr.Tab("Search"):
            _note(gr, app, "clip", "Search")
            gr.Markdown(f"photos: `{photos}`" if photos else
                        "Start the app with `--photos DIR` to search a folder of photos.")
            with gr.Row():
                index_button = gr.Button("Index the photos")
                index_status = gr.Markdown()
            query = gr.Textbox(label="look for", placeholder="a dog on a beach")
            top_k = gr.Slider(1, 48, value=12, step=1, label="how many")
            search_status = gr.Markdown()
            gallery = gr.Gallery(label="best matches", columns=6, height="auto")

            def index_with_progress(progress=gr.Progress()) -> str:  # noqa: B008
                return page.build_index(progress)
            index_button.click(_guarded(app, "clip", "Search", ())(index_with_progress), None,
                               [index_status], api_name="index")
            search_fn = _guarded(app, "clip", "Search", (None,))(page.search)
            query.submit(search_fn, [query, top_k], [gallery, search_status],
                         api_name="search")
        with gr.Tab("Detect"):
            _note(gr, app, "detection", "Detect")
            with gr.Row():
                with gr.Column():
                    det_image = _image_input(gr, "image")
                    pick(det_image)
                    threshold = gr.Slider(0, 1, value=0.5, label="score threshold")
                    det_button = gr.Button("Detect", variant="primary")
                with gr.Column():
                    det_status = gr.Markdown()
                    det_out = gr.Image(label="detections", interactive=False,
                                       format="png")
                    det_json = gr.JSON(label="boxes")
            det_button.click(_guarded(app, "detection", "Detect", (None, None))(page.detect),
                             [det_image, threshold], [det_out, det_json, det_status],
                             api_name="detect")
        with gr.Tab("Segment"):
            _note(gr, app, "segmentation", "Segment")
            with gr.Row():
                with gr.Column():
                    seg_image = _image_input(gr, "image")
                    pick(seg_image)
                    seg_button = gr.Button("Segment", variant="primary")
                with gr.Column():
                    seg_status = gr.Markdown()
                    seg_out = gr.Image(label="label map over the image",
                                       interactive=False, format="png")
            seg_button.click(_guarded(app, "segmentation", "Segment", (None,))(page.segment),
                             seg_image, [seg_out, seg_status], api_name="segment")
        with gr.Tab("Hand"):
            _note(gr, app, "hand", "Hand")
            with gr.Row():
                with gr.Column():
                    hand_image = _image_input(gr, "a crop centred on one right hand")
                    pick(hand_image)
                    hand_button = gr.Button("Fit the hand mesh", variant="primary")
                with gr.Column():
                    hand_status = gr.Markdown()
                    hand_out = gr.Image(label="mesh and skeleton", interactive=False,
                                        format="png")
                    hand_json = gr.JSON(label="3D joints (metres, root-relative)")
            hand_button.click(_guarded(app, "hand", "Hand", (None, None))(page.hand),
                              hand_image, [hand_out, hand_json, hand_status], api_name="hand")
    return blocks


def launch_options(*, photos: str | Path | None = None, limits: UploadLimits | None = None,
                   host: str | None = "127.0.0.1", port: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``Blocks.launch`` that keep the app local and closed: this
    machine only (``host``; None lets ``GRADIO_SERVER_NAME`` decide, as on a Hugging Face
    Space), no share link, uploads limited, no file served from outside the photo
    folder."""
    limits = limits or UploadLimits()
    options: dict[str, Any] = {
        "server_name": host, "server_port": port, "share": False, "ssr_mode": False,
        "max_file_size": limits.max_bytes, "show_error": False, "quiet": True,
        "allowed_paths": [str(Path(photos).resolve())] if photos else [],
        "footer_links": ["api"],
    }
    return options


def serve(app: AppModel, *, photos: str | Path | None = None,
          limits: UploadLimits | None = None, host: str | None = "127.0.0.1",
          port: int | None = None, block: bool = True, **build: Any) -> Any:
    """Build and launch the page of ``app``. ``block=False`` returns the running
    ``Blocks`` at once (call ``.close()``); its address is ``.local_url``."""
    blocks = build_app(app, photos=photos, limits=limits, **build)
    blocks.queue(default_concurrency_limit=1)  # one model: one prediction at a time
    blocks.launch(prevent_thread_lock=not block,
                  **launch_options(photos=photos, limits=limits, host=host, port=port))
    return blocks
