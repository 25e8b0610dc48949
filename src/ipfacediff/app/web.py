"""`ipfacediff serve`: the Gradio page. Pick or upload a video, see the tracked face and the crop with its
paste-back region, write prompts, preview a short span at reduced steps, queue the full edit, follow
its phases, download the video and its JSON record.

Every handler returns a message for the page instead of raising: bad input never takes the server down.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from .engine import EditOptions, check_video, face_overview, preview
from .jobs import PHASES, JobQueue

MASKS = ["auto", "face", "face_hair", "ellipse"]


def _err(e: Exception) -> str:
    return f"⚠️ {html.escape(str(e))}"


def _prompts(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").splitlines() if p.strip()]


def _gap(frame: np.ndarray, px: int = 6) -> np.ndarray:
    return np.full((frame.shape[0], px, 3), 255, np.uint8)


def _captioned(img: np.ndarray, text: str) -> np.ndarray:
    """`img` under a white strip carrying `text`."""
    import cv2

    strip = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text[:110], (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, img])


def status_html(jobs) -> str:
    """All jobs, newest first; the running one with one progress bar per phase."""
    if not jobs:
        return "<p id='no-jobs'>No jobs yet.</p>"
    rows = []
    for j in reversed(jobs):
        head = f"<b>Job {j.id}</b> · {html.escape(j.name)} · {len(j.prompts)} prompt(s) · <span class='state'>{j.state}</span>"
        if j.message:
            head += f" · {html.escape(j.message)}"
        body = ""
        if j.state == "running":
            body = f"<div>prompt {j.prompt_index + 1}/{len(j.prompts)}: {html.escape(j.prompts[j.prompt_index])}</div>"
            for _, name in PHASES:
                v = j.phases.get(name, 0.0)
                body += (f"<div class='phase'><span style='display:inline-block;width:11em'>{name}</span>"
                         f"<progress max='100' value='{100 * v:.0f}'></progress> {100 * v:.0f}%</div>")
        rows.append(f"<div class='job' data-state='{j.state}' id='job-{j.id}'>{head}{body}</div>")
    return "\n".join(rows)


def build_app(queue: JobQueue, samples: list[Path], defaults: EditOptions):
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no usage reports sent anywhere
    import gradio as gr

    sample_names = {p.name: p for p in samples}

    def chosen(upload, pick) -> tuple[Path, str]:
        if upload:
            return Path(upload), Path(upload).name
        if pick:
            return sample_names[pick], pick
        raise InputError(None, "no video: upload one or pick a sample")

    def px(name: str, text: str | None) -> float | None:
        """A crop-pixel field: empty = the editor's default."""
        if not (text or "").strip():
            return None
        try:
            v = float(text)
        except ValueError:
            raise InputError(None, f"{name} must be a number of crop pixels, got {text!r}") from None
        if not v >= 0:
            raise InputError(None, f"{name} must be >= 0 crop px, got {text!r}")
        return v

    def options(steps, seed, mask, grow="", feather="") -> EditOptions:
        grow, feather = px("grow", grow), px("feather", feather)
        return replace(defaults, steps=int(steps) if steps else defaults.steps, seed=int(seed) if seed is not None else defaults.seed,
                       mask=mask or "auto", mask_dilate=grow, mask_feather=feather)

    def show_face(upload, pick, mask):
        try:
            path, name = chosen(upload, pick)
            info = check_video(path)
            frame, crop, track = face_overview(path, replace(defaults, mask=mask or "auto"))
            msg = (f"{html.escape(name)}: {info.width}x{info.height}, {info.fps_str} fps, {info.n_frames} frames, "
                   f"audio {'yes' if info.has_audio else 'no'}; face found in {track.n_detected}/{track.n_frames} "
                   f"of the first frames.")
            return frame, crop, msg
        except InputError as e:  # name the file as the user knows it, not Gradio's upload path
            return None, None, _err(InputError(name if "name" in locals() else None, e.problem))

    def run_preview(upload, pick, text, steps, seed, mask, grow, feather, progress=gr.Progress()):  # noqa: B008 - Gradio injects progress through this default
        prompts = _prompts(text)
        try:
            path, _ = chosen(upload, pick)
            check_video(path)
            if not prompts:
                raise InputError(None, "empty prompt: write at least one (one per line)")
            if not queue.busy.acquire(blocking=False):
                raise InputError(None, "a full edit is running; preview again when it finishes (see the jobs below)")
            try:
                rows = []
                for k, prompt in enumerate(prompts):
                    progress(k / len(prompts), desc=f"preview {k + 1}/{len(prompts)}")
                    pairs, rec = preview(path, prompt, options(steps, seed, mask, grow, feather), queue.work_dir)
                    every = rec["config"].get("keyframe_interval", 8)
                    rows += [_captioned(np.hstack([a, _gap(a), b]), f"{prompt} | frame {i * every}: original | edited")
                             for i, (a, b) in enumerate(pairs)]
            finally:
                queue.busy.release()
            return np.vstack(rows), f"Preview: {len(rows)} keyframe(s) at {rec['config']['steps']} steps (original | edited)."
        except InputError as e:
            return None, _err(e)

    def submit(upload, pick, text, steps, seed, mask, grow, feather):
        try:
            path, name = chosen(upload, pick)
            _, msg = queue.submit(path, name, _prompts(text), options(steps, seed, mask, grow, feather))
            return html.escape(msg)
        except InputError as e:
            return _err(e)

    def refresh():
        jobs = queue.snapshot()
        files = [str(p) for j in jobs if j.state in ("done", "failed") for p in j.outputs if p.is_file()]
        return status_html(jobs), files or None

    with gr.Blocks(title="ipfacediff editor") as demo:
        gr.Markdown("# ipfacediff: edit the face in a video with a text prompt")
        with gr.Row():
            upload = gr.File(label="Upload a video", type="filepath", elem_id="upload")
            pick = gr.Dropdown(choices=sorted(sample_names), value=None, label="…or pick a sample", elem_id="pick")
        message = gr.Markdown(elem_id="message")
        with gr.Row():
            face = gr.Image(label="Tracked face (middle of the first second)", elem_id="face", interactive=False)
            crop = gr.Image(label="Aligned crop; shaded: paste-back region", elem_id="crop", interactive=False)
        prompts = gr.Textbox(lines=3, label="Prompts (one per line)", elem_id="prompts",
                             placeholder="a photo of a person with blond hair")
        with gr.Row():
            steps = gr.Number(value=defaults.steps, label="DDIM steps (full run; preview uses a fifth)", precision=0, elem_id="steps")
            seed = gr.Number(value=defaults.seed if defaults.seed is not None else 0, label="seed", precision=0, elem_id="seed")
            mask = gr.Dropdown(choices=MASKS, value=defaults.mask, label="paste-back region (auto: from the prompt)", elem_id="mask")
            grow = gr.Textbox(value="", label="grow region by (crop px)", placeholder="crop/32", elem_id="grow")
            feather = gr.Textbox(value="", label="feather band (crop px)", placeholder="crop/16", elem_id="feather")
        with gr.Row():
            preview_btn = gr.Button("Preview keyframes", elem_id="preview-btn")
            run_btn = gr.Button("Run full edit", variant="primary", elem_id="run-btn")
        gallery = gr.Image(label="Preview: original | edited (keyframes of the first second)", elem_id="preview",
                           interactive=False, height=420)
        gr.Markdown("## Jobs (one runs at a time; they survive a page reload)")
        status = gr.HTML(elem_id="status")
        results = gr.File(label="Results (video + JSON record)", file_count="multiple", interactive=False, elem_id="results")

        inputs = [upload, pick, mask]
        upload.change(show_face, inputs, [face, crop, message])
        pick.change(show_face, inputs, [face, crop, message])
        edit_inputs = [upload, pick, prompts, steps, seed, mask, grow, feather]
        preview_btn.click(run_preview, edit_inputs, [gallery, message])
        run_btn.click(submit, edit_inputs, [message])
        gr.Timer(1.0).tick(refresh, None, [status, results])
        demo.load(refresh, None, [status, results])
    return demo


def serve(host: str, port: int, out_dir: Path, samples: list[Path], defaults: EditOptions, block: bool = True):
    """Start the app; returns (demo, url) when block is False."""
    demo = build_app(JobQueue(out_dir, Path(tempfile.mkdtemp(prefix="ipfacediff-app-"))), samples, defaults)
    demo.queue(default_concurrency_limit=1)
    # allowed_paths: the app's own output folder only (uploads live in Gradio's cache, which it serves itself)
    _, url, _ = demo.launch(server_name=host, server_port=port, allowed_paths=[str(out_dir.resolve())],
                            prevent_thread_lock=not block, quiet=True, show_error=False, footer_links=[])
    return demo, url
